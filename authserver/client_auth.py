"""Client authentication (RFC 6749 §2.3) at the token, introspection and revocation endpoints.

Methods: `client_secret_basic`, `client_secret_post` (secrets are 256-bit random values stored
as SHA-256 digests and compared in constant time), `none` for public clients (PKCE required),
all three Authlib's framework-neutral method functions, and our `private_key_jwt` (RFC 7523
§2.2/§3 with the rfc7523bis audience rule: `aud` is our issuer). A client authenticates with
the one method it registered (`token_endpoint_auth_method`). Every failure is one
`InvalidClientError`: nobody learns whether a client id exists.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import OAuth2Error as AuthlibError
from authlib.oauth2.rfc6749.authenticate_client import (
    authenticate_client_secret_basic,
    authenticate_client_secret_post,
    authenticate_none,
)
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from authserver.cimd import find_client_record
from authserver.clients import CLIENT_ASSERTION_ALGS, CLIENT_ASSERTION_TYPE, OAuthClient
from authserver.config import CLIENT_ASSERTION_MAX_AGE, JWT_LEEWAY
from authserver.errors import InvalidClientError, OAuthError, ServerError
from authserver.jwks import JwksCache
from authserver.services import Services
from authserver.store import Store
from authserver.token_endpoint.request import TokenRequest

QueryClient = Callable[[str], OAuthClient | None]

#: Authlib's method functions, each `(query_client, request) -> client | None`.
_AUTHLIB_METHODS: dict[str, Callable[[QueryClient, Any], OAuthClient | None]] = {
    "client_secret_basic": authenticate_client_secret_basic,
    "client_secret_post": authenticate_client_secret_post,
    "none": authenticate_none,
}


def authenticate_client(services: Services, req: TokenRequest, methods: Sequence[str], *,
                        generation: str | None = None) -> OAuthClient:
    """The client, authenticated by the first of `methods` the request uses that is also the
    client's registered method. Raises `InvalidClientError` (401). `generation`: the client
    registry's, if the caller read it already (authserver.client_cache)."""

    looked_up: list[OAuthClient | None] = []  # for the refusal's reason only

    def query_client(client_id: str) -> OAuthClient | None:
        client = load_client(services, req.db, client_id, now=req.now, generation=generation)
        looked_up.append(client)
        return client

    # What Authlib's method functions read: `headers`, `form` and `payload` (read-only here).
    view = SimpleNamespace(
        headers={"Authorization": req.authorization} if req.authorization is not None else {},
        form=req.form,
        payload=SimpleNamespace(client_id=req.form.get("client_id"), data=req.form),
    )
    try:
        for method in methods:
            if method == "private_key_jwt":
                client = _private_key_jwt(services, req, query_client)
            else:
                client = _AUTHLIB_METHODS[method](query_client, view)
            if client is not None and client.row.token_endpoint_auth_method == method:
                return client
    except AuthlibError as e:
        raise _from_authlib(e) from e
    raise InvalidClientError("Client authentication failed",
                             reason=_failure_reason(req, looked_up, methods))


def _failure_reason(req: TokenRequest, looked_up: Sequence[OAuthClient | None],
                    methods: Sequence[str]) -> str:
    """Why no method authenticated (logs only; the answer is the one generic `invalid_client`):
    a secret sent the way the client registered that did not match, a client registered for
    another method than the one used, an unknown client id, or no credentials at all."""
    presented = set()
    if (req.authorization or "").lower().startswith("basic "):
        presented.add("client_secret_basic")
    if req.form.get("client_secret"):
        presented.add("client_secret_post")
    found = [c for c in looked_up if c is not None]
    if any(c.row.token_endpoint_auth_method in presented & set(methods) for c in found):
        return "client_auth_bad_secret"
    if found:
        return "client_auth_wrong_method"
    if looked_up:
        return "client_auth_unknown_client"
    return "client_auth_missing_credentials"


def load_client(services: Services, db: Session, client_id: Any, *, now: int,
                generation: str | None = None) -> OAuthClient | None:
    """The client `client_id` names, or None. A URL client id is fetched (CIMD); a refused
    document raises `InvalidClientError`. `generation` as in `authenticate_client`."""
    if not isinstance(client_id, str) or len(client_id) > 255 \
            or has_control_characters(client_id):
        return None
    row = find_client_record(db, client_id, cimd=services.cimd, registry=services.registry,
                             now=now, generation=generation)
    return OAuthClient(row) if row is not None else None


