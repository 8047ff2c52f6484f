"""Audit events: an append-only, hash-chained log of every decision (see authserver.audit)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, Sequence, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base

#: `prev_hash` of shard 1's first record, and its head's hash while it is empty. Shard 1 is
#: the chain every record went to before the log was sharded (migration 0011), so it keeps it.
GENESIS_HASH = "0" * 64
#: PostgreSQL sequence that numbers records globally (`seq`) without a lock (SQLite: max + 1
#: under its single writer lock).
GLOBAL_SEQ = Sequence("audit_event_seq")


def shard_genesis(shard: int) -> str:
    """The `prev_hash` of a shard's first record: shard 1 keeps GENESIS_HASH, every other
    shard has its own, so a record cannot be moved to the start of another shard's chain."""
    if shard == 1:
        return GENESIS_HASH
    return hashlib.sha256(f"authserver-audit-shard:{shard}".encode("ascii")).hexdigest()


class AuditEvent(Base):
    """One audit record. `hash` = SHA-256 over the canonical JSON of its content, `seq` and
    `prev_hash` (authserver.audit._HASHED_COLUMNS).

    `seq` is unique and orders records globally (activity pages, tail); it may have gaps (a
    rolled-back append). The chain is per shard: `shard_seq` is the record's position in
    shard `shard`'s chain (1, 2, … with no gaps) and `prev_hash` is the hash of the record
    before it there (shard_genesis for the first).

    `user_id` and `agent_id` are plain strings, not foreign keys: the log outlives users and
    records callers that never resolved to one. No column ever holds a token value.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_user_seq", "user_id", "seq"),
        Index("ix_audit_events_correlation", "correlation_id"),
        UniqueConstraint("shard", "shard_seq", name="uq_audit_events_shard_seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, GLOBAL_SEQ, primary_key=True,
                                     autoincrement=False)
    shard: Mapped[int] = mapped_column(Integer)
    shard_seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    actor_chain: Mapped[list[str]] = mapped_column(default=list)
    platform: Mapped[str | None] = mapped_column(String(64))
    intent: Mapped[dict[str, Any] | None] = mapped_column()
    intent_hash: Mapped[str | None] = mapped_column(String(64))
    within_mandate: Mapped[bool | None] = mapped_column(Boolean)
    policy_ids: Mapped[list[str]] = mapped_column(default=list)
    approval_id: Mapped[str | None] = mapped_column(String(64))
    token_jti: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """One row per shard (`id` = shard: 0 for anchors, 1..AUDIT_SHARDS for records); an
    append locks its shard's row, which serialises that shard's writers across processes.

    `seq` and `head_hash` are the shard's last `shard_seq` and `hash`, so deleting a shard's
    newest records (truncation) is detected too. The migrations insert (shard, 0, genesis);
    `AuditLog.append` creates a missing row itself.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
