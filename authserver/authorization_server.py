"""Authlib's AuthorizationServer, wired to our store, clients and error hierarchy.

Authlib provides the token-endpoint plumbing (grant dispatch, client authentication registry);
every rule is ours. Authlib errors are re-raised as `authserver.errors` so exactly one handler
(authserver.http.errors) renders every error.
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Error as AuthlibError
from flask import g
from flask import request as flask_request

from authserver import errors
from authserver.cimd import find_client
from authserver.clients import (
    OAuthClient,
    check_basic_credentials,
    has_control_characters,
    make_private_key_jwt_authenticator,
)
from authserver.services import Services

_BY_CODE: dict[str, type[errors.OAuthError]] = {
    cls.error: cls
    for cls in (
        errors.InvalidRequestError,
        errors.InvalidClientError,
        errors.InvalidGrantError,
        errors.UnauthorizedClientError,
        errors.UnsupportedGrantTypeError,
        errors.InvalidScopeError,
        errors.AccessDeniedError,
        errors.UnsupportedResponseTypeError,
    )
}


def from_authlib(error: AuthlibError) -> errors.OAuthError:
    """Map an Authlib error to ours. Authlib descriptions are generic and safe to show."""
    cls = _BY_CODE.get(error.error or "", errors.ServerError)
    if cls is errors.ServerError:
        return errors.ServerError(debug=f"authlib {error.error}")
    if cls is errors.InvalidClientError:
        # One answer for every failure mode: never reveal whether a client id exists.
        return errors.InvalidClientError("Client authentication failed")
    description = error.description or None
    try:
        return cls(description)
    except ValueError:  # a description outside the RFC 6749 charset
        return cls()


#: RFC 8707 §2 / RFC 8693 §2.1: the only token-endpoint parameters that may repeat.
REPEATABLE_PARAMETERS = ("resource", "audience")


def check_parameters(query: Any, form: Any) -> None:
    """RFC 6749 §3.2: parameters go in the POST body, and none is sent more than once.

    Authlib reads some parameters from the query string and others from the body only, so a
    query parameter could silently override or shadow what the body says; refuse both.
    Raises `InvalidRequestError`.
    """
    if query:
        raise errors.InvalidRequestError("Parameters must be sent in the request body")
    for name in form:
        if name not in REPEATABLE_PARAMETERS and len(form.getlist(name)) > 1:
            raise errors.InvalidRequestError("A parameter was sent more than once")


def check_parameter_characters(*sources: Any) -> None:
    """Refuse, at the boundary, parameters no valid request carries (any route).

    A NUL in any parameter name or value (PostgreSQL refuses it in text, so it could only ever
    fail deeper down), and any control character in `client_id` (RFC 6749 §2.2: VSCHAR).
    `sources` are multi-dicts (query string, form). Raises `InvalidRequestError`.
    """
    for source in sources:
        for name, values in source.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                raise errors.InvalidRequestError("A parameter contains a NUL character")
            if name == "client_id" and any(has_control_characters(v) for v in values):
                raise errors.InvalidRequestError("client_id contains a control character")


class AuthorizationServer(FlaskAuthorizationServer):
    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self._query_client = self._load_client
        self.register_client_auth_method(
            "private_key_jwt",
            make_private_key_jwt_authenticator(
                issuer=services.settings.issuer,
                token_endpoint=services.settings.token_endpoint,
                store=services.store,
                jwks_cache=services.jwks_cache,
                now=lambda: int(g.now),
            ),
        )

    def _load_client(self, client_id: str) -> OAuthClient | None:
        if not isinstance(client_id, str) or len(client_id) > 255 \
                or has_control_characters(client_id):
            return None
        # A URL client id is fetched (CIMD); a refused document raises InvalidClientError.
        row = find_client(g.db, client_id, cimd=self.services.cimd, now=int(g.now))
        return OAuthClient(row) if row is not None else None

    def authenticate_client(self, request: Any, methods: Any, endpoint: str = "token") -> Any:
        """Authlib's client authentication between the token endpoint's two budgets (every
        grant authenticates here): per client address before, per client after. The client's
        is counted only once it has authenticated, so nobody can spend another client's
        budget by presenting its id. 429 `rate_limited` + Retry-After."""
        from authserver.ratelimit import TOKEN, TOKEN_ADDRESS

        limiter = self.services.rate_limiter
        if endpoint == "token":
            limiter.hit(TOKEN_ADDRESS, flask_request.remote_addr or "unknown", now=int(g.now))
        client = super().authenticate_client(request, methods, endpoint)
        if endpoint == "token":
            limiter.hit(TOKEN, client.get_client_id(), now=int(g.now))
        return client

    def save_token(self, token: Any, request: Any) -> None:
        """Grants persist what they issue themselves (grants, refresh tokens)."""

    def create_oauth2_request(self, request: Any) -> Any:
        check_parameters(flask_request.args, flask_request.form)
        check_parameter_characters(flask_request.args, flask_request.form)
        check_basic_credentials(flask_request.headers.get("Authorization"))
        req = super().create_oauth2_request(request)
        req.now = g.now
        req.db = g.db
        req.dpop_headers = dpop_header_values(flask_request.headers)
        req.client_ip = flask_request.remote_addr
        g.oauth_request = req
        return req

    def get_token_grant(self, request: Any) -> Any:
        # RFC 6749 §5.2: a missing required parameter is invalid_request; Authlib would say
        # unsupported_grant_type.
        if not request.payload.grant_type:
            raise errors.InvalidRequestError("Missing grant_type")
        return super().get_token_grant(request)

    def handle_error_response(self, request: Any, error: AuthlibError) -> Any:
        raise from_authlib(error) from error

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No Flask signals: we audit and count explicitly."""


def dpop_header_values(headers: Any) -> list[str]:
    """Every `DPoP` header value. Servers join repeated headers with commas; a compact JWS
    never contains one, so splitting restores the repeats for the DPOP-01 check."""
    return [part.strip() for value in headers.getlist("DPoP") for part in value.split(",")]
