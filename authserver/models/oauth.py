"""Clients, users, grants, codes, refresh tokens and signing keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base


class Client(Base):
    """An OAuth client (RFC 7591 metadata). `secret_hash` is SHA-256 of the secret, or NULL."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40))
    client_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Admin-set attributes, never self-declared at registration: `trusted_edge`, `executor`,
    #: `allowed_platforms`, `allowed_actions`, `dpop_nonce`, `legacy_token_endpoint_aud`.
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    client_id_issued_at: Mapped[int] = mapped_column(BigInteger)

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.client_metadata.get("redirect_uris") or [])

    @property
    def grant_types(self) -> list[str]:
        return list(self.client_metadata.get("grant_types") or ["authorization_code"])

    @property
    def dpop_bound_access_tokens(self) -> bool:
        return bool(self.client_metadata.get("dpop_bound_access_tokens", False))

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


class User(Base):
    """A person. `id` is ours, stable and tenant-qualified; never the e-mail address."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("idp_issuer", "idp_subject", name="uq_users_idp"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(255), default="default")
    idp_issuer: Mapped[str] = mapped_column(String(512))
    idp_subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    groups: Mapped[list[str]] = mapped_column(default=list)
    roles: Mapped[list[str]] = mapped_column(default=list)
    #: Only for the minimal local login (development, demo); NULL for federated users.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Every token or assertion issued to this user before this time is dead (deprovisioning).
    tokens_valid_after: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Grant(Base):
    """One authorization (a code redemption): the family of its refresh tokens and ATs."""

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text, default="")
    resources: Mapped[list[str]] = mapped_column(default=list)
    authorization_details: Mapped[list[Any]] = mapped_column(default=list)
    #: RFC 9449 §5: public clients' refresh tokens are bound to this key thumbprint.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class AuthorizationCode(Base):
    """A code, stored as its hash. `used_at` is kept so that reuse can revoke the grant
    (RFC 6749 §4.1.2)."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text, default="")
    resources: Mapped[list[str]] = mapped_column(default=list)
    authorization_details: Mapped[list[Any]] = mapped_column(default=list)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    nonce: Mapped[str | None] = mapped_column(String(255))
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)
    grant_id: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    """Our refresh token, stored as its SHA-256 hash; rotated on every use (RFC 9700 §4.14.2)."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_grant", "grant_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"))
    issued_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    rotated_at: Mapped[int | None] = mapped_column(BigInteger)
    #: Set by the rotation: the hash of the successor it issued (the successor itself is
    #: derived again from this token on a retry, never stored) and the thumbprint of the DPoP
    #: key that asked for it (NULL: none). See refresh_tokens.retry_successor.
    successor_hash: Mapped[str | None] = mapped_column(String(64))
    rotated_jkt: Mapped[str | None] = mapped_column(String(64))


class RevokedToken(Base):
    """A revoked access token's `jti`, kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class SigningKey(Base):
    """A signing key. The private JWK is envelope-encrypted; the public JWK is published."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]] = mapped_column()
    private_jwk_ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    #: Signing stops at `retired_at`; the key stays published until `expires_at`.
    retired_at: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)


class KeyCheck(Base):
    """A check value of a deployment-wide secret, never the secret: HMAC-SHA256 of a fixed
    label. Written by the first instance to start; an instance whose secret differs refuses
    to start (its sessions and DPoP nonces would fail at every other instance)."""

    __tablename__ = "key_checks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)


class AgentRevocation(Base):
    """A user withdrew an agent: every token the agent holds for this user, issued at or
    before `revoked_before`, is dead (the per-(user, agent) revocation epoch)."""

    __tablename__ = "agent_revocations"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    revoked_before: Mapped[int] = mapped_column(BigInteger)
