"""Audit log: append-only, hash-chained decision records (docs/architecture.md "Audit").

Every exchange, gateway call, approval decision, connection change and deprovisioning writes
one `AuditEvent` before its response is sent. Each record's `hash` is SHA-256 over the
canonical JSON (sorted keys, compact) of its content, its global `seq` and the previous
record's hash, so editing, deleting or reordering records breaks the chain and
`AuditLog.verify` names the first bad record (shard and position).

The log is AUDIT_SHARDS chains (shards 1..N) so appends do not queue behind one lock (issue
18): an append locks one shard's `audit_chain_head` row (an UPDATE first, so the lock is taken
before the head is read: a row lock on PostgreSQL, the database write lock on SQLite), links
to that shard's previous record and holds the lock until the caller's transaction ends, so
append last, then commit. On PostgreSQL it takes the first shard nobody holds, starting at
its thread's own (SKIP LOCKED), and waits only when all N are held. Shard 0 holds anchors:
records that state every shard's (position, head hash), written by `authserver audit anchor`
and by every ANCHOR_EVERY-th append of a shard, so deleting a shard's newest records and
rewinding its head is caught up to the last anchor that covered them (docs/standards.md
AUD-01..03).

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
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from authserver.db import DatabaseUnavailableError
from authserver.models.audit import GLOBAL_SEQ, AuditChainHead, AuditEvent, shard_genesis
from authserver.redaction import REDACTED as REDACTED  # re-exported: one marker
from authserver.redaction import redact_credentials, redact_record_value
from authserver.redaction import redact_mapping as _redact_mapping
from authserver.redaction import redact_text as redact_text

#: Record chains (shards 1..AUDIT_SHARDS); more shards, fewer appenders per lock.
AUDIT_SHARDS = 8
#: The shard of anchors (the top-level chain over the shards' heads).
ANCHOR_SHARD = 0
#: A shard's append at a position that is a multiple of this also writes an anchor.
ANCHOR_EVERY = 1000
#: At most one log line per (event, reason) per this many seconds for unauthenticated refusals.
UNAUTHENTICATED_LOG_INTERVAL = 60.0

log = logging.getLogger(__name__)

#: What a record may say happened; a typo in a caller is a bug, not a new outcome.
OUTCOMES = frozenset({
    "allowed", "denied", "step_up", "pending", "approved", "declined", "expired",
    "rate_limited", "invalid", "error", "revoked", "connected", "disconnected", "anchored",
})
ANCHOR_EVENT = "audit_anchor"

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
class ShardResult:
    """One shard's verification: `first_bad_seq` is a position in that shard's chain;
    `anchored_seq` is how far the newest anchor vouches for it (truncation of records past
    it, with the head rewound too, cannot be told from records never written)."""

    shard: int
    ok: bool
    count: int
    head_seq: int
    first_bad_seq: int | None
    reason: str
    anchored_seq: int = 0


@dataclass(frozen=True)
class VerifyResult:
    """The whole log: `count` records in all shards; the first failure (lowest shard) names
    its `shard` and its position there (`first_bad_seq`); `shards` has every shard's result."""

    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
    shard: int | None = None
    shards: tuple[ShardResult, ...] = ()


@dataclass(frozen=True)
class _Slot:
    """A reserved place: `shard_seq` in `shard` after `prev_hash`, global number `seq`."""

    shard: int
    shard_seq: int
    prev_hash: str
    seq: int


_thread_shard = threading.local()
_shard_counter = itertools.count()


def preferred_shard() -> int:
    """This thread's shard, 1..AUDIT_SHARDS: threads of a process take them in turn (offset
    by the pid so processes start apart), so a thread, which serves one request at a time,
    only meets another thread's appends when there are more threads than shards. Chosen
    again after a fork (a child is a new appender)."""
    pid = os.getpid()
    mine = getattr(_thread_shard, "value", None)
    if mine is None or mine[0] != pid:
        mine = (pid, (pid + next(_shard_counter)) % AUDIT_SHARDS + 1)
        _thread_shard.value = mine
    return int(mine[1])


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


