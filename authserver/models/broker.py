"""Downstream OAuth connections held by the credential broker (one per user and platform).

Tokens are stored only as envelopes from `authserver.broker.vault` (AES-256-GCM, associated
data binding each ciphertext to its user, platform and token kind): a dump of this table holds
no usable credential, and a ciphertext copied to another row does not decrypt.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base

CONNECTION_ACTIVE = "active"
#: The platform refused our refresh token (`invalid_grant`): only the user can fix it, by
#: connecting again. No refresh is attempted in this state (no retry storm).
CONNECTION_NEEDS_RECONNECT = "needs_reconnect"
CONNECTION_REVOKED = "revoked"
CONNECTION_STATUSES = (CONNECTION_ACTIVE, CONNECTION_NEEDS_RECONNECT, CONNECTION_REVOKED)


class Connection(Base):
    """A user's grant at one platform.

    `generation` is the fencing token of the last writer (connect or refresh, both under the
    per-(user, platform) lock): a writer whose lock expired cannot overwrite newer tokens.
    """

    __tablename__ = "connections"
    __table_args__ = (
        UniqueConstraint("user_id", "platform", name="uq_connections_user_platform"),
        Index("ix_connections_platform", "platform"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=CONNECTION_ACTIVE)
    access_token_ciphertext: Mapped[str] = mapped_column(Text)
    refresh_token_ciphertext: Mapped[str | None] = mapped_column(Text)
    #: NULL when the platform's tokens do not expire (and the profile has no default lifetime).
    access_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    #: When the current access token was obtained (connect or refresh): with
    #: `access_expires_at` it gives the token's own lifetime, which bounds the refresh margin.
    #: NULL only for rows written before this column existed (then `updated_at` stands in).
    access_obtained_at: Mapped[int | None] = mapped_column(BigInteger)
    #: The API base for this grant when the platform returns or lets us discover one
    #: (e.g. Salesforce `instance_url`, Atlassian cloud id); NULL → the platform's configured one.
    api_base_url: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text, default="")
    #: Who the user is at the platform, as the platform reported it at connect time (an
    #: e-mail, a workspace name; `profiles.base.account_label_from`); NULL = not reported.
    #: A label for the user's connections page, never a credential.
    account_label: Mapped[str | None] = mapped_column(Text)
    #: The sites the grant covers, as a JSON list of {"id", "name", "url"} (Atlassian's
    #: accessible-resources); NULL for platforms without sites. The gateway refuses a site
    #: not listed here.
    sites: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