def _from_authlib(error: AuthlibError) -> OAuthError:
    """Authlib's method functions raise `invalid_client` (an unknown client id): the one answer
    for every failure mode. Anything else would be a bug: `server_error`."""
    if error.error == "invalid_client":
        return InvalidClientError("Client authentication failed",
                                  reason="client_auth_unknown_client")
    return ServerError(debug=f"authlib {error.error}")


# --- HTTP Basic (RFC 6749 §2.3.1, RFC 7617) ---------------------------------------------------

#: C0 controls, DEL and C1 controls: never part of a client id (RFC 6749 §2.2 VSCHAR), and a NUL
#: is refused by PostgreSQL text parameters.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control_characters(value: str) -> bool:
    return _CONTROL_CHARACTERS.search(value) is not None


def check_basic_credentials(authorization: str | None) -> None:
    """Refuse malformed `Authorization: Basic` credentials before Authlib parses them.

    Authlib's parser raises (and so answers 500) on a header with non-ASCII bytes or
    credentials that are not UTF-8 after base64 decoding. Anything but
    `Basic base64(urlencode(client_id) ":" urlencode(secret))` with a UTF-8 payload and a
    client id without control characters is `invalid_client` (401, `WWW-Authenticate: Basic`).
    Other schemes, and no header at all, are left to the other client authentication methods,
    but a header with a space and not both a scheme and credentials (" ", "Bearer ") is
    refused too: Authlib splits any header holding a space in two and raises on fewer parts.
    """
    parts = (authorization or "").split(None, 1)  # as Authlib splits it
    def failed(reason: str) -> InvalidClientError:
        return InvalidClientError("Client authentication failed", reason=reason)

    if authorization and " " in authorization and len(parts) != 2:
        raise failed("client_auth_header_malformed")
    if not parts or parts[0].lower() != "basic":
        return
    if len(parts) != 2:
        raise failed("client_auth_header_malformed")
    try:
        decoded = base64.b64decode(parts[1].strip().encode("ascii"), validate=True)
        text = decoded.decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError) as e:
        raise failed("client_auth_basic_not_decodable") from e
    client_id, colon, _secret = text.partition(":")
    if not colon or not client_id or has_control_characters(text) \
            or has_control_characters(unquote(client_id)):
        raise failed("client_auth_basic_malformed")


# --- private_key_jwt (RFC 7523 §2.2, §3) --------------------------------------------------------


def _private_key_jwt(services: Services, req: TokenRequest,
                     query_client: QueryClient) -> OAuthClient | None:
    """None when the request does not use this method (the next one is tried); raises
    `InvalidClientError` when it does and fails."""
    form = req.form
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        return None
    assertion = form.get("client_assertion")
    if not assertion:
        raise InvalidClientError("Missing client_assertion",
                                 reason="client_auth_missing_assertion")
    client = _assertion_client(query_client, assertion, form.get("client_id"))
    settings = services.settings
    verify_client_assertion(assertion, client, issuer=settings.issuer,
                            token_endpoint=settings.token_endpoint, store=services.store,
                            jwks_cache=services.jwks_cache, now=req.now)
    return client


class ClientAssertionReplayedError(InvalidClientError):
    """The assertion's (client, jti) was already spent, here or at any other endpoint."""


def verify_client_assertion(
    assertion: str, client: OAuthClient, *, issuer: str, token_endpoint: str, store: Store,
    jwks_cache: JwksCache, now: int,
) -> dict[str, Any]:
    """The one private_key_jwt verifier (RFC 7523 §3): signed by one of `client`'s registered
    keys, the claim checks below, and spent (JWTB-05) in one replay namespace wherever it is
    presented: client authentication at any endpoint, or an edge's `actor_token` naming the
    agent. Returns the claims; raises `InvalidClientError` (`ClientAssertionReplayedError` for
    a second use).
    """
    keys = _client_keys(client, jwks_cache)
    claims = _verify_client_assertion(assertion, keys, client, jwks_cache)
    check_client_assertion_claims(claims, client=client, issuer=issuer,
                                  token_endpoint=token_endpoint, now=now)
    # One use per (client, jti) within the assertion's lifetime.
    ttl = int(claims["exp"]) - now + JWT_LEEWAY
    key = "client-assertion:" + hashlib.sha256(
        json.dumps([client.client_id, claims["jti"]]).encode()
    ).hexdigest()
    if not store.add_if_absent(key, ttl=max(ttl, 1)):
        raise ClientAssertionReplayedError("client_assertion was already used",
                                           reason="client_assertion_replayed")
    return claims


