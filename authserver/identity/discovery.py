"""An IdP's discovery document and JWKS, fetched and cached per process (OIDC Discovery §4).

A cache, not shared state: every process may fetch its own copy. Both are fetched by the one
outbound fetcher (authserver.outbound: the SSRF rule, no redirects, a size limit); plain http
and internal addresses only for a loopback-http issuer (development, tests: the configuration
allows such an IdP only with a loopback issuer of our own). The JWKS lives in the one JWK Set
cache (authserver.jwks): an unknown `kid` triggers at most one JWKS refetch per
`JWKS_REFETCH_MIN_INTERVAL`, so a flood of tokens with made-up `kid`s cannot turn us into a
request amplifier against the IdP. A JWKS at another URL (an SSF transmitter's
`ssf_jwks_uri`) gets a cache slot of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from authserver.identity.config import IdPConfig, is_allowed_scheme
from authserver.identity.errors import IdentityError, IdPUnavailableError
from authserver.jwks import JWKS_REFETCH_MIN_INTERVAL, JwksCache, JwksError
from authserver.outbound import FetchResult, Outbound, OutboundError
from authserver.store import Store

log = logging.getLogger(__name__)

#: How long a discovery document is reused before it is fetched again.
DISCOVERY_CACHE_TTL = 3600
#: How long a JWKS is reused. A key the IdP removes stays accepted here at most this long.
JWKS_CACHE_TTL = 600

#: Largest discovery document, JWKS or token response we read from an IdP.
MAX_DOCUMENT_BYTES = 256 * 1024

_VerifyKey = RSAKey | ECKey | OKPKey
_Keys = list[tuple[str | None, _VerifyKey, str | None]]
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class IdPDiscovery:
    """One IdP's discovery document and signing keys. `outbound` makes every request to
    the IdP (here, and the token request of authserver.identity.login).

    The IdP is the operator's own configuration, not a URL a client or a document chose, and
    corporate IdPs often live on an internal network (an on-premises Keycloak or AD FS): the
    fetcher may reach internal addresses for it. Its limits (size, timeout, no redirects)
    still hold, and the issuer itself must be https or loopback http (IdPConfig)."""

    def __init__(self, config: IdPConfig, store: Store, *, outbound: Outbound | None = None
                 ) -> None:
        self.config = config
        self._store = store
        self._outbound = outbound or Outbound(allow_internal=True)
        self._metadata = self._outbound.cache(self._check_metadata, max_bytes=MAX_DOCUMENT_BYTES,
                                              max_entries=1, lifetime=DISCOVERY_CACHE_TTL)
        # Per JWKS URL (the discovery document's; an SSF transmitter's may differ).
        self._jwks: JwksCache[_Keys] = JwksCache(
            self._outbound, parse=self._parse_jwks, kids=lambda keys: (k for k, _, _ in keys),
            error=self._jwks_unavailable, max_bytes=MAX_DOCUMENT_BYTES, lifetime=JWKS_CACHE_TTL,
            refetch_interval=JWKS_REFETCH_MIN_INTERVAL)

    def metadata(self, *, now: int) -> dict[str, Any]:
        """The IdP's discovery document, fetched or reused. Raises IdPUnavailableError."""
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            return dict(self._metadata.get(url, now=now))
        except OutboundError as e:
            raise IdPUnavailableError(f"idp {self.config.name}: GET failed ({e.reason})") from e

    def _check_metadata(self, result: FetchResult) -> dict[str, Any]:
        doc = json_object(result.body, f"idp {self.config.name}: GET", unavailable=True)
        # OIDC Discovery §4.3: the issuer in the document MUST be identical to the one we used.
        if doc.get("issuer") != self.config.issuer:
            raise IdPUnavailableError(f"idp {self.config.name}: discovery issuer mismatch")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not is_allowed_scheme(value):
                raise IdPUnavailableError(f"idp {self.config.name}: bad or missing {name}")
        methods = doc.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise IdPUnavailableError(f"idp {self.config.name}: IdP does not support PKCE S256")
        return doc

    def _signing_keys(self, *, now: int, kid: str | None, jwks_uri: str | None = None
                      ) -> _Keys:
        """The IdP's keys (or those at `jwks_uri`, an SSF transmitter's); refetched when
        stale, or once per interval for an unknown `kid`."""
        uri = jwks_uri or self.metadata(now=now)["jwks_uri"]
        return self._jwks.get(uri, kid=kid, now=now)

    def _jwks_unavailable(self, e: JwksError) -> Exception:
        return IdPUnavailableError(f"idp {self.config.name}: JWKS {e.reason}")

    def _parse_jwks(self, doc: Mapping[str, Any]) -> _Keys:
        keys: _Keys = []
        for raw in doc["keys"]:
            if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # symmetric or malformed entries can never verify an ID token here
            if raw.get("use", "sig") != "sig":
                continue
            ops = raw.get("key_ops")
            if ops is not None and "verify" not in ops:
                continue
            public = {k: v for k, v in raw.items() if k not in _PRIVATE_JWK_MEMBERS}
            try:
                key = JWKRegistry.import_key(public)
            except (JoseError, ValueError, TypeError) as e:
                log.warning("idp %s: skipping unusable JWK (%s)", self.config.name,
                            type(e).__name__)
                continue
            kid = raw.get("kid") if isinstance(raw.get("kid"), str) else None
            alg = raw.get("alg") if isinstance(raw.get("alg"), str) else None
            keys.append((kid, key, alg))  # type: ignore[arg-type]
        return keys

    def verification_key(self, kid: Any, alg: str, *, now: int, jwks_uri: str | None = None
                         ) -> _VerifyKey:
        """The key that must have signed a JWS with this `kid` and `alg` (`alg` already on
        ALLOWED_ALGORITHMS), from the IdP's cached JWKS or the one at `jwks_uri`. Raises
        IdentityError (no such key) or IdPUnavailableError (the JWKS could not be fetched)."""
        return self._key_for(kid, alg, now=now, jwks_uri=jwks_uri)

    def _key_for(self, kid: Any, alg: str, *, now: int, jwks_uri: str | None = None
                 ) -> _VerifyKey:
        if kid is not None and not isinstance(kid, str):
            raise IdentityError("kid is not a string")
        keys = self._signing_keys(now=now, kid=kid, jwks_uri=jwks_uri)
        if kid is None:
            # Without a kid the choice must be unambiguous (OIDC Core §10.1).
            candidates = [k for k in keys if _fits(k, alg)]
            if len(candidates) != 1:
                raise IdentityError("no kid and no single matching key")
            return candidates[0][1]
        for key_kid, key, key_alg in keys:
            if key_kid == kid:
                if key_alg is not None and key_alg != alg:
                    raise IdentityError("alg does not match the key's alg")
                return key
        raise IdentityError(f"unknown kid {kid[:64]!r}")


def _fits(entry: tuple[str | None, _VerifyKey, str | None], alg: str) -> bool:
    _, key, key_alg = entry
    if key_alg is not None:
        return key_alg == alg
    family = {"RS": "RSA", "PS": "RSA", "ES": "EC"}[alg[:2]]
    return key.key_type == family

def json_object(raw: bytes, what: str, *, unavailable: bool) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as e:
        if unavailable:
            raise IdPUnavailableError(f"{what}: not JSON") from e
        raise IdentityError(f"{what}: not JSON") from e
    if not isinstance(doc, dict):
        if unavailable:
            raise IdPUnavailableError(f"{what}: not a JSON object")
        raise IdentityError(f"{what}: not a JSON object")
    return doc
