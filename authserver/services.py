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
    from authserver.client_cache import RegistryCache, Resources, ResourceSnapshot
    from authserver.dpop import NonceIssuer
    from authserver.identity.federation import Federation
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
    registry: RegistryCache = field(init=False, repr=False)

    def require_federation(self) -> Federation:
        """The configured IdPs; `invalid_request` when there are none (fail closed: a request
        that needs an IdP cannot go on without one)."""
        if self.federation is None:
            raise InvalidRequestError("No identity provider is configured",
                                      debug="no idp configured")
        return self.federation

    def __post_init__(self) -> None:
        from authserver.client_cache import RegistryCache, watch

        #: Clients and registered resource servers, cached while the shared generation holds
        #: (authserver.client_cache); every write through `db` renews it.
        self.registry = RegistryCache(lambda: self.store)
        watch(self.db.sessionmaker, self.registry)

    def known_resources(self) -> set[str]:
        """RFC 8707 resources our own tokens may be audience-restricted to. A platform's API
        base is not one of them: only the executor exchange names it (for the platform's
        own token), never as the audience of a token we sign."""
        s = self.settings
        registered = self._resources()
        return {s.issuer, *s.resources, *(f"{s.issuer}/gateway/{name}" for name in self.platforms),
                *registered.served, *registered.servers}

    def resource_servers(self, uris: Iterable[str] | None = None) -> dict[str, ResourceSnapshot]:
        """The admin-registered resource servers (`authserver resources add`), by URI (all of
        them, or those among `uris`, compared normalised). Cached while the shared generation
        holds (authserver.client_cache), so an added or removed resource takes effect on
        every instance at once."""
        from authserver.urls import normalize_resource

        servers = self._resources().servers
        if uris is None:
            return dict(servers)
        wanted = {n for n in (normalize_resource(u) for u in uris) if n is not None}
        return {uri: servers[uri] for uri in sorted(wanted) if uri in servers}

    def registered_resources(self) -> set[str]:
        """The resources admin-registered resource-server clients serve (their `resources`
        attribute, which DCR cannot set), cached as `resource_servers` is: a resource server
        added with `authserver clients create --resource URI` takes effect on every instance
        without a restart."""
        return set(self._resources().served)

    def _resources(self) -> Resources:
        from authserver.client_cache import load_resources

        def load() -> Resources:
            with self.db.session() as session:
                return load_resources(session)

        return self.registry.resources(load, now=int(self.outbound.clock()))
