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
  an IdP configured `id_jag = true`, verified here; the jwt-bearer grant that takes it is
  authserver/grants/jwt_bearer.py.

Discovery documents and JWKS are cached per process (a cache, not shared state: every process
may fetch its own copy). An unknown `kid` triggers at most one JWKS refetch per
`JWKS_REFETCH_MIN_INTERVAL`, so a flood of tokens with made-up `kid`s cannot turn us into a
request amplifier against the IdP. Nonce replay entries go through the shared `Store`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard
from urllib.parse import quote, urlencode, urlsplit

import requests
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from authserver.config import JWT_LEEWAY
from authserver.encoding import b64url_encode, sha256_b64url
from authserver.errors import InvalidRequestError, TemporarilyUnavailableError
from authserver.store import Store
from authserver.urls import is_https_or_loopback_url

log = logging.getLogger(__name__)

# --- windows, limits and allow-lists ---------------------------------------------------------
#: How long a discovery document is reused before it is fetched again.
DISCOVERY_CACHE_TTL = 3600
#: How long a JWKS is reused. A key the IdP removes stays accepted here at most this long.
JWKS_CACHE_TTL = 600
#: An unknown `kid` forces a JWKS refetch at most once per this many seconds.
JWKS_REFETCH_MIN_INTERVAL = 30
#: Clock skew tolerated on `exp`, `iat` and `nbf`.
ID_TOKEN_LEEWAY = JWT_LEEWAY
#: Seconds to wait on the IdP (connect and read).
HTTP_TIMEOUT = 5.0
#: Largest discovery document, JWKS or token response we read from an IdP.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Largest token we parse; anything longer is rejected before any decoding.
MAX_TOKEN_LENGTH = 16 * 1024
#: Asymmetric algorithms only: never `none`, never a MAC (the client secret is not a key here).
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512")
#: Nonce replay entries live at least this long, even for an already-expiring ID token.
NONCE_REPLAY_MIN_TTL = 60
#: Store key prefix of IdP tokens already exchanged at the edge mint (single use).
SUBJECT_TOKEN_KEY = "idp-subject-token:"
#: Store key prefix of ID-JAGs already redeemed (single use, by `iss` + `jti`).
ID_JAG_KEY = "idp-id-jag:"
#: The longest ID-JAG lifetime (`exp - iat`) accepted. The draft's examples last minutes; a
#: longer grant would also keep its replay entry that long.
MAX_ID_JAG_LIFETIME = 3600
#: Longest `jti` or `client_id` claim accepted in an ID-JAG.
MAX_ID_JAG_CLAIM = 255

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: JOSE `typ` values accepted per use (lower-cased, `application/` prefix removed; absent is
#: accepted too). Explicit typing (RFC 8725 §3.11) keeps logout tokens, SETs, DPoP proofs and
#: ID-JAGs from being accepted as identity tokens.
_ID_TOKEN_TYPS = frozenset({"jwt"})
_MACHINE_JWT_TYPS = frozenset({"jwt", "at+jwt"})
_SUBJECT_TOKEN_TYPS = {ID_TOKEN_TYPE: _ID_TOKEN_TYPS, JWT_TOKEN_TYPE: _MACHINE_JWT_TYPS}
#: draft-ietf-oauth-identity-assertion-authz-grant §3: the ID-JAG's `typ` MUST be this (and,
#: unlike the types above, it must be present).
ID_JAG_TYP = "oauth-id-jag+jwt"
_ID_JAG_TYPS = frozenset({ID_JAG_TYP})

DEFAULT_SCOPES = ("openid", "email", "profile")
DEFAULT_CLAIM_MAP: Mapping[str, str] = MappingProxyType(
    {"email": "email", "name": "name", "groups": "groups", "roles": "roles", "tenant": "tenant"}
)

_VerifyKey = RSAKey | ECKey | OKPKey


class IdentityError(InvalidRequestError):
    """An identity token or login response we do not accept.

    RFC 8693 §2.2.2: an unacceptable subject token is `invalid_request`. The description stays
    generic (which check failed is useful to an attacker); the reason goes to `debug`.
    """

    GENERIC_DESCRIPTION = "The identity token is not acceptable"

    def __init__(self, debug: str, *, description: str | None = None) -> None:
        super().__init__(description or self.GENERIC_DESCRIPTION, debug=debug)


class IdPUnavailableError(TemporarilyUnavailableError):
    """The IdP could not be reached or answered nonsense: fail closed (503)."""

    def __init__(self, debug: str) -> None:
        super().__init__("The identity provider is unavailable", debug=debug)


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdPConfig:
    """One upstream OIDC IdP. `claim_map` maps our attribute to the IdP's claim name."""

    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    claim_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_CLAIM_MAP, hash=False)
    default_tenant: str = "default"
    #: Audiences accepted for machine tokens (the edge's client id at the IdP). Never our own
    #: `client_id`: an ID token for our login client is a browser sign-in, not the edge's to
    #: exchange. Never used for the browser login, whose ID token must be for us.
    trusted_audiences: tuple[str, ...] = ()
    allow_machine_tokens: bool = True
    #: The tenants this IdP's users may be in (its `tenant` claim must be one of them), so
    #: that with several IdPs one cannot assert another's tenant. Empty: `default_tenant` only.
    tenants: tuple[str, ...] = ()
    #: Accept this IdP's ID-JAGs at the jwt-bearer grant (Cross-App Access). Off by default:
    #: an IdP trusted for sign-in is not thereby trusted to grant agents access.
    id_jag: bool = False
    #: SCIM 2.0 provisioning (authserver/scim.py): the SHA-256 (hex) of this IdP's bearer
    #: token at /scim/v2; empty: no SCIM for this IdP. Only the hash is configured.
    scim_token_sha256: str = field(default="", repr=False)
    #: Which SCIM attribute carries the `sub` this IdP's tokens have: `externalId` (Okta's
    #: default) or `userName`.
    scim_subject: str = "externalId"
    #: Shared Signals receiver (authserver/ssf.py): the `aud` this IdP's transmitter puts in
    #: the SETs it pushes to us; empty: no SSF for this IdP.
    ssf_audience: str = ""
    #: The transmitter's `iss` (its SSF issuer); default: `issuer`.
    ssf_issuer: str = ""
    #: Where the transmitter's signing keys are; default: the IdP's discovery `jwks_uri`.
    ssf_jwks_uri: str = ""
    #: SHA-256 (hex) of the bearer token the transmitter sends with each push (the stream's
    #: `authorization_header`); empty: none is required (the SET's signature still is).
    ssf_token_sha256: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("IdP name is required")
        _check_issuer_url(self.issuer)
        if not self.client_id or not self.client_secret:
            raise ValueError(f"idps.{self.name}: client_id and client_secret are required")
        if "openid" not in self.scopes:
            raise ValueError(f"idps.{self.name}: scopes must include openid")
        unknown = set(self.claim_map) - set(DEFAULT_CLAIM_MAP)
        if unknown:
            raise ValueError(f"idps.{self.name}: unknown claim_map keys {sorted(unknown)}")
        # Partial maps override the defaults; the stored map is read-only.
        merged = {**DEFAULT_CLAIM_MAP, **self.claim_map}
        object.__setattr__(self, "claim_map", MappingProxyType(merged))
        object.__setattr__(self, "scopes", tuple(self.scopes))
        object.__setattr__(self, "trusted_audiences", tuple(self.trusted_audiences))
        if self.client_id in self.trusted_audiences:
            raise ValueError(f"idps.{self.name}: trusted_audiences must not include client_id "
                             "(our own login client)")
        tenants = tuple(self.tenants) or (self.default_tenant,)
        if not all(isinstance(t, str) and t for t in tenants):
            raise ValueError(f"idps.{self.name}: tenants must be non-empty strings")
        if self.default_tenant not in tenants:
            raise ValueError(f"idps.{self.name}: default_tenant must be one of tenants")
        object.__setattr__(self, "tenants", tenants)
        if not isinstance(self.id_jag, bool):
            raise ValueError(f"idps.{self.name}: id_jag must be true or false")
        digest = self.scim_token_sha256
        if digest and (not isinstance(digest, str) or len(digest) != 64
                       or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"idps.{self.name}: scim_token_sha256 must be 64 lower-case hex "
                             "digits (the SHA-256 of the token, never the token)")
        if self.scim_subject not in ("externalId", "userName"):
            raise ValueError(f"idps.{self.name}: scim_subject must be externalId or userName")
        self._check_ssf()

    def _check_ssf(self) -> None:
        for key in ("ssf_audience", "ssf_issuer", "ssf_jwks_uri", "ssf_token_sha256"):
            value = getattr(self, key)
            if not isinstance(value, str) or len(value) > 2048:
                raise ValueError(f"idps.{self.name}: {key} must be a string")
        if not self.ssf_audience and (self.ssf_issuer or self.ssf_jwks_uri
                                      or self.ssf_token_sha256):
            raise ValueError(f"idps.{self.name}: ssf_issuer, ssf_jwks_uri and "
                             "ssf_token_sha256 need ssf_audience (the receiver's audience)")
        if self.ssf_issuer:
            _check_issuer_url(self.ssf_issuer)
        if self.ssf_jwks_uri and not _is_allowed_scheme(self.ssf_jwks_uri):
            raise ValueError(f"idps.{self.name}: ssf_jwks_uri must be https (plain http "
                             "only on loopback)")
        digest = self.ssf_token_sha256
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"idps.{self.name}: ssf_token_sha256 must be 64 lower-case hex "
                             "digits (the SHA-256 of the token, never the token)")

    @property
    def ssf_transmitter(self) -> str:
        """The `iss` of this IdP's SETs."""
        return self.ssf_issuer or self.issuer

    @classmethod
    def from_settings(cls, name: str, mapping: Mapping[str, Any]) -> IdPConfig:
        """Build from one `[idps.<name>]` table; unknown keys are a configuration error."""
        allowed = {"issuer", "client_id", "client_secret", "scopes", "claim_map",
                   "default_tenant", "trusted_audiences", "allow_machine_tokens", "tenants",
                   "id_jag", "scim_token_sha256", "scim_subject", "ssf_audience",
                   "ssf_issuer", "ssf_jwks_uri", "ssf_token_sha256"}
        unknown = set(mapping) - allowed
        if unknown:
            raise ValueError(f"idps.{name}: unknown keys {sorted(unknown)}")
        scopes = mapping.get("scopes", DEFAULT_SCOPES)
        if isinstance(scopes, str):
            scopes = scopes.split()
        audiences = mapping.get("trusted_audiences", ())
        if isinstance(audiences, str):
            audiences = (audiences,)
        tenants = mapping.get("tenants", ())
        if isinstance(tenants, str):
            tenants = (tenants,)
        return cls(
            name=name,
            issuer=str(mapping.get("issuer", "")),
            client_id=str(mapping.get("client_id", "")),
            client_secret=str(mapping.get("client_secret", "")),
            scopes=tuple(scopes),
            claim_map=dict(mapping.get("claim_map") or {}),
            default_tenant=str(mapping.get("default_tenant", "default")),
            trusted_audiences=tuple(audiences),
            allow_machine_tokens=bool(mapping.get("allow_machine_tokens", True)),
            tenants=tuple(tenants),
            id_jag=mapping.get("id_jag", False),
            scim_token_sha256=mapping.get("scim_token_sha256", ""),
            scim_subject=mapping.get("scim_subject", "externalId"),
            ssf_audience=mapping.get("ssf_audience", ""),
            ssf_issuer=mapping.get("ssf_issuer", ""),
            ssf_jwks_uri=mapping.get("ssf_jwks_uri", ""),
            ssf_token_sha256=mapping.get("ssf_token_sha256", ""),
        )


