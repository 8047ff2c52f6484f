"""What every grant shares: its shape (`Grant`, `Issued`), DPoP binding (RFC 9449 §5), resource
indicators (RFC 8707), scope checks and the token response body (RFC 6749 §5.1). Each helper
takes what it reads as arguments: nothing is kept on the request."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from authserver.clients import OAuthClient
from authserver.dpop import DPoPProof, validate_proof
from authserver.errors import (
    InvalidDpopProofError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    UseDpopNonceError,
)
from authserver.services import Services
from authserver.token_endpoint.request import TokenRequest
from authserver.tokens import AccessToken
from authserver.urls import match_resource


@dataclass(frozen=True)
class Issued:
    """What a grant issued: the token response body, and the access token we signed (None
    when the body carries another party's token: the executor's platform token)."""

    body: dict[str, Any]
    token: AccessToken | None = None


class Grant(ABC):
    """A token-endpoint grant. The pipeline (authserver.token_endpoint.pipeline) drops every
    parameter outside `PARAMETERS`, authenticates the client with one of `AUTH_METHODS`,
    refuses a client not registered for `GRANT_TYPE` with `NOT_ALLOWED`, then calls `issue`."""

    GRANT_TYPE: ClassVar[str]
    #: The parameters the grant reads, beyond grant_type and client authentication's.
    PARAMETERS: ClassVar[frozenset[str]]
    AUTH_METHODS: ClassVar[tuple[str, ...]]
    NOT_ALLOWED: ClassVar[str] = "The client may not use this grant type"

    @abstractmethod
    def issue(self, services: Services, req: TokenRequest, client: OAuthClient) -> Issued:
        """The grant's named checks, each raising one typed error, then what it issues."""

    def refused(self, services: Services, req: TokenRequest, client: OAuthClient | None,
                error: Exception) -> None:
        """A refusal before `issue` ran (a throttle, client authentication, the client's grant
        types); `client` is None unless it authenticated. Nothing to audit by default."""
        return None


# --- RFC 9449 §5 -------------------------------------------------------------------------------


def check_dpop(services: Services, req: TokenRequest, client: OAuthClient, *,
               grant_type: str | None, required: bool = False) -> DPoPProof | None:
    """Validate the DPoP proof if one is sent; require one where the client, the grant or the
    caller says so. `grant_type` None skips the per-grant requirement (the edge mint binds its
    result to the agent's key, not to the caller's); a client's `dpop_bound_access_tokens`
    holds regardless."""
    settings = services.settings
    required = (
        required
        or client.row.dpop_bound_access_tokens  # DPOP-23
        or (grant_type is not None and grant_type in settings.dpop_required_grants)
    )
    if not req.dpop:
        if required:
            raise InvalidDpopProofError("DPoP proof required", reason="dpop_proof_required")
        return None
    nonce_required = settings.dpop_nonce == "all" or (
        settings.dpop_nonce == "per_client" and bool(client.row.attributes.get("dpop_nonce"))
    )
    try:
        return validate_proof(
            req.dpop,
            method="POST",
            url=settings.token_endpoint,
            now=req.now,
            store=services.store,
            nonces=services.nonces,
            nonce_required=nonce_required,
            window=settings.dpop_proof_window,
        )
    except InvalidDpopProofError as e:  # which check failed is its description
        e.with_reason("dpop_proof_invalid")
        raise
    except UseDpopNonceError as e:
        e.with_reason("dpop_nonce_missing" if e.missing else "dpop_nonce_invalid")
        raise


# --- RFC 8707 ----------------------------------------------------------------------------------


def requested_resources(services: Services, req: TokenRequest) -> list[str]:
    """The requested resources as registered (RFC 3986 normalised comparison,
    `authserver.urls.normalize_resource`), so `aud` is always the registered form."""
    values = req.form.getlist("resource")
    for value in values:
        parts = urlsplit(value)
        if not parts.scheme or not parts.netloc or parts.fragment or "#" in value:
            raise InvalidTargetError("resource must be an absolute URI without a fragment",
                                     reason="resource_malformed")
    known = services.known_resources() if values else set()
    matched = [match_resource(value, known) for value in values]
    if any(m is None for m in matched):
        raise InvalidTargetError("The requested resource is not served by this server",
                                 reason="resource_unknown")
    return list(dict.fromkeys(m for m in matched if m is not None))


def check_still_served(services: Services, resources: list[str]) -> None:
    """A code's or grant's resources, used when the request names none: each must still be one
    we serve (a resource server removed since is `invalid_target` at once)."""
    known = services.known_resources() if resources else set()
    if any(match_resource(r, known) is None for r in resources):
        raise InvalidTargetError("The resource is no longer served by this server",
                                 reason="resource_no_longer_served")


def check_resource_servers(services: Services, resources: list[str], scope: str | None, *,
                           bound: bool) -> None:
    """What the admin-registered resource servers among `resources` require of the token
    (`authserver.resource_servers.check_token_request`): a DPoP proof for a DPoP-only resource
    (`bound`: the request carried a valid one), none for a Bearer-only one, a scope within
    theirs. Call it after `check_dpop`, before anything is written."""
    if not resources:
        return
    from authserver.resource_servers import check_token_request

    registered = services.resource_servers(resources)
    if registered:
        try:
            check_token_request(registered.values(), bound=bound, scope=scope)
        except InvalidDpopProofError as e:
            e.with_reason("resource_requires_dpop")
            raise
        except InvalidScopeError as e:
            e.with_reason("resource_scope_not_served")
            raise
        except OAuthError as e:  # invalid_request: a DPoP proof for a Bearer-only resource
            e.with_reason("resource_requires_bearer")
            raise


def audience_for(services: Services, resources: list[str]) -> str | list[str]:
    # RFC 9068 §3: a token always has an audience; ours by default.
    if not resources:
        return services.settings.issuer
    return resources[0] if len(resources) == 1 else resources


# --- scope -------------------------------------------------------------------------------------


def checked_scope(services: Services, client: OAuthClient, requested: str | None,
                  granted: str | None = None) -> str:
    """The requested scope, which must be supported, allowed to the client, and (when a grant
    exists) within what was granted (RFC 6749 §3.3, §6)."""
    scopes = (requested or "").split()
    supported = set(services.settings.scopes)
    if any(s not in supported for s in scopes):
        raise InvalidScopeError("The requested scope is not supported",
                                reason="scope_unsupported")
    allowed = client.get_allowed_scope(" ".join(scopes)).split()
    if len(allowed) != len(scopes):
        raise InvalidScopeError("The requested scope is not allowed for this client",
                                reason="scope_not_allowed")
    if granted is not None and not set(scopes) <= set(granted.split()):
        raise InvalidScopeError("The requested scope exceeds the granted scope",
                                reason="scope_exceeds_grant")
    return " ".join(scopes)


# --- RFC 6749 §5.1 -----------------------------------------------------------------------------


def issued(token: AccessToken, *, refresh_token: str | None = None,
           extra: dict[str, Any] | None = None) -> Issued:
    """The success response body for `token` we signed."""
    body: dict[str, Any] = {
        "access_token": token.value,
        "token_type": token.token_type,
        "expires_in": token.expires_in,
    }
    if token.claims.get("scope"):
        body["scope"] = token.claims["scope"]
    if refresh_token:
        body["refresh_token"] = refresh_token
    if token.claims.get("authorization_details"):
        body["authorization_details"] = token.claims["authorization_details"]
    body.update(extra or {})
    return Issued(body, token)
