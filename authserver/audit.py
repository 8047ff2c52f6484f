"""Audit log: append-only, hash-chained decision records (docs/architecture.md "Audit").

Every exchange, gateway call, approval decision, connection change and deprovisioning writes
one `AuditEvent` before its response is sent. Each record's `hash` is SHA-256 over the
canonical JSON (sorted keys, compact) of all its other columns, including `seq` and the
previous record's hash, so editing, deleting or reordering records breaks the chain and
`AuditLog.verify` names the first bad `seq`.

Appends are serialised by locking the single `audit_chain_head` row (an UPDATE first, so the
lock is taken before the head is read: a row lock on PostgreSQL, the database write lock on
SQLite). The lock is held until the caller's transaction ends, so append last, then commit.

No token value ever enters a record: `redact` strips JWT-shaped and long opaque strings, and
values under credential-looking keys, from `detail` and the intent's free text.

Only decisions about real principals are recorded: a verified capability token, an
authenticated client. A refusal before anyone is authenticated (a gateway request without a
valid token, a failed client authentication) would let an anonymous client take the chain's
lock at will and throttle every exchange (issue 13, item 8), so `refused_unauthenticated`
counts it (`authserver_unauthenticated_rejections_total`) and logs it at most once per
`UNAUTHENTICATED_LOG_INTERVAL` per event and reason and process, with how many it stands for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.models.audit import GENESIS_HASH, AuditChainHead, AuditEvent
from authserver.redaction import REDACTED as REDACTED  # re-exported: one marker
from authserver.redaction import redact_credentials, redact_record_value
from authserver.redaction import redact_mapping as _redact_mapping
from authserver.redaction import redact_text as redact_text

HEAD_ID = 1
#: At most one log line per (event, reason) per this many seconds for unauthenticated refusals.
UNAUTHENTICATED_LOG_INTERVAL = 60.0

log = logging.getLogger(__name__)

#: What a record may say happened; a typo in a caller is a bug, not a new outcome.
OUTCOMES = frozenset({
    "allowed", "denied", "step_up", "pending", "approved", "declined", "expired",
    "rate_limited", "invalid", "error", "revoked", "connected", "disconnected",
})

# Bounds keep one record small and the triggering request text from flooding the log.
MAX_REQUEST_TEXT = 1024
MAX_DETAIL_STRING = 512
MAX_DETAIL_BYTES = 4096
MAX_TAIL = 1000
#: Free strings are cut to their column's width rather than failing the audit write.
_COLUMN_WIDTH = {
    "event": 32, "outcome": 32, "reason": 64, "correlation_id": 64, "user_id": 255,
    "agent_id": 255, "platform": 64, "intent_hash": 64, "approval_id": 64, "token_jti": 64,
    "client_ip": 45,
}

def redact_jwts(text: str) -> str:
    """`text` with JWTs, authorization header values and other credential shapes replaced."""
    return redact_credentials(text)


def redact_mapping(value: Mapping[Any, Any], *, max_string: int = MAX_DETAIL_STRING
                   ) -> dict[str, Any]:
    """`redact` for a mapping: values under credential-looking keys are replaced whole."""
    return _redact_mapping(value, max_string=max_string)


def redact(value: Any, *, max_string: int = MAX_DETAIL_STRING) -> Any:
    """A copy of `value` safe to audit (authserver.redaction): defence in depth behind callers
    that never pass tokens. Strips, never rejects; cuts long strings to `max_string`."""
    return redact_record_value(value, max_string=max_string)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, ASCII only, no NaN: one byte string per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


@dataclass
class AuditRecord:
    """What a caller knows about one event. Never put a token value in any field."""

    event: str
    outcome: str
    reason: str | None = None
    correlation_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    actor_chain: list[str] = field(default_factory=list)
    platform: str | None = None
    intent: dict[str, Any] | None = None
    intent_hash: str | None = None
    within_mandate: bool | None = None
    policy_ids: list[str] = field(default_factory=list)
    approval_id: str | None = None
    token_jti: str | None = None
    client_ip: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str


_HASHED_COLUMNS = (
    "seq", "created_at", "event", "outcome", "reason", "correlation_id", "user_id", "agent_id",
    "actor_chain", "platform", "intent", "intent_hash", "within_mandate", "policy_ids",
    "approval_id", "token_jti", "client_ip", "detail", "prev_hash",
)


def record_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a record's hashed columns."""
    payload = {name: values[name] for name in _HASHED_COLUMNS}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def _bounded(name: str, value: str | None) -> str | None:
    return None if value is None else str(value)[: _COLUMN_WIDTH[name]]


