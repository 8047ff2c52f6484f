"""OpenID Connect Core 1.0 §3.1 relying party: sign people in through a corporate IdP.

- Code flow: https://openid.net/specs/openid-connect-core-1_0.html#CodeFlowAuth
- ID token validation: https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
- Discovery: https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig
- PKCE (RFC 7636 §4), `iss` in the authorization response (RFC 9207 §2.4)
- Trusted issuers: an IdP token as an RFC 8693 `subject_token`; unacceptable → `invalid_request`
  (RFC 8693 §2.2.2).
- Shared Signals: a SET's signature is checked with a key from the same JWKS cache
  (`OIDCProvider.verification_key`; an `ssf_jwks_uri` gets a cache slot of its own); the
  receiver's rules are authserver/ssf.py.
- Cross-App Access: an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3, §4.4.1) from
  an IdP configured `id_jag = true`, verified in `id_tokens`; the jwt-bearer grant that takes it is
  authserver/grants/jwt_bearer.py.

This module is the registry of configured IdPs (`Federation`) and keeps the package's public
names importable from here. The parts: `config` (IdP settings), `discovery` (discovery document
and JWKS caching), `id_tokens` (ID-token, subject-token and ID-JAG checks), `login` (the RP
code flow) and `errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from authserver.identity.config import DEFAULT_CLAIM_MAP, DEFAULT_SCOPES, IdPConfig
from authserver.identity.discovery import (
    DISCOVERY_CACHE_TTL,
    JWKS_CACHE_TTL,
    JWKS_REFETCH_MIN_INTERVAL,
    MAX_DOCUMENT_BYTES,
)
from authserver.identity.errors import IdentityError, IdPUnavailableError
from authserver.identity.id_tokens import (
    ALLOWED_ALGORITHMS,
    ID_JAG_KEY,
    ID_JAG_TYP,
    ID_TOKEN_LEEWAY,
    ID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    MAX_ID_JAG_CLAIM,
    MAX_ID_JAG_LIFETIME,
    MAX_TOKEN_LENGTH,
    SUBJECT_TOKEN_KEY,
    TrustedIssuerTokens,
    normalise_typ,
    parse_unverified,
)
from authserver.identity.login import NONCE_REPLAY_MIN_TTL, LoginStart, OIDCProvider
from authserver.outbound import Outbound
from authserver.store import Store

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_CLAIM_MAP",
    "DEFAULT_SCOPES",
    "DISCOVERY_CACHE_TTL",
    "ID_JAG_KEY",
    "ID_JAG_TYP",
    "ID_TOKEN_LEEWAY",
    "ID_TOKEN_TYPE",
    "JWKS_CACHE_TTL",
    "JWKS_REFETCH_MIN_INTERVAL",
    "JWT_TOKEN_TYPE",
    "MAX_DOCUMENT_BYTES",
    "MAX_ID_JAG_CLAIM",
    "MAX_ID_JAG_LIFETIME",
    "MAX_TOKEN_LENGTH",
    "NONCE_REPLAY_MIN_TTL",
    "SUBJECT_TOKEN_KEY",
    "Federation",
    "IdPConfig",
    "IdPUnavailableError",
    "IdentityError",
    "LoginStart",
    "OIDCProvider",
    "normalise_typ",
    "parse_unverified",
]


class Federation(TrustedIssuerTokens):
    """Every configured IdP, by name and by issuer."""

    def __init__(
        self, configs: Iterable[IdPConfig], store: Store, *, outbound: Outbound | None = None
    ) -> None:
        self._by_name: dict[str, OIDCProvider] = {}
        self._by_issuer: dict[str, OIDCProvider] = {}
        self._store = store
        for config in configs:
            if config.name in self._by_name:
                raise ValueError(f"duplicate IdP name {config.name}")
            if config.issuer in self._by_issuer:
                raise ValueError(f"duplicate IdP issuer {config.issuer}")
            provider = OIDCProvider(config, store, outbound=outbound)
            self._by_name[config.name] = provider
            self._by_issuer[config.issuer] = provider

    @classmethod
    def from_settings(
        cls, idps: Mapping[str, Mapping[str, Any]], store: Store, *,
        outbound: Outbound | None = None,
    ) -> Federation:
        return cls([IdPConfig.from_settings(n, m) for n, m in idps.items()], store,
                   outbound=outbound)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> OIDCProvider:
        """The IdP called `name`; KeyError if none is configured."""
        return self._by_name[name]

    def by_issuer(self, iss: str) -> OIDCProvider | None:
        return self._by_issuer.get(iss)

    def configs(self) -> list[IdPConfig]:
        return [p.config for p in self._by_name.values()]
