"""What one audit record holds (authserver.audit is the chain that appends them).

`AuditRecord` is what a caller knows about an event; `_row_values` turns it into the stored,
hashed row: bounded columns, `redact`ed free text and `detail` (no token value ever enters a
record), canonical JSON and `record_hash` over the hashed columns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authserver.models.audit import AuditEvent
from authserver.redaction import REDACTED as REDACTED  # re-exported: one marker
from authserver.redaction import redact_credentials, redact_record_value
from authserver.redaction import redact_mapping as _redact_mapping
from authserver.redaction import redact_text as redact_text

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
    # non-string keys and the like, so verify() recomputes the same bytes. Canonical JSON is a
    # fixed point of that round trip, and `values` holds exactly the hashed columns, so the one
    # text is both what is parsed back and what `record_hash` would hash.
    text = canonical_json(values)
    values = json.loads(text)
    values["hash"] = hashlib.sha256(text.encode("ascii")).hexdigest()
    return values


def event_as_dict(event: AuditEvent) -> dict[str, Any]:
    """An event as plain JSON-ready data (CLI `audit tail`, the admin API, the demo), with
    its place in its shard's chain (`shard`, `shard_seq`)."""
    return {name: getattr(event, name)
            for name in (*_HASHED_COLUMNS, "hash", "shard", "shard_seq")}
