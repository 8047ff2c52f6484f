"""Step-up approvals (docs/standards.md A3): one pending confirmation per risky intent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base


class Approval(Base):
    """A request for the user's confirmation, bound to (user, agent, platform, intent hash).

    `status`: pending → approved | declined; approved → consumed (single use). Expiry is not a
    status: it is `expires_at` compared with the caller's `now`.
    """

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_user_status", "user_id", "status"),)

    #: Unguessable handle (secrets.token_urlsafe(32)); it grants nothing by itself, since
    #: redemption repeats the full exchange (same user assertion, agent key and intent).
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(255))
    platform: Mapped[str] = mapped_column(String(64))
    intent: Mapped[dict[str, Any]] = mapped_column()
    intent_hash: Mapped[str] = mapped_column(String(64))
    #: The user's mandate (its `authorization_details` entry) from the assertion the request
    #: came with: signed by the edge, so the page can show the user's own request. Null when
    #: the assertion carried none.
    mandate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[int | None] = mapped_column(BigInteger)
    consumed_at: Mapped[int | None] = mapped_column(BigInteger)