def _row_values(record: AuditRecord, *, seq: int, prev_hash: str, now: int,
                trusted_detail: dict[str, Any] | None = None) -> dict[str, Any]:
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
        "detail": _safe_detail(record.detail) if trusted_detail is None else trusted_detail,
        "prev_hash": prev_hash,
    }
    # Hash exactly what the database will hand back: a JSON round trip normalises tuples,
    # non-string keys and the like, so verify() recomputes the same bytes.
    values = json.loads(canonical_json(values))
    values["hash"] = record_hash(values)
    return values


class AuditLog:
    """Append, verify and read the hash-chained audit log. Stateless; share one instance."""

    def _lock_head(self, session: Session, shard: int | None = None) -> _Slot:
        """Lock a shard's head (`shard`, or one chosen for this thread) and reserve its next
        position and a global `seq`.

        The UPDATE comes first so the lock is taken before anything is read: concurrent
        appenders to that shard in any process queue here until the holder's transaction
        ends. On PostgreSQL, without an explicit shard, the UPDATE takes the first record
        shard nobody holds (FOR UPDATE SKIP LOCKED), starting at this thread's, in the same
        round trip that draws the global `seq`; it waits only if every shard is held.
        """
        postgres = session.get_bind().dialect.name == "postgresql"
        returning: list[Any] = [AuditChainHead.id, AuditChainHead.seq, AuditChainHead.head_hash]
        if postgres:
            returning.append(GLOBAL_SEQ.next_value())
        if shard is None:
            shard = preferred_shard()
            if postgres:
                free = (
                    select(AuditChainHead.id)
                    .where(AuditChainHead.id.between(1, AUDIT_SHARDS))
                    .order_by((AuditChainHead.id - shard + AUDIT_SHARDS) % AUDIT_SHARDS)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                    .scalar_subquery()
                )
                row: Any = session.execute(
                    update(AuditChainHead).where(AuditChainHead.id == free)
                    .values(seq=AuditChainHead.seq + 1).returning(*returning)
                    .execution_options(synchronize_session=False)
                ).one_or_none()
                if row is not None:
                    return _Slot(int(row[0]), int(row[1]), str(row[2]), int(row[3]))
        bump = (
            update(AuditChainHead)
            .where(AuditChainHead.id == shard)
            .values(seq=AuditChainHead.seq + 1)
            .returning(*returning)
            .execution_options(synchronize_session=False)
        )
        row = session.execute(bump).one_or_none()
        if row is None:
            # A database created without the migration's head rows: add every missing one
            # (so later appends spread over all shards). A concurrent creator makes our
            # INSERT fail; then its rows exist: lock ours.
            try:
                with session.begin_nested():
                    present = set(session.execute(select(AuditChainHead.id)).scalars())
                    session.add_all(AuditChainHead(id=i, seq=0, head_hash=shard_genesis(i))
                                    for i in {ANCHOR_SHARD, shard, *range(1, AUDIT_SHARDS + 1)}
                                    - present)
                    session.flush()
            except IntegrityError:
                pass
            row = session.execute(bump).one()
        seq = int(row[3]) if postgres else self._next_seq(session, postgres=False)
        return _Slot(int(row[0]), int(row[1]), str(row[2]), seq)

    @staticmethod
    def _next_seq(session: Session, postgres: bool) -> int:
        """The next global `seq`: the sequence on PostgreSQL (no lock); on SQLite max + 1,
        safe because the head UPDATE already holds the database's single write lock."""
        if postgres:
            return int(session.execute(select(GLOBAL_SEQ.next_value())).scalar_one())
        return int(session.execute(
            select(func.coalesce(func.max(AuditEvent.seq), 0) + 1)).scalar_one())

    def _write(self, session: Session, slot: _Slot, values: dict[str, Any]) -> AuditEvent:
        row = AuditEvent(**values, shard=slot.shard, shard_seq=slot.shard_seq)
        session.add(row)
        session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == slot.shard)
            .values(head_hash=values["hash"])
            .execution_options(synchronize_session=False)
        )
        session.flush()
        return row

    def append(self, session: Session, record: AuditRecord, *, now: int) -> AuditEvent:
        """Append `record` as the next link of a shard's chain, in the caller's transaction.

        Every ANCHOR_EVERY-th record of a shard also writes an anchor in the same
        transaction. Raises ValueError for an unknown outcome (a caller bug); database
        errors propagate (the caller's session turns them into 503 and nothing is issued).
        """
        slot = self._lock_head(session)
        values = _row_values(record, seq=slot.seq, prev_hash=slot.prev_hash, now=now)
        row = self._write(session, slot, values)
        if slot.shard_seq % ANCHOR_EVERY == 0:
            self.anchor(session, now=now)
        return row

    def anchor(self, session: Session, *, now: int) -> AuditEvent:
        """Append to shard 0 a record of every shard's (position, head hash), in the
        caller's transaction (`authserver audit anchor` commits it).

        Heads are read, not locked: each is a committed state (or this transaction's own),
        whose records are all committed with it. Shard 0's lock is always taken last (an
        append holding its shard's lock may take it; an anchor takes no other), so anchors
        cannot deadlock with appends.
        """
        slot = self._lock_head(session, ANCHOR_SHARD)
        heads = session.execute(
            select(AuditChainHead.id, AuditChainHead.seq, AuditChainHead.head_hash)
            .where(AuditChainHead.id != ANCHOR_SHARD).order_by(AuditChainHead.id)
        ).all()
        shards = {str(i): {"seq": int(seq), "hash": str(h)} for i, seq, h in heads}
        values = _row_values(AuditRecord(event=ANCHOR_EVENT, outcome="anchored"),
                             seq=slot.seq, prev_hash=slot.prev_hash, now=now,
                             trusted_detail={"shards": shards})
        return self._write(session, slot, values)

    def append_refusal(self, session: Session, record: AuditRecord, *, now: int) -> None:
        """The one path of a refusal's record: the request's unit of work on `session` is
        abandoned (rolled back: nothing the refused request wrote persists, and the locks it
        took are let go, which the record's transaction could otherwise wait on: a row lock on
        PostgreSQL, the single writer on SQLite), then the record alone is appended and
        committed at once, in a transaction of its own on the same connection. Whatever must
        outlive a refusal besides its record (a pending approval) is committed by its own
        unit before (authserver.approvals.request_approval).

        A database failure raises DatabaseUnavailableError (503): the refusal then goes
        unrecorded, and the client sees a retryable error rather than the refusal.
        """
        session.rollback()
        try:
            self.append(session, record, now=now)
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise DatabaseUnavailableError(debug=f"database: {type(e).__name__}") from e
        except BaseException:
            session.rollback()
            raise

    def verify(self, session: Session) -> VerifyResult:
        """Walk every shard's chain from position 1 and check it against the anchors; the
        result names the first record that does not hold, and has every shard's result.

        reason: "ok", "missing_record" (a gap: first_bad_seq is the missing position),
        "hash_mismatch" (a record's content was changed), "broken_link" (prev_hash is not
        the previous record's hash), "truncated" (the head, or an anchor, is ahead of the
        last record), "head_mismatch" (the head's hash is not the last record's, or a record
        lies past a head that did not move) or "anchor_mismatch" (an anchor states another
        hash for that position).

        Safe while appends run: all heads are read first, in one statement, and only the
        records they cover are walked. A record commits with its head move, so once a head
        says N, positions 1..N are committed; an anchor older than the heads read states
        heads no newer than them.
        """
        heads = self._heads(session)
        anchor_result, claims = self._verify_shard(
            session, ANCHOR_SHARD, heads.get(ANCHOR_SHARD, (0, shard_genesis(ANCHOR_SHARD))), {})
        stored = session.execute(select(AuditEvent.shard).distinct()).scalars()
        shards = sorted((set(heads) | set(stored) | set(claims)) - {ANCHOR_SHARD})
        results = [anchor_result] + [
            self._verify_shard(session, shard, heads.get(shard, (0, shard_genesis(shard))),
                               claims.get(shard, {}))[0]
            for shard in shards
        ]
        total = sum(r.count for r in results)
        for r in results:
            if not r.ok:
                return VerifyResult(False, total, r.first_bad_seq, r.reason, r.shard,
                                    tuple(results))
        return VerifyResult(True, total, None, "ok", None, tuple(results))

    def _verify_shard(self, session: Session, shard: int, head: tuple[int, str],
                      claims: Mapping[int, str]
                      ) -> tuple[ShardResult, dict[int, dict[int, str]]]:
        """One shard's chain, and the (shard -> position -> hash) its anchors state.

        `claims` are the anchors' statements about this shard: each must match the record
        at its position; one past the last record means the shard lost its tail.
        """
        head_seq, head_hash = head
        anchored = max(claims, default=0)
        found: dict[int, dict[int, str]] = {}
        expected, prev_hash, count = 1, shard_genesis(shard), 0

        def result(ok: bool, bad: int | None, reason: str) -> ShardResult:
            return ShardResult(shard, ok, count, head_seq, bad, reason, anchored)

        rows = session.execute(
            select(AuditEvent)
            .where(AuditEvent.shard == shard, AuditEvent.shard_seq <= head_seq)
            .order_by(AuditEvent.shard_seq)
            .execution_options(yield_per=500)
        ).scalars()
        for row in rows:
            values = {name: getattr(row, name) for name in _HASHED_COLUMNS}
            if row.shard_seq != expected:
                return result(False, expected, "missing_record"), found
            if record_hash(values) != row.hash:
                return result(False, row.shard_seq, "hash_mismatch"), found
            if row.prev_hash != prev_hash:
                return result(False, row.shard_seq, "broken_link"), found
            claimed = claims.get(row.shard_seq)
            if claimed is not None and claimed != row.hash:
                return result(False, row.shard_seq, "anchor_mismatch"), found
            if shard == ANCHOR_SHARD and row.event == ANCHOR_EVENT:
                for name, state in dict(row.detail.get("shards", {})).items():
                    found.setdefault(int(name), {})[int(state["seq"])] = str(state["hash"])
            count += 1
            prev_hash = row.hash
            expected += 1
        if head_seq > count:
            return result(False, count + 1, "truncated"), found
        beyond = session.execute(
            select(func.min(AuditEvent.shard_seq))
            .where(AuditEvent.shard == shard, AuditEvent.shard_seq > head_seq)
        ).scalar_one_or_none()
        # A record past the head is a concurrent append only if the head has moved to it.
        if beyond is not None and self._heads(session, shard).get(shard, (0, ""))[0] < beyond:
            return result(False, head_seq + 1, "head_mismatch"), found
        if head_hash != prev_hash:
            return result(False, count, "head_mismatch"), found
        if anchored > count:
            # The head was rewound with the records: only an anchor still remembers them.
            return result(False, count + 1, "truncated"), found
        return result(True, None, "ok"), found

    @staticmethod
    def _heads(session: Session, shard: int | None = None) -> dict[int, tuple[int, str]]:
        """Every shard's (last position, head hash), or one shard's, in one statement."""
        query = select(AuditChainHead.id, AuditChainHead.seq, AuditChainHead.head_hash)
        if shard is not None:
            query = query.where(AuditChainHead.id == shard)
        return {int(i): (int(seq), str(h)) for i, seq, h in session.execute(query).all()}

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
    """An event as plain JSON-ready data (CLI `audit tail`, the admin API, the demo), with
    its place in its shard's chain (`shard`, `shard_seq`)."""
    return {name: getattr(event, name)
            for name in (*_HASHED_COLUMNS, "hash", "shard", "shard_seq")}
