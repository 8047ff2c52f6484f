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

from authserver.audit import AuditRecord, refused_unauthenticated
from authserver.clients import GRANT_JWT_BEARER, OAuthClient
from authserver.errors import (
    InvalidAuthorizationDetailsError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidTargetError,
    OAuthError,
)
from authserver.grants.base import (
    Grant,
    Issued,
    audience_for,
    check_dpop,
    check_resource_servers,
    checked_scope,
    issued,
    requested_resources,
)
from authserver.identity.federation import IdentityError, IdPConfig
from authserver.intent import MANDATE_TYPE, parse_mandate
from authserver.models import User
from authserver.observability import correlation_id
from authserver.services import Services
from authserver.token_endpoint.request import TokenRequest
from authserver.tokens import AccessToken, TokenRequestContext, issue_access_token

#: Longest `assertion` parameter read (an ID-JAG is an ID-token-sized JWT).
MAX_ASSERTION_LENGTH = 16 * 1024


class JwtBearerGrant(Grant):
    GRANT_TYPE = GRANT_JWT_BEARER
    PARAMETERS = frozenset({"assertion", "scope", "resource", "authorization_details"})
    # draft §7.1: confidential clients only.
    AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")

    def issue(self, services: Services, req: TokenRequest, client: OAuthClient) -> Issued:
        request = IdJagRequest(services, req, client)
        try:
            return request.grant(client)
        except Exception as error:
            request.audit_failure(error)
            raise

    def refused(self, services: Services, req: TokenRequest, client: OAuthClient | None,
                error: Exception) -> None:
        """Every outcome is audited, a failed client authentication too."""
        IdJagRequest(services, req, client).audit_failure(error)


