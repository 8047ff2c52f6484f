"""Clients: RFC 7591 registration, and the client as Authlib's method functions see it.

Secrets are 256-bit random values stored as SHA-256 digests and compared in constant time.
How a client authenticates (the methods of `AUTH_METHODS`) is `authserver.client_auth`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from authserver.errors import (
    InvalidClientMetadataError,
    InvalidRedirectUriError,
)
from authserver.jwks import JWKS_URI_MAX_BYTES, JwksCache  # noqa: F401 (re-exported)
from authserver.models import Client
from authserver.urls import is_https_or_loopback_url, is_loopback_http_url

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: RFC 7523 §2.1, for ID-JAGs (authserver/grants/jwt_bearer.py).
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SUPPORTED_GRANT_TYPES = (
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    GRANT_JWT_BEARER,
)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
CONFIDENTIAL_ONLY_GRANTS = (GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, GRANT_JWT_BEARER)
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_ALGS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
AUTHORIZATION_DETAILS_TYPES = ("agent_intent", "agent_mandate")
MAX_STRING = 512
MAX_REDIRECT_URIS = 20
CLIENT_ID_PREFIX = "cli_"  # distinct from user ids ("usr_…"): RFC 9068 §5, DCR-07

_STRING_FIELDS = ("client_name", "client_uri", "logo_uri", "tos_uri", "policy_uri",
                  "software_id", "software_version", "scope")


def hash_secret(secret: str) -> str:
    """SHA-256 of a client secret. Secrets are server-generated with 256 bits of entropy, so a
    slow password hash buys nothing; the digest is all a database dump yields."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ClientRecord(Protocol):
    """What is read of a client: a `Client` row, or its cached, read-only snapshot
    (`authserver.client_cache.ClientSnapshot`)."""

    @property
    def client_id(self) -> str: ...
    @property
    def secret_hash(self) -> str | None: ...
    @property
    def token_endpoint_auth_method(self) -> str: ...
    @property
    def client_metadata(self) -> Mapping[str, Any]: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...
    @property
    def client_id_issued_at(self) -> int: ...
    @property
    def redirect_uris(self) -> list[str]: ...
    @property
    def grant_types(self) -> list[str]: ...
    @property
    def dpop_bound_access_tokens(self) -> bool: ...
    @property
    def is_public(self) -> bool: ...


def secret_matches(client: ClientRecord, presented: str) -> bool:
    if not client.secret_hash:
        return False
    return hmac.compare_digest(client.secret_hash, hash_secret(presented))


# --- RFC 7591 registration ---------------------------------------------------------------------


def is_acceptable_redirect_uri(uri: str) -> bool:
    """https, http on a loopback address (RFC 8252 §7.3), or a private-use scheme (§7.1)."""
    if not isinstance(uri, str) or len(uri) > 2048 or "#" in uri:
        return False
    parts = urlsplit(uri)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme == "http":
        return is_loopback_http_url(uri)
    # RFC 8252 §7.1: reverse-DNS private-use schemes only.
    return "." in parts.scheme and parts.scheme.replace(".", "").replace("-", "").isalnum()


def _loopback_without_port(uri: str) -> str | None:
    """`uri` with its port removed if it is an http URI on `localhost`, 127.0.0.1 or [::1]
    (authserver.urls: exact names, no userinfo), else None. The host is kept, lower-cased:
    only the port may vary (RFC 8252 §7.3; `localhost` as well, as native apps use it)."""
    if not is_loopback_http_url(uri) or "#" in uri:
        return None
    parts = urlsplit(uri)
    if parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        return None
    host = "[::1]" if parts.hostname == "::1" else parts.hostname
    return parts._replace(netloc=host).geturl()


