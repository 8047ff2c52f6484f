"""OAuth endpoints: token, introspection, revocation, registration, JWKS, metadata."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, g, json, request

from authserver import introspection
from authserver.clients import (
    SUPPORTED_GRANT_TYPES,
    register_client,
    registration_response,
    validate_client_metadata,
)
from authserver.errors import (
    InvalidClientMetadataError,
    InvalidRequestError,
    InvalidTokenError,
    OAuthError,
)
from authserver.metadata import authorization_server_metadata, compact
from authserver.observability import TOKEN_REJECTIONS, TOKENS_ISSUED
from authserver.ratelimit import REGISTER
from authserver.services import Services

bp = Blueprint("oauth", __name__)

INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
REVOCATION_AUTH_METHODS = [*INTROSPECTION_AUTH_METHODS, "none"]


def services() -> Services:
    return current_app.extensions["authserver"]


def _json(body: Any, status: int = 200, *, no_store: bool = True) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    if no_store:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/token")
def token() -> Any:
    server = current_app.extensions["authserver.oauth"]
    grant_type = request.form.get("grant_type", "")
    grant_label = grant_type if grant_type in SUPPORTED_GRANT_TYPES else "other"
    try:
        response = server.create_token_response()
    except OAuthError as error:
        TOKEN_REJECTIONS.labels(grant_type=grant_label, error=error.error).inc()
        raise
    issued = getattr(g.get("oauth_request"), "issued", None)
    TOKENS_ISSUED.labels(grant_type=grant_label,
                         token_type=issued.token_type if issued else "other").inc()
    nonces = services().nonces
    if services().settings.dpop_nonce != "off" and nonces is not None:
        # RFC 9449 §8.2: push a fresh nonce with every successful response.
        response.headers["DPoP-Nonce"] = nonces.issue(g.now)
    return response


def _authenticate(methods: list[str], endpoint: str) -> Any:
    server = current_app.extensions["authserver.oauth"]
    oauth_request = server.create_oauth2_request(None)
    try:
        return server.authenticate_client(oauth_request, methods, endpoint)
    except Exception as e:
        from authlib.oauth2.rfc6749 import OAuth2Error

        from authserver.authorization_server import from_authlib

        if isinstance(e, OAuth2Error):
            raise from_authlib(e) from e
        raise


@bp.post("/introspect")
def introspect() -> Response:
    client = _authenticate(INTROSPECTION_AUTH_METHODS, "introspection")
    token = request.form.get("token")
    if not token:
        raise InvalidRequestError("Missing token")
    s = services()
    body = introspection.introspect(g.db, s.keyring, s.settings.issuer, client.row, token,
                                    now=g.now)
    return _json(body)


@bp.post("/revoke")
def revoke() -> Response:
    client = _authenticate(REVOCATION_AUTH_METHODS, "revocation")
    token = request.form.get("token")
    if not token:
        raise InvalidRequestError("Missing token")
    s = services()
    introspection.revoke(g.db, s.keyring, s.settings.issuer, client.row, token, now=g.now)
    return _json({})


@bp.post("/register")
def register() -> Response:
    s = services()
    s.rate_limiter.hit(REGISTER, request.remote_addr or "unknown", now=g.now)
    expected = s.settings.registration_token
    if expected:
        # RFC 7591 §3: an initial access token, presented as a Bearer token.
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise InvalidTokenError(scheme="Bearer", challenge_only=True)
        if not hmac.compare_digest(value.encode(), expected.encode()):
            raise InvalidTokenError("Invalid initial access token", scheme="Bearer")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidClientMetadataError("The request body must be a JSON object")
    metadata = validate_client_metadata(body, scopes=s.settings.scopes)
    # Marked, so the user pages can say that nobody checked its name or domain.
    client, secret = register_client(g.db, metadata, now=g.now,
                                     attributes={"registration": "open"})
    return _json(registration_response(client, secret), 201)


@bp.get("/jwks.json")
def jwks() -> Response:
    response = _json(services().keyring.jwks(g.now), no_store=False)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata() -> Response:
    response = _json(compact(authorization_server_metadata(services())), no_store=False)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