class IdJagRequest:
    """One jwt-bearer request: its named checks, and what the audit records (the client once
    authenticated, the user once known)."""

    def __init__(self, services: Services, req: TokenRequest,
                 client: OAuthClient | None) -> None:
        self.services = services
        self.req = req
        self.client = client
        self.user_id: str | None = None

    def grant(self, client: OAuthClient) -> Issued:
        services, now = self.services, self.req.now
        assertion = self.check_assertion_parameter()
        config, claims = self.check_id_jag(assertion)
        self.check_client(client, claims)
        resources = self.check_resources(claims)
        audience = audience_for(services, resources)
        user_assertion = audience == services.settings.issuer
        scope = self.check_scope(client, claims)
        mandate = self.check_mandate(claims)
        user = self.check_user(config, claims)
        # IDJAG-06: a user assertion is always bound to the caller's key, like the edge mint's.
        proof = check_dpop(services, self.req, client, grant_type=GRANT_JWT_BEARER,
                           required=user_assertion)
        check_resource_servers(services, resources, scope, bound=proof is not None)
        # TX-08 analogue: a user assertion never outlives the grant it comes from. An ID-JAG
        # past its `exp` but within the verification leeway has no lifetime left to give.
        left = int(claims["exp"]) - now
        if user_assertion and left <= 0:
            raise InvalidGrantError("The assertion is not acceptable", debug="expired",
                                    reason="id_jag_no_lifetime_left")
        # IDJAG-03, last check: a request refused above leaves the grant usable for a
        # corrected retry.
        try:
            services.require_federation().spend_id_jag(claims, now=now)
        except IdentityError as e:
            raise InvalidGrantError("The assertion is not acceptable", debug=e.debug,
                                    reason="id_jag_replayed" if e.debug == "ID-JAG already used"
                                    else "id_jag_rejected") from e
        settings = services.settings
        if user_assertion:
            # Its own lifetime, and never past the grant's `exp` (checked above).
            ttl = min(settings.user_assertion_ttl, left)
        else:
            ttl = settings.access_token_ttl
        token = issue_access_token(
            services.keyring, settings.issuer,
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
            now=now,
        )
        self._audit(self.req.db, outcome="allowed", reason=None, token=token,
                    detail={"issued": "user_assertion" if user_assertion else "access_token",
                            "idp": config.name})
        return issued(token)

    # --- named checks ----------------------------------------------------------------------

    def check_assertion_parameter(self) -> str:
        assertion = self.req.form.get("assertion")
        if not assertion:
            raise InvalidRequestError("assertion is required", reason="assertion_missing")
        if len(assertion) > MAX_ASSERTION_LENGTH:
            raise InvalidRequestError("assertion is too large", reason="assertion_too_large")
        return str(assertion)

    def check_id_jag(self, assertion: str) -> tuple[IdPConfig, dict[str, Any]]:
        """IDJAG-01..03: signature, typ, iss (an id_jag IdP), aud = our issuer, exp/iat, jti,
        client_id."""
        federation = self.services.federation
        if federation is None:
            raise InvalidGrantError("The assertion is not acceptable", debug="no idp configured",
                                    reason="no_idp_configured")
        try:
            return federation.verify_id_jag(
                assertion, now=self.req.now, audience=self.services.settings.issuer)
        except IdentityError as e:
            # RFC 7523 §3.1: a bad assertion is invalid_grant; which check failed is debug.
            raise InvalidGrantError("The assertion is not acceptable", debug=e.debug,
                                    reason="id_jag_rejected") from e

    def check_client(self, client: OAuthClient, claims: dict[str, Any]) -> None:
        # IDJAG-02 (draft §4.4.1): the client_id claim identifies the authenticated client.
        if claims["client_id"] != client.client_id:
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="client_id is not the authenticated client",
                                    reason="id_jag_other_client")

    def check_resources(self, claims: dict[str, Any]) -> list[str]:
        """IDJAG-04, RFC 8707 resources: those requested, each within the grant's `resource`,
        or else the grant's own. No gateway resource either way."""
        granted = claims.get("resource")
        granted_list = [granted] if isinstance(granted, str) else granted
        if granted_list is not None and (not isinstance(granted_list, list) or not all(
                isinstance(r, str) and r for r in granted_list)):
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="resource claim malformed",
                                    reason="id_jag_resource_malformed")
        requested = requested_resources(self.services, self.req)
        issuer = self.services.settings.issuer
        if requested:
            # No resource in the grant: only this server (a user assertion) is granted.
            allowed = set(granted_list) if granted_list is not None else {issuer}
            if not set(requested) <= allowed:
                raise InvalidTargetError("The requested resource exceeds the grant",
                                         reason="resource_exceeds_grant")
            resources = requested
        else:
            resources = list(dict.fromkeys(granted_list or []))
            unknown = set(resources) - self.services.known_resources()
            if unknown:
                raise InvalidTargetError("The granted resource is not served by this server",
                                         reason="resource_granted_unknown")
        if any(r.startswith(f"{issuer}/gateway/") for r in resources):
            raise InvalidTargetError("Gateway tokens are issued only for an intent",
                                     reason="resource_gateway")
        if resources == [issuer]:
            return []
        if issuer in resources:
            raise InvalidTargetError("A user assertion is only for this server",
                                     reason="resource_mixes_this_server")
        return resources

    def check_scope(self, client: OAuthClient, claims: dict[str, Any]) -> str:
        """IDJAG-04, RFC 6749 §3.3: a requested scope within the grant's (else invalid_scope); none
        requested: the grant's scopes this server supports and the client may have."""
        granted = claims.get("scope")
        if granted is not None and not isinstance(granted, str):
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="scope claim malformed",
                                    reason="id_jag_scope_malformed")
        requested = self.req.form.get("scope")
        if requested is not None:
            return checked_scope(self.services, client, requested, granted=granted or "")
        supported = set(self.services.settings.scopes)
        wanted = [s for s in (granted or "").split() if s in supported]
        allowed = set(client.get_allowed_scope(" ".join(wanted)).split())
        return " ".join(s for s in wanted if s in allowed)

    def check_mandate(self, claims: dict[str, Any]) -> dict[str, Any] | None:
        """The IdP's `agent_mandate` (in the grant's `authorization_details`), if any. The
        request cannot add one: the agent is not the party that says what the user asked."""
        if self.req.form.get("authorization_details") is not None:
            raise InvalidRequestError("authorization_details come from the assertion only",
                                      reason="authorization_details_in_request")
        details = claims.get("authorization_details")
        if details is None:
            return None
        if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug="authorization_details malformed",
                                    reason="id_jag_details_malformed")
        mandates = [d for d in details if d.get("type") == MANDATE_TYPE]
        if not mandates:
            return None
        try:
            return parse_mandate(mandates).to_authorization_details()
        except InvalidAuthorizationDetailsError as e:
            raise InvalidGrantError("The assertion is not acceptable",
                                    debug=f"mandate: {e.description}",
                                    reason="id_jag_mandate_invalid") from e

    def check_user(self, config: IdPConfig, claims: dict[str, Any]) -> User:
        """IDJAG-05: `iss` + `sub` to our user as sign-in does (JIT, tenant binding, deprovisioned
        users refused)."""
        from authserver.identity.users import provision_user

        try:
            user = provision_user(self.req.db, config, claims, now=self.req.now)
        except IdentityError as e:
            raise InvalidGrantError("The assertion is not acceptable", debug=e.debug,
                                    reason="id_jag_user_refused") from e
        self.user_id = user.id
        return user

    # --- audit -----------------------------------------------------------------------------

    def audit_failure(self, error: Exception) -> None:
        """A refusal: its record alone persists (`AuditLog.append_refusal` drops what the request
        did, a JIT-provisioned user too)."""
        oauth_error = error if isinstance(error, OAuthError) else None
        outcome = "error" if oauth_error is None or oauth_error.error in (
            "server_error", "temporarily_unavailable") else "invalid"
        error_code = oauth_error.error if oauth_error is not None else "server_error"
        if self.client is None:
            # No authenticated client: counted (by error code: a bounded label), not appended
            # (the chain's lock is not for anonymous callers; issue 13, item 8).
            refused_unauthenticated("id_jag", error_code)
            return
        # The specific check that refused (docs/operating.md "Audit refusal reasons").
        reason = oauth_error.reason if oauth_error is not None else "server_error"
        detail: dict[str, Any] = {"error": error_code}
        if oauth_error is not None and oauth_error.debug:
            detail["debug"] = str(oauth_error.debug)[:128]
        self.services.audit.append_refusal(
            self.req.db, self._record(outcome=outcome, reason=reason, token=None, detail=detail),
            now=self.req.now)

    def _audit(self, session: Any, *, outcome: str, reason: str | None,
               token: AccessToken | None, detail: dict[str, Any]) -> None:
        """The allowed grant's record, in the request's transaction (commits with the token)."""
        self.services.audit.append(
            session, self._record(outcome=outcome, reason=reason, token=token, detail=detail),
            now=self.req.now)

    def _record(self, *, outcome: str, reason: str | None, token: AccessToken | None,
                detail: dict[str, Any]) -> AuditRecord:
        client = self.client
        return AuditRecord(
            event="id_jag", outcome=outcome, reason=reason, correlation_id=correlation_id(),
            user_id=self.user_id,
            agent_id=client.client_id if client is not None else None,
            token_jti=token.jti if token else None,
            client_ip=self.req.client_ip,
            detail={"client_id": client.client_id if client is not None else None, **detail},
        )
