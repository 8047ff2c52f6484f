"""RFC 7523 §2.1 jwt-bearer grant, for ID-JAGs only (Cross-App Access).

draft-ietf-oauth-identity-assertion-authz-grant §4.4: a confidential client presents an
Identity Assertion JWT Authorization Grant that a corporate IdP configured `id_jag = true`
issued for this server, and receives a token for the user the grant names (mapped from
`iss` + `sub` exactly as sign-in maps it, tenant binding included).

With no `resource`, or `resource` = this server, the result is a *user assertion*: for this
server, DPoP-bound to the caller's key (a proof is then required), carrying the
`agent_mandate` the IdP put in the grant's `authorization_details` (none: every intent is
denied by policy), so the agent exchanges it with an intent like an edge-minted one. Gateway
resources are refused: capability tokens come only from the intent exchange.

Every failed check of the assertion is `invalid_grant` (RFC 7523 §3.1); the grant is spent
(`jti`, shared store) only as the last check, so a request refused earlier may be corrected.
Every outcome is audited (event `id_jag`) with the request's correlation id.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error as AuthlibError
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin

from authserver.audit import AuditRecord, refused_unauthenticated
from authserver.authorization_server import from_authlib
from authserver.clients import GRANT_JWT_BEARER, OAuthClient
from authserver.errors import (
    InvalidAuthorizationDetailsError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidTargetError,
    OAuthError,
    UnauthorizedClientError,
)
from authserver.grants.base import GrantMixin
from authserver.identity.federation import IdentityError, IdPConfig
from authserver.intent import MANDATE_TYPE, parse_mandate
from authserver.models import User
from authserver.observability import correlation_id
from authserver.tokens import AccessToken, TokenRequestContext, issue_access_token

#: Longest `assertion` parameter read (an ID-JAG is an ID-token-sized JWT).
MAX_ASSERTION_LENGTH = 16 * 1024


class JwtBearerGrant(GrantMixin, BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = GRANT_JWT_BEARER
    # draft §7.1: confidential clients only.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self) -> None:
        """Everything happens in `create_token_response`, so that every refusal is audited."""

    def create_token_response(self) -> Any:
        self.request.id_jag_client = None
        self.request.id_jag_user_id = None
        try:
            client = self.authenticate_token_endpoint_client()
            self.request.id_jag_client = client
            if not client.check_grant_type(self.GRANT_TYPE):
                raise UnauthorizedClientError("The client may not use this grant type")
            body = self._grant(client)
        except AuthlibError as authlib_error:
            error = from_authlib(authlib_error)
            self._audit_failure(error)
            raise error from authlib_error
        except OAuthError as error:
            self._audit_failure(error)
            raise
        except Exception:
            self._audit_failure(None)
            raise
        return body

    def _grant(self, client: OAuthClient) -> Any:
        assertion = self.check_assertion_parameter()
        config, claims = self.check_id_jag(assertion)
        self.check_client(client, claims)
        resources = self.check_resources(claims)
        audience = self.audience_for(resources)
        user_assertion = audience == self.services.settings.issuer
        scope = self.check_scope(client, claims)
        mandate = self.check_mandate(claims)
        user = self.check_user(config, claims)
        # IDJAG-06: a user assertion is always bound to the caller's key, like the edge mint's.
        proof = self.check_dpop(client, required=user_assertion)
        self.check_resource_servers(resources, scope)
        # IDJAG-03, last check: a request refused above leaves the grant usable for a
        # corrected retry.
        try:
            self.services.federation.spend_id_jag(claims, now=self.now)
        except IdentityError as e:
            raise InvalidGrantError("The assertion is not acceptable", debug=e.debug) from e
        settings = self.services.settings
        if user_assertion:
            # TX-08 analogue: a user assertion outlives neither its lifetime nor the grant.
            ttl = max(1, min(settings.user_assertion_ttl, int(claims["exp"]) - self.now))
        else:
            ttl = settings.access_token_ttl
        token = issue_access_token(
            self.services.keyring, settings.issuer,
            TokenRequestContext(
                sub=user.id,
                client_id=client.client_id,
                audience=audience,
                scope=scope,
                ttl=ttl,
                jkt=proof.jkt if proof else None,
                act={"sub": client.client_id} if user_assertion else None,
                authorization_details=[mandate] if mandate and user_assertion else None,
                extra={"auth_time": claims.get("auth_time", claims["iat"])},
            ),
            now=self.now,
        )
        self._audit(self.db, outcome="allowed", reason=None, token=token,
                    detail={"issued": "user_assertion" if user_assertion else "access_token",
                            "idp": config.name})
        return self.token_response(token)

    # --- named checks ----------------------------------------------------------------------

    def check_assertion_parameter(self) -> str:
        assertion = self.request.form.get("assertion")
        if not assertion:
            raise InvalidRequestError("assertion is required")
        if len(assertion) > MAX_ASSERTION_LENGTH:
            raise InvalidRequestError("assertion is too large")
        return str(assertion)

    def check_id_jag(self, assertion: str) -> tuple[IdPConfig, dict[str, Any]]:
        """IDJAG-01..03: signature, typ, iss (an id_jag IdP), aud = our issuer, exp/iat, jti,
        client_id."""
        federation = self.services.federation
        if federation is None:
            raise InvalidGrantError("The assertion is not acceptable", debug="no idp configured")
        try:
            return federation.verify_id_jag(
                assertion, now=self.now, audience=self.services.settings.issuer)
        except IdentityError as e:
            # RFC 7523 §3.1: a bad assertion is invalid_grant; which check failed is debug.
            raise InvalidGrantError("The assertion is not acceptable", debug=e.debug) from e

    def check_client(self, client: OAuthClient, claims: dict[str, Any]) -> None:
        # IDJAG-02 (draft §4.4.1): the client_id claim identifies the authenticated client.
        if claims["client_id"] != client.client_id:
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="client_id is not the authenticated client")

    def check_resources(self, claims: dict[str, Any]) -> list[str]:
        """IDJAG-04, RFC 8707 resources: those requested, each within the grant's `resource`,
        or else the grant's own. No gateway resource either way."""
        granted = claims.get("resource")
        granted_list = [granted] if isinstance(granted, str) else granted
        if granted_list is not None and (not isinstance(granted_list, list) or not all(
                isinstance(r, str) and r for r in granted_list)):
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="resource claim malformed")
        requested = self.requested_resources()
        issuer = self.services.settings.issuer
        if requested:
            # No resource in the grant: only this server (a user assertion) is granted.
            allowed = set(granted_list) if granted_list is not None else {issuer}
            if not set(requested) <= allowed:
                raise InvalidTargetError("The requested resource exceeds the grant")
            resources = requested
        else:
            resources = list(dict.fromkeys(granted_list or []))
            unknown = set(resources) - self.services.known_resources()
            if unknown:
                raise InvalidTargetError("The granted resource is not served by this server")
        if any(r.startswith(f"{issuer}/gateway/") for r in resources):
            raise InvalidTargetError("Gateway tokens are issued only for an intent")
        if resources == [issuer]:
            return []
        if issuer in resources:
            raise InvalidTargetError("A user assertion is only for this server")
        return resources

    def check_scope(self, client: OAuthClient, claims: dict[str, Any]) -> str:
        """IDJAG-04, RFC 6749 §3.3: a requested scope within the grant's (else invalid_scope); none
        requested: the grant's scopes this server supports and the client may have."""
        granted = claims.get("scope")
        if granted is not None and not isinstance(granted, str):
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="scope claim malformed")
        requested = self.request.form.get("scope")
        if requested is not None:
            return self.checked_scope(client, requested, granted=granted or "")
        supported = set(self.services.settings.scopes)
        wanted = [s for s in (granted or "").split() if s in supported]
        allowed = set(client.get_allowed_scope(" ".join(wanted)).split())
        return " ".join(s for s in wanted if s in allowed)

    def check_mandate(self, claims: dict[str, Any]) -> dict[str, Any] | None:
        """The IdP's `agent_mandate` (in the grant's `authorization_details`), if any. The
        request cannot add one: the agent is not the party that says what the user asked."""
        if self.request.form.get("authorization_details") is not None:
            raise InvalidRequestError("authorization_details come from the assertion only")
        details = claims.get("authorization_details")
        if details is None:
            return None
        if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="authorization_details malformed")
        mandates = [d for d in details if d.get("type") == MANDATE_TYPE]
        if not mandates:
            return None
        try:
            return parse_mandate(mandates).to_authorization_details()
        except InvalidAuthorizationDetailsError as e:
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug=f"mandate: {e.description}") from e

    def check_user(self, config: IdPConfig, claims: dict[str, Any]) -> User:
        """IDJAG-05: `iss` + `sub` to our user as sign-in does (JIT, tenant binding, deprovisioned
        users refused)."""
        from authserver.identity.users import provision_user

        try:
            user = provision_user(self.db, config, claims, now=self.now)
        except IdentityError as e:
            raise InvalidGrantError("The assertion is not acceptable", debug=e.debug) from e
        self.request.id_jag_user_id = user.id
        return user

    # --- audit -----------------------------------------------------------------------------

    def _audit_failure(self, error: OAuthError | None) -> None:
        self.db.rollback()
        outcome = "error" if error is None or error.error in (
            "server_error", "temporarily_unavailable") else "invalid"
        reason = error.error if error is not None else "server_error"
        if getattr(self.request, "id_jag_client", None) is None:
            # No authenticated client: counted, not appended (the chain's lock is not for
            # anonymous callers; issue 13, item 8).
            refused_unauthenticated("id_jag", reason)
            return
        detail: dict[str, Any] = {"error": reason}
        if error is not None and error.debug:
            detail["debug"] = str(error.debug)[:128]
        with self.services.db.session() as session:
            self._audit(session, outcome=outcome, reason=reason, token=None, detail=detail)

    def _audit(self, session: Any, *, outcome: str, reason: str | None,
               token: AccessToken | None, detail: dict[str, Any]) -> None:
        client = getattr(self.request, "id_jag_client", None)
        user_id = getattr(self.request, "id_jag_user_id", None)
        self.services.audit.append(session, AuditRecord(
            event="id_jag", outcome=outcome, reason=reason, correlation_id=correlation_id(),
            user_id=user_id,
            agent_id=client.client_id if client is not None else None,
            token_jti=token.jti if token else None,
            client_ip=getattr(self.request, "client_ip", None),
            detail={"client_id": client.client_id if client is not None else None, **detail},
        ), now=self.now)
