"""Audit events: an append-only, hash-chained log of every decision (see authserver.audit)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base

#: `prev_hash` of the first record, and the head's hash while the log is empty.
GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    """One audit record. `hash` = SHA-256 over the canonical JSON of every other column.

    `user_id` and `agent_id` are plain strings, not foreign keys: the log outlives users and
    records callers that never resolved to one. No column ever holds a token value.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_user_seq", "user_id", "seq"),
        Index("ix_audit_events_correlation", "correlation_id"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
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
    """The single row (`id` = 1) every append locks: it serialises writers across processes.

    It also records the last `seq` and `hash`, so deleting the newest records (truncation)
    is detected too. The migration inserts (1, 0, GENESIS_HASH); `AuditLog.append` creates
    the row itself if it is missing.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
