"""The wired services of one running instance (built by `create_app`, no Flask here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from joserfc.jwk import KeySet

from authserver.config import Settings
from authserver.db import Database
from authserver.errors import InvalidRequestError
from authserver.jwks import JwksCache
from authserver.keys import KeyRing
from authserver.kms import KMS
from authserver.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterable

    from authserver.audit import AuditLog
    from authserver.broker.profiles import Platform
    from authserver.broker.vault import Vault
    from authserver.cimd import CimdResolver
    from authserver.dpop import NonceIssuer
    from authserver.identity.federation import Federation
    from authserver.models import ResourceServer
    from authserver.outbound import Outbound
    from authserver.policy import PolicyEngine
    from authserver.ratelimit import RateLimiter


@dataclass
class Services:
    settings: Settings
    db: Database
    store: Store
    kms: KMS
    keyring: KeyRing
    jwks_cache: JwksCache[KeySet]  # clients' jwks_uri (private_key_jwt)
    nonces: NonceIssuer  # the token endpoint's
    #: The gateway's: the same issuer as `nonces` (one nonce policy for our origin, DPOP-33);
    #: a third-party resource server keeps its own (authserver.resource).
    gateway_nonces: NonceIssuer
    policy: PolicyEngine
    rate_limiter: RateLimiter
    audit: AuditLog
    vault: Vault
    outbound: Outbound  # every fetch from a client's URL (authserver.outbound)
    cimd: CimdResolver  # URL client ids (client metadata documents)
    #: The configured IdPs, or None when there are none (local accounts only). Code that may
    #: run without an IdP checks for None; code that only runs after such a check (a spend
    #: after a verify) calls `require_federation()`.
    federation: Federation | None = None
    platforms: dict[str, Platform] = field(default_factory=dict)
    #: Derives rotated refresh tokens' successors (refresh_tokens.successor_key); without it
    #: the refresh grant refuses to rotate (server_error).
    refresh_successor_key: bytes | None = None

    def require_federation(self) -> Federation:
        """The configured IdPs; `invalid_request` when there are none (fail closed: a request
        that needs an IdP cannot go on without one)."""
        if self.federation is None:
            raise InvalidRequestError("No identity provider is configured",
                                      debug="no idp configured")
        return self.federation

    def known_resources(self) -> set[str]:
        """RFC 8707 resources our own tokens may be audience-restricted to. A platform's API
        base is not one of them: only the executor exchange names it (for the platform's
        own token), never as the audience of a token we sign."""
        s = self.settings
        return {s.issuer, *s.resources, *(f"{s.issuer}/gateway/{name}" for name in self.platforms),
                *self.registered_resources(), *self.resource_servers()}

    def resource_servers(self, uris: Iterable[str] | None = None) -> dict[str, ResourceServer]:
        """The admin-registered resource servers (`authserver resources add`), by URI (all of
        them, or those among `uris`, compared normalised): read from the database on each
        call, never cached, so an added or removed resource takes effect on every instance at
        once."""
        from sqlalchemy import select

        from authserver.models import ResourceServer
        from authserver.urls import normalize_resource

        query = select(ResourceServer)
        if uris is not None:
            wanted = {n for n in (normalize_resource(u) for u in uris) if n is not None}
            if not wanted:
                return {}
            query = query.where(ResourceServer.uri.in_(sorted(wanted)))
        with self.db.session() as session:
            rows = list(session.scalars(query))
            session.expunge_all()
        return {row.uri: row for row in rows}

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
