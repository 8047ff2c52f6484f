"""OAuth endpoints: token, introspection, revocation, registration, JWKS, metadata."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, g, json, request
from werkzeug.datastructures import Headers

from authserver import introspection
from authserver.client_auth import authenticate_client
from authserver.clients import (
    OAuthClient,
    register_client,
    registration_response,
    validate_client_metadata,
)
from authserver.errors import (
    InvalidClientMetadataError,
    InvalidRequestError,
    InvalidTokenError,
)
from authserver.http.unit_of_work import commit
from authserver.metadata import authorization_server_metadata, compact
from authserver.ratelimit import REGISTER
from authserver.services import Services
from authserver.token_endpoint import pipeline
from authserver.token_endpoint.parameters import check_body_parameters
from authserver.token_endpoint.request import Form, TokenRequest

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


def token_request() -> TokenRequest:
    """The request as the core reads it, built once: nothing below reads Flask's request."""
    return TokenRequest(
        form=Form(request.form.to_dict(flat=False)),
        query=Form(request.args.to_dict(flat=False)),
        authorization=request.headers.get("Authorization"),
        dpop=tuple(dpop_header_values(request.headers)),
        client_ip=request.remote_addr,
        now=g.now,
        db=g.db,
    )


def dpop_header_values(headers: Headers) -> list[str]:
    """Every `DPoP` header value. Servers join repeated headers with commas; a compact JWS
    never contains one, so splitting restores the repeats for the DPOP-01 check."""
    return [part.strip() for value in headers.getlist("DPoP") for part in value.split(",")]


@bp.post("/token")
def token() -> Response:
    s = services()
    result = pipeline.handle(s, token_request())
    response = Response(json.dumps(result.body), status=result.status,
                        headers=list(result.headers))
    if s.settings.dpop_nonce != "off" and s.nonces is not None:
        # RFC 9449 §8.2: push a fresh nonce with every successful response.
        response.headers["DPoP-Nonce"] = s.nonces.issue(g.now)
    commit()  # the token is issued only if what the request wrote (its audit record) commits
    return response


def _authenticate(methods: list[str]) -> OAuthClient:
    """The /introspect and /revoke client: the token endpoint's body checks and client
    authentication (no token-endpoint budgets)."""
    req = token_request()
    check_body_parameters(req)
    return authenticate_client(services(), req, methods)


@bp.post("/introspect")
def introspect() -> Response:
    client = _authenticate(INTROSPECTION_AUTH_METHODS)
    token = request.form.get("token")
    if not token:
        raise InvalidRequestError("Missing token")
    s = services()
    body = introspection.introspect(g.db, s.keyring, s.settings.issuer, client.row, token,
                                    now=g.now)
    return _json(body)


@bp.post("/revoke")
def revoke() -> Response:
    client = _authenticate(REVOCATION_AUTH_METHODS)
    token = request.form.get("token")
    if not token:
        raise InvalidRequestError("Missing token")
    s = services()
    introspection.revoke(g.db, s.keyring, s.settings.issuer, client.row, token, now=g.now)
    commit()
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
    commit()  # no secret is shown for a client that was not stored
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