def _check_issuer_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.query or parts.fragment or not parts.netloc:
        raise ValueError("IdP issuer must be an absolute URL without query or fragment")
    if not _is_allowed_scheme(url):
        raise ValueError("IdP issuer must be https (plain http only on loopback)")


def _is_allowed_scheme(url: str) -> bool:
    # Plain http only for loopback (tests, the demo): an IdP's keys fetched over http could be
    # swapped by anyone on the path.
    return is_https_or_loopback_url(url)


# --- the login relying party -----------------------------------------------------------------


@dataclass(frozen=True)
class LoginStart:
    """Where to send the browser, and what the caller keeps in the browser session."""

    url: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)


@dataclass
class _Cached:
    fetched_at: int
    value: Any


class OIDCProvider:
    """One configured IdP: discovery, JWKS, the code flow and ID-token validation."""

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

    # --- discovery and keys ----------------------------------------------------------------

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
            if not isinstance(value, str) or not _is_allowed_scheme(value):
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
            body = _read_limited(resp)
        except requests.RequestException as e:
            raise IdPUnavailableError(f"idp {self.config.name}: GET failed "
                                      f"({type(e).__name__})") from e
        if resp.status_code != 200:
            raise IdPUnavailableError(f"idp {self.config.name}: GET returned "
                                      f"{resp.status_code}")
        return _json_object(body, f"idp {self.config.name}: GET", unavailable=True)

    # --- code flow -------------------------------------------------------------------------

    def begin_login(
        self, *, redirect_uri: str, now: int, login_hint: str | None = None
    ) -> LoginStart:
        """Build the authorization request (OIDC Core §3.1.2.1, PKCE S256, fresh state/nonce).

        The caller stores `state`, `nonce` and `code_verifier` in the browser session and
        passes them back to `verify_callback` and `complete_login`.
        """
        endpoint = self.metadata(now=now)["authorization_endpoint"]
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        # RFC 7636 §4.1: 43-128 unreserved characters; 48 random bytes give 64 characters.
        verifier = secrets.token_urlsafe(48)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": sha256_b64url(verifier.encode("ascii")),
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        separator = "&" if urlsplit(endpoint).query else "?"
        return LoginStart(endpoint + separator + urlencode(params), state, nonce, verifier)

    def verify_callback(
        self, params: Mapping[str, str], *, expected_state: str, now: int
    ) -> str:
        """Check the authorization response at our redirect URI; return the code.

        Raises IdentityError on a state mismatch, an issuer mix-up or an IdP error response.
        """
        state = params.get("state")
        # OIDC Core §3.1.2.7 / RFC 6749 §10.12: the state binds the response to this browser.
        if not expected_state or not isinstance(state, str) or not hmac.compare_digest(
            state.encode(), expected_state.encode()
        ):
            raise IdentityError("login callback: state mismatch")
        iss = params.get("iss")
        # RFC 9207 §2.4: compare `iss` when sent; require it when the IdP says it sends it.
        if iss is not None and iss != self.config.issuer:
            raise IdentityError("login callback: iss mismatch (mix-up)")
        if iss is None and self.metadata(now=now).get(
            "authorization_response_iss_parameter_supported"
        ) is True:
            raise IdentityError("login callback: iss missing")
        if "error" in params:
            raise IdentityError(f"login callback: idp error {str(params['error'])[:64]!r}")
        code = params.get("code")
        if not isinstance(code, str) or not code:
            raise IdentityError("login callback: code missing")
        return code

    def complete_login(
        self, *, code: str, redirect_uri: str, expected_nonce: str, code_verifier: str, now: int
    ) -> dict[str, Any]:
        """Redeem the code at the IdP and return the verified ID-token claims.

        Raises IdentityError (bad code, bad ID token, replayed nonce) or IdPUnavailableError.
        """
        if not expected_nonce or not code_verifier:
            raise IdentityError("login: no nonce or code_verifier in the session")
        body = self._redeem_code(code=code, redirect_uri=redirect_uri,
                                 code_verifier=code_verifier, now=now)
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise IdentityError("login: token response has no id_token")
        header, claims = self._verify(id_token, now=now, nonce=expected_nonce,
                                      audiences=(self.config.client_id,), typs=_ID_TOKEN_TYPS)
        access_token = body.get("access_token")
        if "at_hash" in claims and isinstance(access_token, str):
            # OIDC Core §3.1.3.8: at_hash binds the access token to this ID token.
            _check_at_hash(claims["at_hash"], access_token, header["alg"])
        # OIDC Core §15.5.2: a nonce is accepted once. The entry outlives the ID token, so the
        # same token cannot be replayed into another login while it is valid.
        ttl = max(int(claims["exp"]) + ID_TOKEN_LEEWAY - now, NONCE_REPLAY_MIN_TTL)
        digest = hashlib.sha256(expected_nonce.encode()).hexdigest()
        if not self._store.add_if_absent("oidc-nonce:" + digest, ttl):
            raise IdentityError("login: nonce replayed")
        return claims

    def _redeem_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, now: int
    ) -> dict[str, Any]:
        meta = self.metadata(now=now)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        headers = {"Accept": "application/json"}
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in methods:
            # RFC 6749 §2.3.1: form-urlencode id and secret before base64.
            pair = f"{quote(self.config.client_id, safe='')}:" \
                   f"{quote(self.config.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif "client_secret_post" in methods:
            form["client_id"] = self.config.client_id
            form["client_secret"] = self.config.client_secret
        else:
            raise IdPUnavailableError(f"idp {self.config.name}: no supported client auth method")
        try:
            resp = self._http.post(meta["token_endpoint"], data=form, headers=headers,
                                   timeout=HTTP_TIMEOUT, allow_redirects=False, stream=True)
            raw = _read_limited(resp)
        except requests.RequestException as e:
            raise IdPUnavailableError(f"idp {self.config.name}: token request failed "
                                      f"({type(e).__name__})") from e
        if resp.status_code >= 500:
            raise IdPUnavailableError(f"idp {self.config.name}: token endpoint "
                                      f"{resp.status_code}")
        body = _json_object(raw, f"idp {self.config.name}: token response", unavailable=False)
        if resp.status_code != 200:
            # Only the error code is kept (debug); IdP descriptions are never passed on.
            raise IdentityError(f"login: token endpoint {resp.status_code} "
                                f"{str(body.get('error'))[:64]!r}")
        return body

    # --- ID token validation ---------------------------------------------------------------

    def verify_id_token(
        self, token: str, *, now: int, nonce: str | None, audiences: Sequence[str]
    ) -> dict[str, Any]:
        """Validate an ID token (OIDC Core §3.1.3.7); return its claims. Raises IdentityError.

        Checks, in order: compact JWS shape, `alg` allow-list, JOSE `typ`, signature with the
        IdP's key for `kid`, `iss` exact, `sub`, `aud` contains one of `audiences`, `azp`,
        `exp`/`iat`/`nbf` with `ID_TOKEN_LEEWAY`, and `nonce` when given.
        """
        return self._verify(token, now=now, nonce=nonce, audiences=audiences,
                            typs=_ID_TOKEN_TYPS)[1]

    def _verify(
        self,
        token: str,
        *,
        now: int,
        nonce: str | None,
        audiences: Sequence[str],
        typs: frozenset[str],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        header = _protected_header(token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise IdentityError(f"alg {str(alg)[:16]!r} not allowed")
        if "crit" in header:
            raise IdentityError("crit header not understood")
        typ = header.get("typ")
        if typ is not None and _normalise_typ(typ) not in typs:
            raise IdentityError(f"typ {str(typ)[:32]!r} not accepted here")
        key = self._key_for(header.get("kid"), alg, now=now)
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except (JoseError, ValueError) as e:
            raise IdentityError(f"bad signature ({type(e).__name__})") from e
        claims = dict(decoded.claims)
        _check_issuer(claims, self.config.issuer)
        _check_subject(claims)
        _check_audience(claims, audiences)
        _check_times(claims, now)
        if nonce is not None:
            _check_nonce(claims, nonce)
        return dict(decoded.header), claims

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


# --- all configured IdPs ---------------------------------------------------------------------


class Federation:
    """Every configured IdP, by name and by issuer."""

    def __init__(
        self, configs: Iterable[IdPConfig], store: Store, http: requests.Session | None = None
    ) -> None:
        self._by_name: dict[str, OIDCProvider] = {}
        self._by_issuer: dict[str, OIDCProvider] = {}
        http = http or requests.Session()
        for config in configs:
            if config.name in self._by_name:
                raise ValueError(f"duplicate IdP name {config.name}")
            if config.issuer in self._by_issuer:
                raise ValueError(f"duplicate IdP issuer {config.issuer}")
            provider = OIDCProvider(config, store, http)
            self._by_name[config.name] = provider
            self._by_issuer[config.issuer] = provider

    @classmethod
    def from_settings(
        cls, idps: Mapping[str, Mapping[str, Any]], store: Store,
        http: requests.Session | None = None,
    ) -> Federation:
        return cls([IdPConfig.from_settings(n, m) for n, m in idps.items()], store, http)

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

    def verify_subject_token(
        self, token: str, *, now: int, token_type: str = ID_TOKEN_TYPE
    ) -> tuple[IdPConfig, dict[str, Any]]:
        """Validate an IdP token presented as an RFC 8693 `subject_token`.

        The unverified `iss` only selects which IdP's keys to verify with; everything is then
        checked against that IdP. Raises IdentityError (→ `invalid_request`) for an unknown
        issuer, an IdP closed to machine tokens, or any failed check.
        """
        typs = _SUBJECT_TOKEN_TYPS.get(token_type)
        if typs is None:
            raise IdentityError(f"unsupported subject_token_type {token_type[:80]!r}")
        iss = _unverified_claims(token).get("iss")
        provider = self.by_issuer(iss) if isinstance(iss, str) else None
        if provider is None:
            raise IdentityError(f"untrusted issuer {str(iss)[:128]!r}")
        config = provider.config
        if not config.allow_machine_tokens:
            raise IdentityError(f"idp {config.name} does not accept machine tokens")
        _, claims = provider._verify(
            token, now=now, nonce=None,
            audiences=(config.client_id, *config.trusted_audiences), typs=typs,
        )
        aud = claims["aud"]
        if config.client_id in ([aud] if isinstance(aud, str) else aud):
            # A token that is (also) for our login client is someone's browser sign-in.
            raise IdentityError("aud is our own login client")
        return config, claims

    def spend_subject_token(self, token: str, claims: Mapping[str, Any], *, now: int) -> None:
        """Accept a verified subject token once (by `iss` + `jti`, or the hash of what it
        signs when it has no `jti`), remembered in the shared store until it expires. Raises
        IdentityError if it was already used; store failures propagate (503).

        Not the hash of the whole token: an ECDSA signature is malleable ((r, s) and
        (r, n - s) both verify), so the same signed content can come with another signature."""
        provider = self.by_issuer(str(claims.get("iss")))
        if provider is None:
            raise IdentityError("claims are not from a configured IdP")
        jti = claims.get("jti")
        ident = (json.dumps([claims["iss"], jti]) if isinstance(jti, str) and jti
                 else token.rsplit(".", 1)[0])
        digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()
        ttl = max(int(claims["exp"]) + ID_TOKEN_LEEWAY - now, 1)
        if not provider._store.add_if_absent(SUBJECT_TOKEN_KEY + digest, ttl):
            raise IdentityError("subject_token already used")

    def verify_id_jag(self, token: str, *, now: int, audience: str
                      ) -> tuple[IdPConfig, dict[str, Any]]:
        """Validate an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3, §4.4.1,
        and RFC 7523 §3); return its IdP and claims. Raises IdentityError for any failure.

        Checks, in order: `typ` exactly `oauth-id-jag+jwt` (present), a configured issuer whose
        `id_jag` is on, then the ID-token checks (compact JWS, `alg` allow-list, signature with
        that IdP's cached JWKS, `iss`, `sub`, `exp`/`iat`/`nbf`), `aud` exactly `audience`
        (one value), `client_id` and `jti` present, and a lifetime of at most
        MAX_ID_JAG_LIFETIME. Single use is `spend_id_jag`, the caller's last check.
        """
        typ = _protected_header(token).get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) != ID_JAG_TYP:
            raise IdentityError(f"typ {str(typ)[:32]!r} is not {ID_JAG_TYP}")
        iss = _unverified_claims(token).get("iss")
        provider = self.by_issuer(iss) if isinstance(iss, str) else None
        if provider is None:
            raise IdentityError(f"untrusted issuer {str(iss)[:128]!r}")
        if not provider.config.id_jag:
            raise IdentityError(f"idp {provider.config.name} is not enabled for ID-JAG")
        _, claims = provider._verify(token, now=now, nonce=None, audiences=(audience,),
                                     typs=_ID_JAG_TYPS)
        aud = claims["aud"]
        if aud != audience and aud != [audience]:
            # §4.4.1: the aud claim identifies this server; a grant for several is refused.
            raise IdentityError("aud is not exactly this server")
        for name in ("client_id", "jti"):
            value = claims.get(name)
            if not isinstance(value, str) or not value or len(value) > MAX_ID_JAG_CLAIM:
                raise IdentityError(f"{name} missing or invalid")
        if claims["exp"] - claims["iat"] > MAX_ID_JAG_LIFETIME:
            raise IdentityError("lifetime too long")
        return provider.config, claims

    def spend_id_jag(self, claims: Mapping[str, Any], *, now: int) -> None:
        """Accept a verified ID-JAG once (by `iss` + `jti`, RFC 7523 §3 item 7), remembered in
        the shared store until it expires. Raises IdentityError if it was already used; store
        failures propagate (503)."""
        provider = self.by_issuer(str(claims.get("iss")))
        if provider is None:
            raise IdentityError("claims are not from a configured IdP")
        ident = json.dumps([claims["iss"], claims["jti"]])
        digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()
        ttl = max(int(claims["exp"]) + ID_TOKEN_LEEWAY - now, 1)
        if not provider._store.add_if_absent(ID_JAG_KEY + digest, ttl):
            raise IdentityError("ID-JAG already used")


# --- named checks (each raises IdentityError with its reason) ---------------------------------

_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    # OIDC Core §3.1.3.7 (2): iss MUST exactly match the IdP's issuer.
    if claims.get("iss") != issuer:
        raise IdentityError("iss mismatch")


def _check_subject(claims: Mapping[str, Any]) -> None:
    sub = claims.get("sub")
    # OIDC Core §2: sub is REQUIRED, at most 255 ASCII characters.
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise IdentityError("sub missing or invalid")


def _check_audience(claims: Mapping[str, Any], audiences: Sequence[str]) -> None:
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud
    if not isinstance(aud_list, list) or not aud_list or not all(
        isinstance(a, str) for a in aud_list
    ):
        raise IdentityError("aud missing or malformed")
    # OIDC Core §3.1.3.7 (3): aud MUST contain our client_id (or an accepted audience).
    if not any(a in audiences for a in aud_list):
        raise IdentityError("aud mismatch")
    azp = claims.get("azp")
    # §3.1.3.7 (4)-(5): with several audiences azp must be present; if present, it must name
    # a party we accept, so a token minted for another client is not replayed to us.
    if len(aud_list) > 1 and azp is None:
        raise IdentityError("azp missing with multiple audiences")
    if azp is not None and azp not in audiences:
        raise IdentityError("azp mismatch")


def _check_times(claims: Mapping[str, Any], now: int) -> None:
    exp = claims.get("exp")
    iat = claims.get("iat")
    if not _is_number(exp) or not _is_number(iat):
        raise IdentityError("exp or iat missing")
    # §3.1.3.7 (9): the current time MUST be before exp.
    if now >= exp + ID_TOKEN_LEEWAY:
        raise IdentityError("expired")
    if iat > now + ID_TOKEN_LEEWAY:
        raise IdentityError("iat in the future")
    nbf = claims.get("nbf")
    if nbf is not None and (not _is_number(nbf) or nbf > now + ID_TOKEN_LEEWAY):
        raise IdentityError("not yet valid (nbf)")


def _check_nonce(claims: Mapping[str, Any], expected: str) -> None:
    # §3.1.3.7 (11): the nonce MUST equal the one sent in the authentication request.
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected.encode()):
        raise IdentityError("nonce mismatch")