def validate_client_metadata(raw: Mapping[str, Any], *, scopes: tuple[str, ...]) -> dict[str, Any]:
    """Validate and normalise registration metadata; unknown members are dropped (RFC 7591 §2).

    Raises `InvalidRedirectUriError` / `InvalidClientMetadataError` (RFC 7591 §3.2.2).
    """
    if not isinstance(raw, Mapping):
        raise InvalidClientMetadataError("Client metadata must be a JSON object")
    md: dict[str, Any] = {}

    method = raw.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidClientMetadataError("Unsupported token_endpoint_auth_method")
    md["token_endpoint_auth_method"] = method

    grant_types = raw.get("grant_types", [GRANT_AUTHORIZATION_CODE])
    if (not isinstance(grant_types, list) or not grant_types
            or any(g not in SUPPORTED_GRANT_TYPES for g in grant_types)):
        raise InvalidClientMetadataError("Unsupported grant_types")
    if method == "none" and any(g in CONFIDENTIAL_ONLY_GRANTS for g in grant_types):
        raise InvalidClientMetadataError("Public clients cannot use this grant type")
    md["grant_types"] = list(dict.fromkeys(grant_types))

    response_types = raw.get(
        "response_types", ["code"] if GRANT_AUTHORIZATION_CODE in grant_types else []
    )
    if not isinstance(response_types, list) or any(r != "code" for r in response_types):
        raise InvalidClientMetadataError("Only response_type code is supported")
    if bool(response_types) != (GRANT_AUTHORIZATION_CODE in grant_types):
        raise InvalidClientMetadataError("grant_types and response_types are inconsistent")
    md["response_types"] = response_types

    redirect_uris = raw.get("redirect_uris", [])
    if not isinstance(redirect_uris, list) or len(redirect_uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUriError("redirect_uris must be a list of URIs")
    for uri in redirect_uris:
        if not is_acceptable_redirect_uri(uri):
            raise InvalidRedirectUriError("Redirect URIs must be https, loopback http or a "
                                          "private-use scheme, without a fragment")
    if GRANT_AUTHORIZATION_CODE in grant_types and not redirect_uris:
        raise InvalidRedirectUriError("authorization_code clients need redirect_uris")
    md["redirect_uris"] = redirect_uris

    if "jwks" in raw and "jwks_uri" in raw:
        raise InvalidClientMetadataError("jwks and jwks_uri are mutually exclusive")
    if "jwks" in raw:
        md["jwks"] = _public_jwks(raw["jwks"])
    if "jwks_uri" in raw:
        uri = raw["jwks_uri"]
        if not isinstance(uri, str) or len(uri) > 2048 or "#" in uri \
                or not is_https_or_loopback_url(uri):
            raise InvalidClientMetadataError("jwks_uri must be an https URL")
        md["jwks_uri"] = uri
    if method == "private_key_jwt" and "jwks" not in md and "jwks_uri" not in md:
        raise InvalidClientMetadataError("private_key_jwt needs jwks or jwks_uri")

    for name in _STRING_FIELDS:
        if name in raw:
            if not isinstance(raw[name], str) or len(raw[name]) > MAX_STRING:
                raise InvalidClientMetadataError(f"{name} must be a short string")
            md[name] = raw[name]
    if "scope" in md and not set(md["scope"].split()) <= set(scopes):
        raise InvalidClientMetadataError("scope lists an unsupported scope")
    if "contacts" in raw:
        if not isinstance(raw["contacts"], list) or not all(
            isinstance(c, str) and len(c) <= MAX_STRING for c in raw["contacts"]
        ):
            raise InvalidClientMetadataError("contacts must be a list of strings")
        md["contacts"] = raw["contacts"]
    if "dpop_bound_access_tokens" in raw:
        if not isinstance(raw["dpop_bound_access_tokens"], bool):
            raise InvalidClientMetadataError("dpop_bound_access_tokens must be a boolean")
        md["dpop_bound_access_tokens"] = raw["dpop_bound_access_tokens"]
    if "authorization_details_types" in raw:
        types = raw["authorization_details_types"]
        if not isinstance(types, list) or any(t not in AUTHORIZATION_DETAILS_TYPES for t in types):
            raise InvalidClientMetadataError("Unsupported authorization_details_types")
        md["authorization_details_types"] = types
    if "application_type" in raw:
        if raw["application_type"] not in ("web", "native"):
            raise InvalidClientMetadataError("application_type must be web or native")
        md["application_type"] = raw["application_type"]
    return md


def _public_jwks(value: Any) -> dict[str, Any]:
    try:
        keyset = KeySet.import_key_set(value)
    except (JoseError, ValueError, TypeError, KeyError) as e:
        raise InvalidClientMetadataError("jwks is not a valid JWK Set") from e
    if any(key.is_private for key in keyset.keys) or any(
        k.get("kty") == "oct" for k in value.get("keys", [])
    ):
        raise InvalidClientMetadataError("jwks must hold public keys only")
    return {"keys": [key.as_dict(private=False) for key in keyset.keys]}


def register_client(
    session: Session,
    metadata: dict[str, Any],
    *,
    now: int,
    attributes: dict[str, Any] | None = None,
) -> tuple[Client, str | None]:
    """Create a client from validated metadata. Returns it and its secret (shown once)."""
    client_id = CLIENT_ID_PREFIX + secrets.token_urlsafe(16)
    method = metadata["token_endpoint_auth_method"]
    secret = (
        secrets.token_urlsafe(32)
        if method in ("client_secret_basic", "client_secret_post")
        else None
    )
    client = Client(
        client_id=client_id,
        secret_hash=hash_secret(secret) if secret else None,
        token_endpoint_auth_method=method,
        client_metadata=metadata,
        attributes=dict(attributes or {}),
        client_id_issued_at=now,
    )
    session.add(client)
    session.flush()
    return client, secret


def registration_response(client: Client, secret: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": client.client_id_issued_at,
        **client.client_metadata,
    }
    if secret:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    return body


# --- Authlib client adapter ---------------------------------------------------------------------


class OAuthClient(ClientMixin):
    """Authlib's view of a client (a `Client` row, or its cached snapshot)."""

    def __init__(self, row: ClientRecord) -> None:
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        allowed = set((self.row.client_metadata.get("scope") or "").split())
        if not allowed:
            return scope
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 §4.1.3: exact string comparison, except the port of a loopback redirect
        # URI (127.0.0.1, [::1], localhost), which native apps pick at run time (RFC 8252 §7.3).
        if redirect_uri in self.row.redirect_uris:
            return True
        presented = _loopback_without_port(redirect_uri)
        return presented is not None and any(
            _loopback_without_port(uri) == presented for uri in self.row.redirect_uris
        )

    def check_client_secret(self, client_secret: str) -> bool:
        return secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in (self.row.client_metadata.get("response_types") or [])

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types
