"""What every grant shares: DPoP binding (RFC 9449 §5), resource indicators (RFC 8707), the
token response (RFC 6749 §5.1) and scope checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from authserver.clients import OAuthClient
from authserver.dpop import DPoPProof, validate_proof
from authserver.errors import InvalidDpopProofError, InvalidScopeError, InvalidTargetError
from authserver.services import Services
from authserver.tokens import AccessToken
from authserver.urls import match_resource

TOKEN_RESPONSE_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                          ("Pragma", "no-cache")]


class GrantMixin:
    """Mixed into Authlib grant classes. `self.request` is Authlib's OAuth2Request carrying
    `now`, `db` (the request's Session) and `dpop_headers` (set by authorization_server)."""

    GRANT_TYPE: str
    request: Any
    server: Any

    @property
    def services(self) -> Services:
        return self.server.services

    @property
    def now(self) -> int:
        return int(self.request.now)

    @property
    def db(self) -> Session:
        return self.request.db

    # --- RFC 9449 §5 -------------------------------------------------------------------------

    def check_dpop(self, client: OAuthClient, *, required: bool = False,
                   grant_policy: bool = True) -> DPoPProof | None:
        """Validate the DPoP proof if one is sent; require one where client or grant says so.

        `grant_policy=False` skips the per-grant requirement (the edge mint binds its result to
        the agent's key, not to the caller's); a client's own `dpop_bound_access_tokens` holds.
        """
        headers: list[str] = self.request.dpop_headers
        settings = self.services.settings
        required = (
            required
            or client.row.dpop_bound_access_tokens  # DPOP-23
            or (grant_policy and self.GRANT_TYPE in settings.dpop_required_grants)
        )
        if not headers:
            if required:
                raise InvalidDpopProofError("DPoP proof required")
            return None
        nonce_required = settings.dpop_nonce == "all" or (
            settings.dpop_nonce == "per_client" and bool(client.row.attributes.get("dpop_nonce"))
        )
        proof = validate_proof(
            headers,
            method="POST",
            url=settings.token_endpoint,
            now=self.now,
            store=self.services.store,
            nonces=self.services.nonces,
            nonce_required=nonce_required,
            window=settings.dpop_proof_window,
        )
        self.request.dpop = proof
        return proof

    # --- RFC 8707 ----------------------------------------------------------------------------

    def requested_resources(self) -> list[str]:
        """The requested resources as registered (RFC 3986 normalised comparison,
        `authserver.urls.normalize_resource`), so `aud` is always the registered form."""
        values: list[str] = self.request.payload.datalist.get("resource", [])
        for value in values:
            parts = urlsplit(value)
            if not parts.scheme or not parts.netloc or parts.fragment or "#" in value:
                raise InvalidTargetError("resource must be an absolute URI without a fragment")
        known = self.services.known_resources() if values else set()
        matched = [match_resource(value, known) for value in values]
        if any(m is None for m in matched):
            raise InvalidTargetError("The requested resource is not served by this server")
        return list(dict.fromkeys(m for m in matched if m is not None))

    def check_still_served(self, resources: list[str]) -> None:
        """A code's or grant's resources, used when the request names none: each must still be
        one we serve (a resource server removed since is `invalid_target` at once)."""
        known = self.services.known_resources() if resources else set()
        if any(match_resource(r, known) is None for r in resources):
            raise InvalidTargetError("The resource is no longer served by this server")

    def check_resource_servers(self, resources: list[str], scope: str | None) -> None:
        """What the admin-registered resource servers among `resources` require of the token
        (`authserver.resource_servers.check_token_request`): a DPoP proof for a DPoP-only
        resource, none for a Bearer-only one, a scope within theirs. Call it after
        `check_dpop`, before anything is written."""
        if not resources:
            return
        from authserver.resource_servers import check_token_request

        registered = self.services.resource_servers(resources)
        if registered:
            check_token_request(registered.values(),
                                bound=getattr(self.request, "dpop", None) is not None,
                                scope=scope)

    def audience_for(self, resources: list[str]) -> str | list[str]:
        # RFC 9068 §3: a token always has an audience; ours by default.
        if not resources:
            return self.services.settings.issuer
        return resources[0] if len(resources) == 1 else resources

    # --- scope -------------------------------------------------------------------------------

    def checked_scope(self, client: OAuthClient, requested: str | None, granted: str | None = None
                      ) -> str:
        """The requested scope, which must be supported, allowed to the client, and (when a
        grant exists) within what was granted (RFC 6749 §3.3, §6)."""
        scopes = (requested or "").split()
        supported = set(self.services.settings.scopes)
        if any(s not in supported for s in scopes):
            raise InvalidScopeError("The requested scope is not supported")
        allowed = client.get_allowed_scope(" ".join(scopes)).split()
        if len(allowed) != len(scopes):
            raise InvalidScopeError("The requested scope is not allowed for this client")
        if granted is not None and not set(scopes) <= set(granted.split()):
            raise InvalidScopeError("The requested scope exceeds the granted scope")
        return " ".join(scopes)

    # --- RFC 6749 §5.1 -----------------------------------------------------------------------

    def token_response(
        self, token: AccessToken, *, refresh_token: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
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
        self.request.issued = token
        return 200, body, list(TOKEN_RESPONSE_HEADERS)
