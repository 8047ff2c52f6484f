"""The token endpoint (RFC 6749 §3.2): one request through a fixed list of named steps.

`handle` runs, in this order: the body checks, the grant's selection, the grant's parameter
allow-list, the per-address budget, client authentication (with the grant's methods), the
per-client budget, the client's grant types, the grant itself, then the response. Each step
raises one typed error (`authserver.errors`); the one error handler renders it. Rejections
and issued tokens are counted (TOKEN_REJECTIONS, TOKENS_ISSUED).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authserver.client_auth import authenticate_client
from authserver.clients import OAuthClient
from authserver.errors import (
    InvalidRequestError,
    OAuthError,
    RateLimitedError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from authserver.grants.authorization_code import AuthorizationCodeGrant
from authserver.grants.base import Grant, Issued
from authserver.grants.client_credentials import ClientCredentialsGrant
from authserver.grants.jwt_bearer import JwtBearerGrant
from authserver.grants.refresh_token import RefreshTokenGrant
from authserver.grants.token_exchange import TokenExchangeGrant
from authserver.observability import TOKEN_REJECTIONS, TOKENS_ISSUED
from authserver.ratelimit import TOKEN, TOKEN_ADDRESS
from authserver.services import Services
from authserver.store.keys import registry_generation
from authserver.token_endpoint.parameters import check_body_parameters, restrict_parameters
from authserver.token_endpoint.request import TokenRequest

GRANTS: dict[str, Grant] = {grant.GRANT_TYPE: grant for grant in (
    ClientCredentialsGrant(), AuthorizationCodeGrant(), RefreshTokenGrant(),
    TokenExchangeGrant(), JwtBearerGrant(),
)}

#: RFC 6749 §5.1: a token response is JSON and is never cached.
TOKEN_RESPONSE_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                          ("Pragma", "no-cache"))


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...]


def handle(services: Services, req: TokenRequest) -> TokenResponse:
    """The token response to `req`, or the typed error that refuses it, counted either way."""
    label = metric_label(req)
    try:
        result = run_steps(services, req)
    except OAuthError as error:
        TOKEN_REJECTIONS.labels(grant_type=label, error=error.error).inc()
        raise
    TOKENS_ISSUED.labels(grant_type=label,
                         token_type=result.token.token_type if result.token else "other").inc()
    return TokenResponse(200, result.body, TOKEN_RESPONSE_HEADERS)


def run_steps(services: Services, req: TokenRequest) -> Issued:
    check_body_parameters(req)
    grant = select_grant(req)
    req = restrict_parameters(req, grant.PARAMETERS)
    client: OAuthClient | None = None
    try:
        generation = throttle_address(services, req)
        authenticated = authenticate_client(services, req, grant.AUTH_METHODS,
                                            generation=generation)
        throttle_client(services, req, authenticated)
        client = authenticated
        check_grant_type_allowed(grant, client)
    except Exception as error:
        # The exchange and ID-JAG grants audit every refusal, a failed authentication too.
        grant.refused(services, req, client, error)
        raise
    return grant.issue(services, req, client)


# --- the steps ---------------------------------------------------------------------------------


def select_grant(req: TokenRequest) -> Grant:
    """RFC 6749 §5.2: a missing grant_type is a missing parameter (`invalid_request`); one we
    do not serve (the password grant among them, BCP-04) is `unsupported_grant_type`."""
    grant_type = req.form.get("grant_type")
    if not grant_type:
        raise InvalidRequestError("Missing grant_type", reason="grant_type_missing")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantTypeError(reason="grant_type_unsupported")
    return grant


def throttle_address(services: Services, req: TokenRequest) -> str | None:
    """The per-address budget, spent before client authentication (429 `rate_limited`).

    The same store round trip reads the client registry's generation, which client
    authentication needs next (authserver.client_cache): returned, for it.
    """
    try:
        (stored,) = services.rate_limiter.hit(TOKEN_ADDRESS, req.client_ip or "unknown",
                                              now=req.now, read=(registry_generation(),))
    except RateLimitedError as e:
        e.with_reason("rate_limited_address")
        raise
    return services.registry.generation_from(stored)


def throttle_client(services: Services, req: TokenRequest, client: OAuthClient) -> None:
    """The per-client budget, spent only once the client authenticated: nobody can spend
    another client's budget by presenting its id (429 `rate_limited`)."""
    try:
        services.rate_limiter.hit(TOKEN, client.client_id, now=req.now)
    except RateLimitedError as e:
        e.with_reason("rate_limited_client")
        raise


def check_grant_type_allowed(grant: Grant, client: OAuthClient) -> None:
    """RFC 6749 §5.2: a client uses only the grant types it registered."""
    if not client.check_grant_type(grant.GRANT_TYPE):
        raise UnauthorizedClientError(grant.NOT_ALLOWED, reason="grant_type_not_allowed")


def metric_label(req: TokenRequest) -> str:
    """The grant_type label of the counters: one of ours, or "other" (bounded cardinality)."""
    grant_type = req.form.get("grant_type", "")
    return grant_type if grant_type in GRANTS else "other"