def _safe_intent(intent: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The intent with its free text (`context`) fully redacted and bounded.

    `action`, `resource` and `count` were validated by the intent parser and are the point of
    the record, so only JWT-shaped strings are stripped from them (record ids can be long).
    """
    if intent is None:
        return None
    safe: dict[str, Any] = {}
    for key, value in intent.items():
        if key == "context" and isinstance(value, Mapping):
            safe[key] = redact_mapping(value, max_string=MAX_REQUEST_TEXT)
        elif isinstance(value, str):
            safe[str(key)] = redact_jwts(value)[:MAX_REQUEST_TEXT]
        else:
            safe[str(key)] = redact(value, max_string=MAX_REQUEST_TEXT)
    return safe


def _safe_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    safe = redact_mapping(detail)
    if len(canonical_json(safe)) > MAX_DETAIL_BYTES:
        return {"truncated": True, "keys": sorted(safe)[:20]}
    return safe


def _row_values(record: AuditRecord, *, seq: int, prev_hash: str, now: int) -> dict[str, Any]:
    if record.outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {record.outcome!r}")
    if not record.event:
        raise ValueError("audit event name is required")
    values: dict[str, Any] = {
        "seq": seq,
        "created_at": int(now),
        "event": _bounded("event", record.event),
        "outcome": record.outcome,
        "reason": _bounded("reason", record.reason),
        "correlation_id": _bounded("correlation_id", record.correlation_id),
        "user_id": _bounded("user_id", record.user_id),
        "agent_id": _bounded("agent_id", record.agent_id),
        "actor_chain": [str(redact(a)) for a in record.actor_chain],
        "platform": _bounded("platform", record.platform),
        "intent": _safe_intent(record.intent),
        "intent_hash": _bounded("intent_hash", record.intent_hash),
        "within_mandate": None if record.within_mandate is None else bool(record.within_mandate),
        "policy_ids": [str(p) for p in record.policy_ids],
        "approval_id": _bounded("approval_id", record.approval_id),
        "token_jti": _bounded("token_jti", record.token_jti),
        "client_ip": _bounded("client_ip", record.client_ip),
        "detail": _safe_detail(record.detail),
        "prev_hash": prev_hash,
    }
    # Hash exactly what the database will hand back: a JSON round trip normalises tuples,
    # non-string keys and the like, so verify() recomputes the same bytes.
    values = json.loads(canonical_json(values))
    values["hash"] = record_hash(values)
    return values


class AuditLog:
    """Append, verify and read the hash-chained audit log. Stateless; share one instance."""

    def _lock_head(self, session: Session) -> tuple[int, str]:
        """Lock the chain head and reserve the next `seq`; returns (seq, previous hash).

        The UPDATE comes first so the lock is taken before anything is read: concurrent
        appenders in any process queue here until the holder's transaction ends.
        """
        # One round trip: the head row stays locked until the caller's transaction ends, so
        # every statement saved here raises the ceiling on appends per second.
        bump = (
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(seq=AuditChainHead.seq + 1)
            .returning(AuditChainHead.seq, AuditChainHead.head_hash)
            .execution_options(synchronize_session=False)
        )
        row = session.execute(bump).one_or_none()
        if row is not None:
            return int(row[0]), str(row[1])
        # First append on a database created without the migration's head row. A concurrent
        # creator makes our INSERT fail; then its row exists and we lock it.
        try:
            with session.begin_nested():
                session.add(AuditChainHead(id=HEAD_ID, seq=1, head_hash=GENESIS_HASH))
                session.flush()
            return 1, GENESIS_HASH
        except IntegrityError:
            seq, head_hash = session.execute(bump).one()
            return int(seq), str(head_hash)

    def append(self, session: Session, record: AuditRecord, *, now: int) -> AuditEvent:
        """Append `record` as the next link of the chain, in the caller's transaction.

        Raises ValueError for an unknown outcome (a caller bug); database errors propagate
        (the caller's session turns them into 503 and nothing is issued).
        """
        seq, prev_hash = self._lock_head(session)
        values = _row_values(record, seq=seq, prev_hash=prev_hash, now=now)
        row = AuditEvent(**values)
        session.add(row)
        session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(head_hash=values["hash"])
            .execution_options(synchronize_session=False)
        )
        session.flush()
        return row

    def verify(self, session: Session) -> VerifyResult:
        """Walk the chain from seq 1; the result names the first record that does not hold.

        reason: "ok", "missing_record" (a gap: first_bad_seq is the missing seq),
        "hash_mismatch" (a record's content was changed), "broken_link" (prev_hash is not
        the previous record's hash), "truncated" (the head is ahead of the last record) or
        "head_mismatch" (the head's hash is not the last record's, or a record lies past a
        head that did not move).

        Safe while appends run: the head is read first and only the records it covers are
        walked. Appends serialise on the head row and a record commits with its head move,
        so once the head says N, records 1..N are all committed.
        """
        head_seq, head_hash = self._head(session)
        expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.seq <= head_seq).order_by(AuditEvent.seq)
            .execution_options(yield_per=500)
        ).scalars()
        for row in rows:
            values = {name: getattr(row, name) for name in _HASHED_COLUMNS}
            if row.seq != expected_seq:
                return VerifyResult(False, count, expected_seq, "missing_record")
            if record_hash(values) != row.hash:
                return VerifyResult(False, count, row.seq, "hash_mismatch")
            if row.prev_hash != prev_hash:
                return VerifyResult(False, count, row.seq, "broken_link")
            count += 1
            prev_hash = row.hash
            expected_seq += 1
        if head_seq > count:
            return VerifyResult(False, count, count + 1, "truncated")
        beyond = session.execute(
            select(func.min(AuditEvent.seq)).where(AuditEvent.seq > head_seq)
        ).scalar_one_or_none()
        # A record past the head is a concurrent append only if the head has moved to it.
        if beyond is not None and self._head(session)[0] < beyond:
            return VerifyResult(False, count, head_seq + 1, "head_mismatch")
        if head_hash != prev_hash:
            return VerifyResult(False, count, count, "head_mismatch")
        return VerifyResult(True, count, None, "ok")

    @staticmethod
    def _head(session: Session) -> tuple[int, str]:
        head = session.execute(
            select(AuditChainHead.seq, AuditChainHead.head_hash).where(
                AuditChainHead.id == HEAD_ID
            )
        ).one_or_none()
        return (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))

    def tail(self, session: Session, n: int = 20) -> list[AuditEvent]:
        """The newest `n` records (1 ≤ n ≤ MAX_TAIL), oldest first, like tail(1)."""
        if not 1 <= n <= MAX_TAIL:
            raise ValueError(f"n must be between 1 and {MAX_TAIL}")
        rows = session.execute(
            select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(n)
        ).scalars().all()
        return list(reversed(rows))


class RateLimitedLog:
    """One WARNING line per key per `interval` seconds (of `clock`, monotonic by default),
    saying how many events it stands for. Per process; the lock is this process's, held for
    a dictionary update, never the database's."""

    def __init__(self, interval: float = UNAUTHENTICATED_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def __call__(self, event: str, reason: str) -> bool:
        """Log this refusal unless one like it was logged within the interval; True if it was
        logged."""
        key = (event, reason)
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            count = self._suppressed.pop(key, 0) + 1
        log.warning("unauthenticated request refused (not audited)",
                    extra={"event": event, "reason": reason, "count": count,
                           "interval_seconds": self.interval})
        return True


_UNAUTHENTICATED_LOG = RateLimitedLog()
UNAUTHENTICATED_EVENTS = frozenset({"gateway_call", "token_exchange", "id_jag"})


def refused_unauthenticated(event: str, reason: str) -> None:
    """Account for a refusal before any principal was authenticated, without an audit record
    (and so without the chain's lock): a metric, and a rate-limited log line."""
    from authserver.observability import UNAUTHENTICATED_REJECTIONS

    event = event if event in UNAUTHENTICATED_EVENTS else "other"  # closed label sets
    reason = _bounded("reason", reason) or "unknown"
    UNAUTHENTICATED_REJECTIONS.labels(event=event, reason=reason).inc()
    _UNAUTHENTICATED_LOG(event, reason)


def event_as_dict(event: AuditEvent) -> dict[str, Any]:
    """An event as plain JSON-ready data (CLI `audit tail`, the admin API, the demo)."""
    return {name: getattr(event, name) for name in (*_HASHED_COLUMNS, "hash")}
