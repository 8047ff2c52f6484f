"""RFC 8693 token exchange, in two roles (docs/architecture.md "Two exchanges").

*Edge mint* — a trusted edge client (admin-set `trusted_edge`) trades the user's IdP token for a
user assertion: `sub` = our user, `client_id`/`act` = the agent named by `actor_token`,
`aud` = this server, ≤ 5 minutes, `cnf.jkt` = the AGENT's key (`dpop_jkt`), and the user's
mandate (`agent_mandate`, Part A2). The edge cannot use what it minted.

*Agent exchange* — the agent proves the assertion's key with its DPoP proof, declares an
`intent` (Part A1), and gets a capability token for the gateway (Part A4) if Cedar allows it,
after step-up if Cedar asks for it, within rate limits. Every outcome is audited before the
response leaves (authserver.audit), with the request's correlation id.

This module is the grant and its dispatch; the products and steps live beside it:
`edge_mint` (the user assertion), `agent` (capability or executor platform token),
`delegation` (actor tokens, `act`/`may_act`, the narrowed or designated assertion),
`outcome` (error → audit outcome, the audit record) and `exchange` (what they share).
"""

from __future__ import annotations

from typing import Any

from authserver.clients import OAuthClient
from authserver.errors import InvalidRequestError, OAuthError
from authserver.grants.base import Grant, Issued
from authserver.grants.token_exchange.agent import AgentExchange
from authserver.grants.token_exchange.edge_mint import EdgeMint
from authserver.grants.token_exchange.exchange import (
    GRANT_TYPE,
    IDP_TOKEN_TYPES,
    MAX_ACT_DEPTH,
    MAX_TOKEN_LENGTH,
    TT_ACCESS_TOKEN,
    TT_ID_TOKEN,
    TT_JWT,
    Exchange,
)
from authserver.grants.token_exchange.outcome import ExchangeAudit, outcome_of, reason_of
from authserver.intent import MANDATE_TYPE, loads_authorization_details
from authserver.services import Services
from authserver.token_endpoint.request import TokenRequest

__all__ = [
    "GRANT_TYPE",
    "IDP_TOKEN_TYPES",
    "MAX_ACT_DEPTH",
    "MAX_TOKEN_LENGTH",
    "TT_ACCESS_TOKEN",
    "TT_ID_TOKEN",
    "TT_JWT",
    "Exchange",
    "TokenExchangeGrant",
]


class TokenExchangeGrant(Grant):
    GRANT_TYPE = GRANT_TYPE
    PARAMETERS = frozenset({
        "subject_token", "subject_token_type", "actor_token", "actor_token_type",
        "requested_token_type", "resource", "audience", "scope",  # RFC 8693 §2.1
        "authorization_details", "intent", "approval_id", "dpop_jkt",  # ours (Part A)
    })
    # TX-07: only authenticated confidential clients may exchange.
    AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
    NOT_ALLOWED = "The client may not use token exchange"

    def issue(self, services: Services, req: TokenRequest, client: OAuthClient) -> Issued:
        exchange = TokenExchange(services, req)
        ex = Exchange(client=client, form=req.form)
        try:
            result = exchange.exchange(ex)
        except Exception as error:
            exchange.refused(ex, error)
            raise
        exchange.allowed(ex)
        return result

    def refused(self, services: Services, req: TokenRequest, client: OAuthClient | None,
                error: Exception) -> None:
        """Every outcome is audited, a failed client authentication too."""
        ex = Exchange(client=client, form=req.form)  # type: ignore[arg-type]
        TokenExchange(services, req).refused(ex, error)


class TokenExchange(EdgeMint, AgentExchange, ExchangeAudit):
    """One exchange request: which exchange it is, and its steps."""

    def allowed(self, ex: Exchange) -> None:
        """Success: the record joins the request's transaction, so the token is issued only if
        its audit record commits with it."""
        self._audit(ex, self.db, outcome="allowed", reason=None,
                    detail={"issued": "user_assertion" if ex.role == "edge" else
                            ("platform_token" if ex.role == "executor" else "capability")})

    def refused(self, ex: Exchange, error: Exception) -> None:
        """A refusal, audited in a transaction of its own (`ExchangeAudit._audit_failure`)."""
        if isinstance(error, OAuthError):
            self._audit_failure(ex, outcome=outcome_of(error), reason=reason_of(error, ex),
                                detail={"error": error.error})
        else:
            self._audit_failure(ex, outcome="error", reason="server_error", detail={})

    # --- dispatch: which exchange ----------------------------------------------------------

    def exchange(self, ex: Exchange) -> Issued:
        self.check_parameters(ex)
        details = self.authorization_details(ex)
        subject_type = ex.form.get("subject_token_type")
        if ex.client.row.attributes.get("trusted_edge") and any(
            d.get("type") == MANDATE_TYPE for d in details
        ):
            ex.role = "edge"
            return self.edge_mint(ex, details)
        if subject_type != TT_ACCESS_TOKEN:
            if subject_type in IDP_TOKEN_TYPES:
                if ex.client.row.attributes.get("trusted_edge"):
                    raise InvalidRequestError("The edge mint needs authorization_details with "
                                              "one agent_mandate", reason="edge_mint_no_mandate")
                if any(d.get("type") == MANDATE_TYPE for d in details):
                    raise InvalidRequestError("Only a client registered as a trusted edge may "
                                              "mint user assertions", reason="edge_not_trusted")
            # Say which type is accepted: clients that default to `...:jwt` get no further.
            raise InvalidRequestError(f"Unsupported subject_token_type: the agent exchange "
                                      f"takes {TT_ACCESS_TOKEN} (the user assertion)",
                                      reason="subject_token_type_unsupported")
        return self.agent_exchange(ex, details)

    # --- named checks ----------------------------------------------------------------------

    def check_parameters(self, ex: Exchange) -> None:
        # (Repeated parameters were refused before any grant ran: check_parameters in
        # authserver.token_endpoint.parameters.)
        # TX-02: subject_token and its type are required.
        if not ex.form.get("subject_token") or not ex.form.get("subject_token_type"):
            raise InvalidRequestError("subject_token and subject_token_type are required",
                                      reason="subject_token_missing")
        if len(ex.form["subject_token"]) > MAX_TOKEN_LENGTH:
            raise InvalidRequestError("subject_token is too large",
                                      reason="subject_token_too_large")
        # TX-03: actor_token_type if and only if actor_token.
        if bool(ex.form.get("actor_token")) != bool(ex.form.get("actor_token_type")):
            raise InvalidRequestError("actor_token and actor_token_type go together",
                                      reason="actor_token_type_mismatch")

    def authorization_details(self, ex: Exchange) -> list[dict[str, Any]]:
        raw = ex.form.get("authorization_details")
        if raw is None:
            return []
        # The one strict parser (no duplicate members, RAR-01 shape), as for `intent`.
        try:
            return loads_authorization_details(raw)
        except OAuthError as e:
            e.with_reason("authorization_details_malformed")
            raise
