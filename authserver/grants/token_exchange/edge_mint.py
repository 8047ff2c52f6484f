"""The edge mint (docs/architecture.md "Two exchanges"): a trusted edge client (admin-set
`trusted_edge`) trades the user's IdP token for a user assertion: `sub` = our user,
`client_id`/`act` = the agent named by `actor_token`, `aud` = this server, ≤ 5 minutes,
`cnf.jkt` = the AGENT's key (`dpop_jkt`), and the user's mandate (`agent_mandate`, Part A2).
The edge cannot use what it minted."""

from __future__ import annotations

from typing import Any

from authserver.errors import InvalidRequestError, InvalidTargetError, OAuthError
from authserver.grants.base import Issued, check_dpop
from authserver.grants.token_exchange.delegation import DelegationSteps
from authserver.grants.token_exchange.exchange import (
    IDP_TOKEN_TYPES,
    Exchange,
    remaining_lifetime,
)
from authserver.identity.errors import IdentityError
from authserver.intent import parse_mandate
from authserver.tokens import TokenRequestContext, issue_access_token


class EdgeMint(DelegationSteps):
    """The user assertion a trusted edge mints for an agent."""

    def edge_mint(self, ex: Exchange, details: list[dict[str, Any]]) -> Issued:
        # Bound to the agent's key (`dpop_jkt`), not the edge's: no per-grant requirement.
        ex.proof = check_dpop(self.services, self.req, ex.client, grant_type=None)
        self.check_requested_token_type(ex)
        self.check_subject_idp_token(ex)
        self.check_actor_is_agent(ex)
        jkt = self.check_agent_key(ex)
        try:
            ex.mandate = parse_mandate(details)
        except OAuthError as e:
            e.with_reason("mandate_invalid")
            raise
        self.check_no_target(ex)
        settings = self.services.settings
        # Last check: a mint refused above leaves the IdP token usable for a corrected retry.
        try:
            self.services.require_federation().spend_subject_token(
                ex.form["subject_token"], ex.subject, now=self.now)
        except IdentityError as e:
            e.with_reason("subject_token_replayed" if e.debug == "subject_token already used"
                            else "subject_token_idp_rejected")
            raise
        ex.act = {"sub": ex.agent_id}
        # TX-08: the assertion outlives neither its default lifetime nor the IdP token.
        ttl = remaining_lifetime(ex.subject, self.now, settings.user_assertion_ttl)
        ex.token = issue_access_token(
            self.services.keyring, settings.issuer,
            TokenRequestContext(
                sub=ex.user.id,  # type: ignore[union-attr]
                client_id=ex.agent_id or "",
                audience=settings.issuer,
                ttl=ttl,
                jkt=jkt,
                act=ex.act,
                authorization_details=[ex.mandate.to_authorization_details()],
                extra={"auth_time": ex.subject.get("auth_time", self.now)},
            ),
            now=self.now,
        )
        return self.exchange_response(ex.token)

    def check_subject_idp_token(self, ex: Exchange) -> None:
        """Edge mint: the user's token from a configured corporate IdP (JIT provisioning)."""
        if ex.form["subject_token_type"] not in IDP_TOKEN_TYPES:
            raise InvalidRequestError("The edge exchange takes an IdP id_token or jwt",
                                      reason="subject_token_type_not_idp")
        federation = self.services.federation
        if federation is None:
            raise InvalidRequestError("No identity provider is configured",
                                      reason="no_idp_configured")
        from authserver.identity.users import provision_user

        try:
            config, claims = federation.verify_subject_token(
                ex.form["subject_token"], now=self.now,
                token_type=ex.form["subject_token_type"])
        except IdentityError as e:  # which IdP-token check failed is its debug
            e.with_reason("subject_token_idp_rejected")
            raise
        try:
            ex.user = provision_user(self.db, config, claims, now=self.now)
        except IdentityError as e:
            e.with_reason("subject_user_refused")
            raise
        ex.subject = claims

    def check_agent_key(self, ex: Exchange) -> str:
        """The assertion is bound to the agent's key: `dpop_jkt`, or the actor token's cnf."""
        jkt = ex.form.get("dpop_jkt") or (ex.subject.get("actor_cnf") or {}).get("jkt")
        if not isinstance(jkt, str) or len(jkt) != 43:
            raise InvalidRequestError("dpop_jkt (the agent's key thumbprint) is required",
                                      reason="agent_key_missing")
        actor_cnf = ex.subject.get("actor_cnf")
        if actor_cnf and actor_cnf.get("jkt") != jkt:
            raise InvalidRequestError("dpop_jkt does not match the actor token's key",
                                      reason="agent_key_mismatch")
        return jkt

    def check_no_target(self, ex: Exchange) -> None:
        resources = self.req.form.getlist("resource")
        audiences = self.req.form.getlist("audience")
        issuer = self.services.settings.issuer
        if any(r != issuer for r in resources) or any(a != issuer for a in audiences):
            raise InvalidTargetError("A user assertion is only for this server",
                                     reason="target_not_this_server")
