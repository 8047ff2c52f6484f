"""RFC 9449 §7 (DPoP-bound access tokens at a resource server) and RFC 9068 §4 (JWT validation).

https://www.rfc-editor.org/rfc/rfc9449#section-7 — framework-free, so any API can use it: our
gateway, an MCP server, a third-party service that knows only our issuer URL (`jwks_verifier`).
Errors are `ResourceError`s that render as `WWW-Authenticate: DPoP ...` challenges. Proof checks
are authserver.dpop's, translated to their resource-server form. Rule IDs (DPOP-4x,
JAT-0x) are defined in docs/standards.md.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key

from authserver.config import DPOP_FUTURE_SKEW, DPOP_PROOF_WINDOW, JWT_LEEWAY
from authserver.dpop import (
    DPOP_SIGNING_ALGS,
    DPoPProof,
    NonceIssuer,
    import_public_key,
    validate_proof,
)
from authserver.errors import (
    InvalidDpopProofError,
    InvalidTokenError,
    ResourceError,
    ResourceInvalidDpopProofError,
    ResourceInvalidRequestError,
    ResourceUseDpopNonceError,
    TemporarilyUnavailableError,
    UseDpopNonceError,
)
from authserver.jwks import JwksCache, JwksError
from authserver.keys import InvalidSignatureError
from authserver.outbound import Outbound
from authserver.store import Store
from authserver.urls import is_loopback_http_url, normalize_resource

#: RFC 9068 §4 / JAT-01: the only JOSE `typ` values an access token may carry.
ACCESS_TOKEN_TYPS = ("at+jwt", "application/at+jwt")
#: What our key ring signs with (authserver.keys.SIGNING_ALG); nothing else is accepted.
ACCESS_TOKEN_ALGS = ("ES256",)
JWKS_CACHE_SECONDS = 300
#: An unknown `kid` refetches the JWKS (a rotation), but at most this often: a flood of
#: tokens with random `kid`s must not become a flood of requests to the issuer.
JWKS_MIN_REFETCH_INTERVAL = 30
MAX_JWKS_BYTES = 64 * 1024
# RFC 9110 §11.2 token68.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class ResourceVerifier:
    """Verifies `Authorization: DPoP <JWT access token>` plus its `DPoP` proof (RFC 9449 §7).

    `verify_jwt(token, now)` must return signature-verified claims or raise; this class checks
    the claims (`iss`, `aud`, `exp`/`nbf`/`iat`), the proof, and the key binding. `audience` is
    this resource's identifier (compared after RFC 3986 normalisation,
    `authserver.urls.normalize_resource`), or a predicate over each `aud` value.

    With `allow_bearer`, `Authorization: Bearer <token>` is accepted too, but only for a token
    that is not DPoP-bound (no `cnf`); a DPoP-bound token sent as Bearer is refused (RFC 9449
    §7.2), and every challenge offers both schemes. Without it, every challenge is DPoP's.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Callable[[str], bool],
        verify_jwt: Callable[[str, int], dict[str, Any]],
        store: Store,
        nonces: NonceIssuer | None = None,
        nonce_required: bool = False,
        algs: Sequence[str] = DPOP_SIGNING_ALGS,
        resource_metadata: str | None = None,
        leeway: int = JWT_LEEWAY,
        window: int = DPOP_PROOF_WINDOW,
        future_skew: int = DPOP_FUTURE_SKEW,
        allow_bearer: bool = False,
    ) -> None:
        if not algs or not set(algs) <= set(DPOP_SIGNING_ALGS):
            raise ValueError(f"algs must be a non-empty subset of {DPOP_SIGNING_ALGS}")
        if nonce_required and nonces is None:
            raise ValueError("nonce_required needs a NonceIssuer")
        self._issuer = issuer
        self._audience = audience
        self._verify_jwt = verify_jwt
        self._store = store
        self._nonces = nonces
        self._nonce_required = nonce_required
        self._algs = tuple(algs)
        self._leeway = leeway
        self._window = window
        self._future_skew = future_skew
        self._allow_bearer = allow_bearer
        extra = {"resource_metadata": resource_metadata} if resource_metadata else {}
        bearer = ResourceError(challenge_only=True, scheme="Bearer", extra_params=extra)
        dpop = ResourceError(challenge_only=True, scheme="DPoP", algs=" ".join(self._algs),
                             extra_params=extra)
        # DPOP-40/44: every challenge advertises the accepted algs and, with RFC 9728, the PRM;
        # with allow_bearer, the scheme not attempted follows as a bare challenge (§7.2).
        self._challenge: dict[str, Any] = {
            "scheme": "DPoP", "algs": " ".join(self._algs), "extra_params": extra,
            "also": bearer.challenge() if allow_bearer else "",
        }
        self._bearer_challenge: dict[str, Any] = {
            "scheme": "Bearer", "extra_params": extra, "also": dpop.challenge(),
        }

    def verify(
        self,
        *,
        method: str,
        url: str,
        authorization: Sequence[str],
        dpop: Sequence[str],
        now: int,
    ) -> dict[str, Any]:
        """Return the access token's verified claims, or raise a `ResourceError`.

        `url` is the external request URI; `authorization` and `dpop` are every value of those
        headers. A store failure raises StoreUnavailableError (503), never a pass.
        """
        return self.verify_and_read(method=method, url=url, authorization=authorization,
                                    dpop=dpop, now=now)[0]

    def verify_and_read(
        self,
        *,
        method: str,
        url: str,
        authorization: Sequence[str],
        dpop: Sequence[str],
        now: int,
        read: Callable[[Mapping[str, Any]], Sequence[str]] | None = None,
    ) -> tuple[dict[str, Any], list[str | None]]:
        """`verify`, and the store values of the keys `read(claims)` names, read once the
        token's claims are verified: in the DPoP proof's replay round trip (issue 18), or on
        their own for a bearer token. Nothing is read for a request refused before that."""
        scheme, token = self._credentials(authorization)
        if scheme == "bearer":
            claims = self._token_claims(token, now, self._bearer_challenge)
            if "cnf" in claims:
                # DPOP-42: RFC 9449 §7.2, a DPoP-bound token is never accepted as a bearer token.
                raise InvalidTokenError("DPoP-bound access token sent with the Bearer scheme, "
                                        "use DPoP", **self._bearer_challenge)
            return claims, [self._store.get(key) for key in (read(claims) if read else ())]
        claims = self._token_claims(token, now, self._challenge)
        self._check_bound(claims)
        proof = self._proof(dpop, method=method, url=url, token=token, now=now,
                            read=read(claims) if read else ())
        self._check_key_binding(claims, proof)
        return claims, list(proof.read)

    # --- steps ------------------------------------------------------------------------------

    def _credentials(self, authorization: Sequence[str]) -> tuple[str, str]:
        """(scheme in lower case, token)."""
        if not authorization:
            # DPOP-41: no credentials → a bare challenge, no error code.
            raise self._error(InvalidTokenError, None, challenge_only=True)
        if len(authorization) > 1:
            raise self._error(ResourceInvalidRequestError, "Multiple Authorization headers")
        scheme, _, token = authorization[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and not self._allow_bearer:
            # DPOP-42: this resource takes DPoP-bound tokens only, so Bearer is a downgrade and
            # the token is refused before it is even parsed.
            raise self._error(InvalidTokenError, "Bearer scheme not accepted, use DPoP")
        if scheme.lower() not in ("bearer", "dpop"):
            # RFC 6750 §3.1: an unsupported scheme counts as no credentials.
            raise self._error(InvalidTokenError, None, challenge_only=True)
        challenge = self._bearer_challenge if scheme.lower() == "bearer" else self._challenge
        if not _TOKEN68.fullmatch(token):
            raise ResourceInvalidRequestError("Malformed Authorization header", **challenge)
        return scheme.lower(), token

    def _token_claims(self, token: str, now: int, challenge: dict[str, Any]) -> dict[str, Any]:
        """Signature, `iss`, `aud` and lifetime; errors in `challenge`'s scheme."""
        try:
            claims = self._verify_jwt(token, now)
        except TemporarilyUnavailableError:
            raise  # our issuer's JWKS is unreachable: 503, not a verdict on the token
        except Exception as e:  # the contract: verify_jwt raises anything for a bad token
            raise InvalidTokenError("Invalid access token", debug=type(e).__name__,
                                    **challenge) from e
        if not isinstance(claims, dict):
            raise InvalidTokenError("Invalid access token", **challenge)
        problem = (self._issuer_problem(claims) or self._audience_problem(claims)
                   or self._lifetime_problem(claims, now))
        if problem:
            raise InvalidTokenError(problem, **challenge)
        return claims

    def _issuer_problem(self, claims: Mapping[str, Any]) -> str | None:
        # JAT-05: exact string comparison with the configured issuer.
        if claims.get("iss") != self._issuer:
            return "Access token issuer not accepted"
        return None

    def _audience_problem(self, claims: Mapping[str, Any]) -> str | None:
        # JAT-05: `aud` must name this resource; a token for another audience is refused.
        aud = claims.get("aud")
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return "Access token audience is not this resource"
        expected = self._audience
        if callable(expected):
            matches = expected
        else:
            wanted = normalize_resource(expected) or expected

            def matches(value: str) -> bool:
                return value == expected or normalize_resource(value) == wanted

        if not any(matches(v) for v in values):
            return "Access token audience is not this resource"
        return None

    def _lifetime_problem(self, claims: Mapping[str, Any], now: int) -> str | None:
        # JAT-03/05: `exp` and `iat` are required; `nbf` is honoured when present.
        exp, iat = _time_claim(claims, "exp"), _time_claim(claims, "iat")
        nbf = _time_claim(claims, "nbf") if "nbf" in claims else iat
        if exp is None or iat is None or nbf is None:
            return "Access token time claims are invalid"
        if now >= exp + self._leeway:
            return "Access token expired"
        if max(iat, nbf) > now + self._leeway:
            return "Access token not yet valid"
        return None

    def _check_bound(self, claims: Mapping[str, Any]) -> None:
        # The DPoP scheme carries only DPoP-bound tokens (RFC 9449 §7.1, DPOP-24 `cnf.jkt`).
        cnf = claims.get("cnf")
        if not isinstance(cnf, dict) or not isinstance(cnf.get("jkt"), str):
            raise self._error(InvalidTokenError, "Access token is not DPoP-bound")

    def _proof(self, dpop: Sequence[str], *, method: str, url: str, token: str,
               now: int, read: Sequence[str] = ()) -> DPoPProof:
        # One implementation of every §4.3 check: authserver.dpop's, in its RS form (§7.1).
        try:
            return validate_proof(
                dpop, method=method, url=url, now=now, store=self._store, nonces=self._nonces,
                nonce_required=self._nonce_required, access_token=token, window=self._window,
                future_skew=self._future_skew, algs=self._algs, read=read,
            )
        except UseDpopNonceError as e:
            # A missing nonce gets the RS wording; a rejected one says why (expired, not ours).
            raise ResourceUseDpopNonceError(e.nonce, None if e.missing else e.description,
                                            debug=e.debug, **self._challenge) from e
        except InvalidDpopProofError as e:
            raise self._error(ResourceInvalidDpopProofError, e.description, debug=e.debug) from e

    def _check_key_binding(self, claims: Mapping[str, Any], proof: DPoPProof) -> None:
        # DPOP-14: RFC 9449 §7.1 — the proof key must be the key the token is bound to.
        if not hmac.compare_digest(proof.jkt.encode(), claims["cnf"]["jkt"].encode()):
            raise self._error(InvalidTokenError, "DPoP proof key does not match the token")

    def _error(self, cls: type[ResourceError], description: str | None,
               **kwargs: Any) -> ResourceError:
        return cls(description, **self._challenge, **kwargs)


# --- RFC 9728 Protected Resource Metadata -------------------------------------------------------

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"


def protected_resource_metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the metadata URL of `resource`, the well-known segment inserted between
    the host and the resource's path (`https://h/mcp` → `https://h/.well-known/
    oauth-protected-resource/mcp`); a root path adds nothing after it."""
    parts = urlsplit(resource)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise ValueError("resource must be an absolute http(s) URL without a fragment")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, PRM_WELL_KNOWN + path, parts.query, ""))


def protected_resource_metadata(
    resource: str,
    *,
    authorization_servers: Sequence[str],
    dpop_required: bool,
    dpop_algs: Sequence[str] = DPOP_SIGNING_ALGS,
    scopes: Sequence[str] | None = None,
    resource_name: str | None = None,
    authorization_details_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The RFC 9728 §2 document for `resource` (serve it as JSON at
    `protected_resource_metadata_url(resource)`); tokens travel in the header only."""
    doc: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(dpop_algs),
        "dpop_bound_access_tokens_required": dpop_required,
    }
    if scopes:
        doc["scopes_supported"] = list(scopes)
    if resource_name:
        doc["resource_name"] = resource_name
    if authorization_details_types:
        doc["authorization_details_types_supported"] = list(authorization_details_types)
    return doc


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    # json.loads accepts NaN and Infinity, and NaN compares False with everything: refuse them.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


# --- a verify_jwt for third parties: our JWKS over HTTP ----------------------------------------


class _JwksVerifier:
    """Verify our JWT access tokens with keys fetched from `jwks_uri` (RFC 9068 §4, JAT-01/02).

    The keys live in the one JWK Set cache (authserver.jwks, fetched by the one outbound
    fetcher) for `cache_seconds`; an unknown `kid` refetches at most once per
    JWKS_MIN_REFETCH_INTERVAL after the last fetch. A fetch that fails raises
    TemporarilyUnavailableError (fail closed: stale keys are not used past their cache time).
    A key set vouches only for tokens whose `iss` is its issuer.
    """

    def __init__(self, jwks_uri: str, *, issuer: str, cache_seconds: int,
                 outbound: Outbound | None) -> None:
        self._jwks_uri = jwks_uri
        self._issuer = issuer
        self._keys: JwksCache[dict[str, Key]] = JwksCache(
            # Plain http and internal addresses only for a loopback-http JWKS (development).
            outbound or Outbound(allow_internal=is_loopback_http_url(jwks_uri)),
            parse=_signing_keys, kids=lambda keys: keys, error=_keys_unavailable,
            max_bytes=MAX_JWKS_BYTES, lifetime=cache_seconds,
            refetch_interval=JWKS_MIN_REFETCH_INTERVAL, interval_from_any_fetch=True)

    def __call__(self, token: str, now: int) -> dict[str, Any]:
        try:
            obj = jws.extract_compact(token.encode("ascii"))
        except (JoseError, ValueError) as e:
            raise InvalidSignatureError("malformed token") from e
        header = obj.protected
        if header.get("typ") not in ACCESS_TOKEN_TYPS:
            raise InvalidSignatureError("unexpected typ")
        if header.get("alg") not in ACCESS_TOKEN_ALGS:
            raise InvalidSignatureError("unexpected alg")
        key = self._key(header.get("kid"), now)
        try:
            ok = jws.validate_compact(obj, key, algorithms=list(ACCESS_TOKEN_ALGS))
            claims = json.loads(obj.payload)
        except (JoseError, ValueError) as e:
            raise InvalidSignatureError(type(e).__name__) from e
        if not ok:
            raise InvalidSignatureError("bad signature")
        if not isinstance(claims, dict) or claims.get("iss") != self._issuer:
            raise InvalidSignatureError("token not issued by this key set's issuer")
        return claims

    def _key(self, kid: Any, now: int) -> Key:
        if not isinstance(kid, str):
            raise InvalidSignatureError("no kid")
        key = self._keys.get(self._jwks_uri, kid=kid, now=now).get(kid)
        if key is None:
            raise InvalidSignatureError("unknown kid")
        return key


def _keys_unavailable(e: JwksError) -> Exception:
    return TemporarilyUnavailableError("Token issuer keys unavailable",
                                       debug=f"jwks fetch: {e.reason}")


def _signing_keys(jwks: Any) -> dict[str, Key]:
    """The EC signature keys of a JWKS, by `kid`; other keys are skipped, bad ones refused."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS")
    keys: dict[str, Key] = {}
    for entry in jwks["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if entry.get("kty") != "EC" or not isinstance(kid, str):
            continue
        key = import_public_key(entry)  # refuses private members
        if isinstance(key, ECKey):
            keys[kid] = key
    return keys


def jwks_verifier(
    jwks_uri: str,
    *,
    issuer: str,
    cache_seconds: int = JWKS_CACHE_SECONDS,
    outbound: Outbound | None = None,
) -> Callable[[str, int], dict[str, Any]]:
    """A `verify_jwt` for ResourceVerifier that fetches and caches our JWKS over HTTP, with
    the one outbound fetcher (`outbound`, e.g. one with a `ca_file`; by default one that
    reaches internal addresses only for a loopback-http `jwks_uri`)."""
    return _JwksVerifier(jwks_uri, issuer=issuer, cache_seconds=cache_seconds,
                         outbound=outbound)
