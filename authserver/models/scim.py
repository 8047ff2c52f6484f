"""SCIM 2.0 (RFC 7643 §3, §4.1) resources an IdP provisioned: one row per (IdP, user).

The person is the `users` row (`iss` + `sub`, as sign-in identifies them); this row is the
IdP's view of it: the SCIM `id` we assigned, `userName` (case-insensitive, unique per IdP,
RFC 7643 §4.1.1), `externalId` and `displayName`.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base


class ScimUser(Base):
    __tablename__ = "scim_users"
    __table_args__ = (
        UniqueConstraint("idp", "user_name_key", name="uq_scim_users_user_name"),
        UniqueConstraint("idp", "user_id", name="uq_scim_users_user"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idp: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    user_name: Mapped[str] = mapped_column(String(255))
    #: `user_name` case-folded: SCIM compares userName case-insensitively.
    user_name_key: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ScimGroup(Base):
    """A SCIM group (RFC 7643 §4.2) an IdP provisioned; `displayName` unique per IdP
    (case-insensitive, like userName). Its members' `users.groups` carry the name."""

    __tablename__ = "scim_groups"
    __table_args__ = (
        UniqueConstraint("idp", "display_name_key", name="uq_scim_groups_display_name"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idp: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(255))
    display_name_key: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ScimGroupMember(Base):
    """One member (a SCIM user of the same IdP) of one SCIM group."""

    __tablename__ = "scim_group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("scim_groups.id", ondelete="CASCADE"), primary_key=True)
    scim_user_id: Mapped[str] = mapped_column(
        ForeignKey("scim_users.id", ondelete="CASCADE"), primary_key=True)
