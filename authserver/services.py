"""The wired services of one running instance (built by `create_app`, no Flask here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authserver.clients import JwksCache
from authserver.config import Settings
from authserver.db import Database
from authserver.keys import KeyRing
from authserver.kms import KMS
from authserver.store import Store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: Store
    kms: KMS
    keyring: KeyRing
    jwks_cache: JwksCache
    nonces: Any = None  # authserver.dpop.NonceIssuer (token endpoint)
    #: The gateway's: the same issuer as `nonces` (one nonce policy for our origin, DPOP-33);
    #: a third-party resource server keeps its own (authserver.resource).
    gateway_nonces: Any = None
    policy: Any = None  # authserver.policy.PolicyEngine
    federation: Any = None  # authserver.identity.federation.Federation
    rate_limiter: Any = None  # authserver.ratelimit.RateLimiter
    audit: Any = None  # authserver.audit.AuditLog
    vault: Any = None  # authserver.broker.vault.Vault
    platforms: dict[str, Any] = field(default_factory=dict)  # name -> broker Platform
    #: Derives rotated refresh tokens' successors (refresh_tokens.successor_key); without it
    #: the refresh grant refuses to rotate (server_error).
    refresh_successor_key: bytes | None = None

    def known_resources(self) -> set[str]:
        """RFC 8707 resources our own tokens may be audience-restricted to. A platform's API
        base is not one of them: only the executor exchange names it (for the platform's
        own token), never as the audience of a token we sign."""
        s = self.settings
        return {s.issuer, *s.resources, *(f"{s.issuer}/gateway/{name}" for name in self.platforms),
                *self.registered_resources()}

    def registered_resources(self) -> set[str]:
        """The resources admin-registered resource-server clients serve (their `resources`
        attribute, which DCR cannot set): read from the database on each call, so a resource
        server added with `authserver clients create --resource URI` takes effect on every
        instance without a restart."""
        from sqlalchemy import select

        from authserver.models import Client

        with self.db.session() as session:
            rows = session.scalars(
                select(Client.attributes).where(Client.attributes["resources"].is_not(None)))
            return {r for attrs in rows for r in (attrs or {}).get("resources") or []
                    if isinstance(r, str)}