def _check_at_hash(at_hash: Any, access_token: str, alg: str) -> None:
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[-3:]]
    half = digest(access_token.encode("ascii")).digest()
    expected = b64url_encode(half[: len(half) // 2])
    if not isinstance(at_hash, str) or not hmac.compare_digest(at_hash.encode(),
                                                               expected.encode()):
        raise IdentityError("at_hash mismatch")


# --- parsing helpers -------------------------------------------------------------------------


def _check_compact(token: Any) -> bytes:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise IdentityError("token missing or too long")
    # Exactly three segments: a signed JWT. Five would be a JWE, which joserfc would also
    # decode; we accept signed tokens only.
    if token.count(".") != 2:
        raise IdentityError("not a compact JWS")
    return token.encode("ascii", errors="replace")


def _protected_header(token: str) -> dict[str, Any]:
    raw = _check_compact(token)
    try:
        compact = jws.extract_compact(raw)
    except (JoseError, ValueError, TypeError) as e:
        raise IdentityError(f"malformed token ({type(e).__name__})") from e
    return dict(compact.protected)


def parse_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(protected header, payload) of a compact JWS, WITHOUT verifying it: only to choose
    what to verify it with. Raises IdentityError for anything that is not a signed JWT of at
    most MAX_TOKEN_LENGTH with a JSON object payload."""
    return _protected_header(token), _unverified_claims(token)


def normalise_typ(typ: Any) -> str:
    """A JOSE `typ` compared as RFC 7515 §4.1.9 says: case-insensitive, `application/`
    optional."""
    return _normalise_typ(typ)


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload WITHOUT signature verification: used only to choose the IdP."""
    raw = _check_compact(token)
    try:
        payload = jws.extract_compact(raw).payload
        claims = json.loads(payload)
    except (JoseError, ValueError, TypeError) as e:
        raise IdentityError(f"malformed token ({type(e).__name__})") from e
    if not isinstance(claims, dict):
        raise IdentityError("token payload is not a JSON object")
    return claims


def _fits(entry: tuple[str | None, _VerifyKey, str | None], alg: str) -> bool:
    _, key, key_alg = entry
    if key_alg is not None:
        return key_alg == alg
    family = {"RS": "RSA", "PS": "RSA", "ES": "EC"}[alg[:2]]
    return key.key_type == family


def _normalise_typ(typ: Any) -> str:
    value = str(typ).lower()
    return value.removeprefix("application/")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)



def _read_limited(resp: requests.Response) -> bytes:
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


def _json_object(raw: bytes, what: str, *, unavailable: bool) -> dict[str, Any]:
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
