"""An IdP's discovery document and JWKS, fetched and cached per process (OIDC Discovery §4).

A cache, not shared state: every process may fetch its own copy. An unknown `kid` triggers at
most one JWKS refetch per `JWKS_REFETCH_MIN_INTERVAL`, so a flood of tokens with made-up
`kid`s cannot turn us into a request amplifier against the IdP. A JWKS at another URL (an SSF
transmitter's `ssf_jwks_uri`) gets a cache slot of its own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from authserver.identity.config import IdPConfig, is_allowed_scheme
from authserver.identity.errors import IdentityError, IdPUnavailableError
from authserver.store import Store

log = logging.getLogger(__name__)

#: How long a discovery document is reused before it is fetched again.
DISCOVERY_CACHE_TTL = 3600
#: How long a JWKS is reused. A key the IdP removes stays accepted here at most this long.
JWKS_CACHE_TTL = 600
#: An unknown `kid` forces a JWKS refetch at most once per this many seconds.
JWKS_REFETCH_MIN_INTERVAL = 30

#: Seconds to wait on the IdP (connect and read).
HTTP_TIMEOUT = 5.0
#: Largest discovery document, JWKS or token response we read from an IdP.
MAX_DOCUMENT_BYTES = 256 * 1024

_VerifyKey = RSAKey | ECKey | OKPKey
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass
class _Cached:
    fetched_at: int
    value: Any


class IdPDiscovery:
    """One IdP's discovery document and signing keys."""

    def __init__(
        self, config: IdPConfig, store: Store, http: requests.Session | None = None
    ) -> None:
        self.config = config
        self._store = store
        self._http = http or requests.Session()
        self._mutex = threading.Lock()
        self._metadata: _Cached | None = None
        # Per JWKS URL (the discovery document's; an SSF transmitter's may differ):
        # value: list[(kid | None, key, alg | None)].
        self._jwks: dict[str, _Cached] = {}
        self._last_forced_refetch: dict[str, int] = {}

    def metadata(self, *, now: int) -> dict[str, Any]:
        """The IdP's discovery document, fetched or reused. Raises IdPUnavailableError."""
        with self._mutex:
            cached = self._metadata
            if cached and 0 <= now - cached.fetched_at < DISCOVERY_CACHE_TTL:
                return dict(cached.value)
            doc = self._fetch_metadata()
            self._metadata = _Cached(now, doc)
            return dict(doc)

    def _fetch_metadata(self) -> dict[str, Any]:
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = self._get_json(url)
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
                      ) -> list[tuple[str | None, _VerifyKey, str | None]]:
        """The IdP's keys (or those at `jwks_uri`, an SSF transmitter's); refetched when
        stale, or once per interval for an unknown `kid`."""
        slot = jwks_uri or ""  # "": the discovery document's jwks_uri
        with self._mutex:
            cached = self._jwks.get(slot)
            fresh = cached is not None and 0 <= now - cached.fetched_at < JWKS_CACHE_TTL
            if cached is not None and fresh:
                keys: list[tuple[str | None, _VerifyKey, str | None]] = cached.value
                if kid is None or any(k == kid for k, _, _ in keys):
                    return keys
                # Unknown kid: the IdP may have rotated since we fetched. Refetch, rate-limited.
                last = self._last_forced_refetch.get(slot)
                if last is not None and 0 <= now - last < JWKS_REFETCH_MIN_INTERVAL:
                    return keys
                self._last_forced_refetch[slot] = now
        uri = jwks_uri or self.metadata(now=now)["jwks_uri"]
        keys = self._parse_jwks(self._get_json(uri))
        with self._mutex:
            self._jwks[slot] = _Cached(now, keys)
        return keys

    def _parse_jwks(self, doc: Mapping[str, Any]) -> list[tuple[str | None, _VerifyKey,
                                                                str | None]]:
        raw_keys = doc.get("keys")
        if not isinstance(raw_keys, list):
            raise IdPUnavailableError(f"idp {self.config.name}: JWKS has no keys array")
        keys: list[tuple[str | None, _VerifyKey, str | None]] = []
        for raw in raw_keys:
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

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            # No redirects: the documents must be served where the issuer says they are.
            resp = self._http.get(url, timeout=HTTP_TIMEOUT, allow_redirects=False,
                                  headers={"Accept": "application/json"}, stream=True)
            body = read_limited(resp)
        except requests.RequestException as e:
            raise IdPUnavailableError(f"idp {self.config.name}: GET failed "
                                      f"({type(e).__name__})") from e
        if resp.status_code != 200:
            raise IdPUnavailableError(f"idp {self.config.name}: GET returned "
                                      f"{resp.status_code}")
        return json_object(body, f"idp {self.config.name}: GET", unavailable=True)

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

def read_limited(resp: requests.Response) -> bytes:
    """The body, refusing more than MAX_DOCUMENT_BYTES (the response is streamed)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=16384):
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            resp.close()
            raise requests.RequestException("response too large")
        chunks.append(chunk)
    return b"".join(chunks)


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