def _assertion_client(
    query_client: Callable[[str], OAuthClient | None], assertion: str, client_id: str | None
) -> OAuthClient:
    try:
        from joserfc import jws

        payload = json.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError, TypeError) as e:
        raise InvalidClientError("Malformed client_assertion",
                                 reason="client_assertion_malformed") from e
    sub = payload.get("sub") if isinstance(payload, dict) else None
    if not isinstance(sub, str) or (client_id is not None and client_id != sub):
        raise InvalidClientError("client_assertion sub does not name the client",
                                 reason="client_assertion_sub_mismatch")
    client = query_client(sub)
    if client is None or client.row.token_endpoint_auth_method != "private_key_jwt":
        raise InvalidClientError("Client authentication failed",
                                 reason="client_auth_unknown_client" if client is None
                                 else "client_auth_wrong_method")
    return client


#: Registered `jwks` documents imported, by their exact content (canonical JSON): a client's
#: changed keys are another entry, never the old one's answer. Bounded; imports that fail are
#: not kept (the error is raised again each time).
IMPORTED_JWKS_MAX = 256


@functools.lru_cache(maxsize=IMPORTED_JWKS_MAX)
def _imported_jwks(document: str) -> KeySet:
    return KeySet.import_key_set(json.loads(document))


def _client_keys(client: OAuthClient, cache: JwksCache) -> KeySet:
    md = client.row.client_metadata
    try:
        if "jwks" in md:
            return _imported_jwks(json.dumps(md["jwks"], sort_keys=True, separators=(",", ":")))
        uri = md["jwks_uri"]
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise InvalidClientError("Client authentication failed",
                                 debug=f"client keys: {type(e).__name__}",
                                 reason="client_keys_unusable") from e
    return cache.get(uri)


def _verify_client_assertion(
    assertion: str, keys: KeySet, client: OAuthClient, cache: JwksCache
) -> dict[str, Any]:
    try:
        return dict(jwt.decode(assertion, keys, algorithms=list(CLIENT_ASSERTION_ALGS)).claims)
    except (JoseError, ValueError, TypeError) as e:
        if "jwks_uri" in client.row.client_metadata:  # the client may have rotated its keys
            try:
                fresh = cache.get(client.row.client_metadata["jwks_uri"], refresh=True)
                return dict(
                    jwt.decode(assertion, fresh, algorithms=list(CLIENT_ASSERTION_ALGS)).claims
                )
            except (JoseError, ValueError, TypeError):
                pass
        raise InvalidClientError("client_assertion signature is invalid",
                                 reason="client_assertion_bad_signature") from e


def check_client_assertion_claims(
    claims: dict[str, Any], *, client: OAuthClient, issuer: str, token_endpoint: str, now: int
) -> None:
    """RFC 7523 §3 claim checks; raises `InvalidClientError` (§3.2)."""
    cid = client.client_id
    if claims.get("iss") != cid or claims.get("sub") != cid:
        raise InvalidClientError("client_assertion iss and sub must be the client_id",
                                 reason="client_assertion_wrong_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    accepted = {issuer}
    if client.row.attributes.get("legacy_token_endpoint_aud"):
        accepted.add(token_endpoint)
    # rfc7523bis: the audience is our issuer identifier, as a single value.
    if not isinstance(audiences, list) or len(audiences) != 1 or audiences[0] not in accepted:
        raise InvalidClientError("client_assertion aud must be the issuer identifier",
                                 reason="client_assertion_wrong_audience")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not isinstance(exp, int) or exp <= now - JWT_LEEWAY:
        raise InvalidClientError("client_assertion is expired",
                                 reason="client_assertion_expired")
    if exp > now + CLIENT_ASSERTION_MAX_AGE + JWT_LEEWAY:
        raise InvalidClientError("client_assertion lifetime is too long",
                                 reason="client_assertion_too_long_lived")
    if iat is not None and (not isinstance(iat, int) or iat > now + JWT_LEEWAY):
        raise InvalidClientError("client_assertion iat is in the future",
                                 reason="client_assertion_issued_in_future")
    if nbf is not None and (not isinstance(nbf, int) or nbf > now + JWT_LEEWAY):
        raise InvalidClientError("client_assertion is not yet valid",
                                 reason="client_assertion_not_yet_valid")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        raise InvalidClientError("client_assertion jti is required",
                                 reason="client_assertion_jti_missing")
