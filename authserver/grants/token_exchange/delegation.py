"""Delegation (RFC 8693 §4.1, §4.4): the actor token (which agent acts), the `act` chain and
`may_act`, and the narrowed or designated assertion an agent may mint from its own (TX-12/13)."""

from __future__ import annotations

import json
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from authserver.client_auth import ClientAssertionReplayedError, verify_client_assertion
from authserver.clients import OAuthClient
from authserver.errors import (
    InvalidAuthorizationDetailsError,
    InvalidClientError,
    InvalidRequestError,
    OAuthError,
)
from authserver.grants.base import Issued
from authserver.grants.token_exchange.exchange import (
    GRANT_TYPE,
    MAX_ACT_DEPTH,
    TT_ACCESS_TOKEN,
    TT_JWT,
    Exchange,
    ExchangeSteps,
    remaining_lifetime,
)
from authserver.intent import MANDATE_TYPE, Mandate, parse_mandate
from authserver.tokens import TokenRequestContext, issue_access_token


class DelegationSteps(ExchangeSteps):
    """Who acts: the agent an actor token names, the delegation chain, designated agents."""

    def check_actor_is_agent(self, ex: Exchange) -> None:
        """The agent named by `actor_token`: its client assertion JWT, or our token issued to
        it. Unacceptable actor tokens are `invalid_request` (RFC 8693 §2.2.2)."""
        token, token_type = ex.form.get("actor_token"), ex.form.get("actor_token_type")
        if not token:
            raise InvalidRequestError("actor_token naming the agent is required",
                                      reason="actor_token_missing")
        ex.agent_id, cnf = self.verify_actor_token(token, token_type)
        if token_type == TT_ACCESS_TOKEN:
            ex.subject["actor_cnf"] = cnf
        self.check_is_agent(str(ex.agent_id))

    def verify_actor_token(self, token: str, token_type: str | None
                           ) -> tuple[str, dict[str, Any] | None]:
        """The one actor-token verifier: which agent `actor_token` names (its client assertion
        JWT, or our token issued to it), and that token's `cnf` (None for an assertion)."""
        if token_type == TT_JWT:
            return self._verify_agent_assertion(token), None
        if token_type == TT_ACCESS_TOKEN:
            claims, _ = self._verify_our_token(token, what="actor_token")
            if claims["sub"] != claims["client_id"]:
                raise InvalidRequestError("actor_token must be the agent's own token",
                                          reason="actor_token_not_agent_own")
            return claims["client_id"], claims.get("cnf")
        raise InvalidRequestError("Unsupported actor_token_type",
                                  reason="actor_token_type_unsupported")

    def _verify_agent_assertion(self, token: str) -> str:
        """The agent's own private_key_jwt-style assertion (RFC 7523 §3 claims, `aud` = us,
        single use): which agent the edge names."""
        try:
            payload = json.loads(jws.extract_compact(token.encode()).payload)
            agent_id = payload["sub"]
        except (JoseError, ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError("Malformed actor_token",
                                      reason="actor_token_malformed") from e
        agent = self.client_record(agent_id) if isinstance(agent_id, str) and agent_id \
            else None
        if agent is None:
            raise InvalidRequestError("Unknown actor", reason="actor_unknown")
        s = self.services
        try:
            # The same verifier and replay namespace as client authentication: an assertion
            # spent at /token or /introspect is spent here too, and the other way round.
            verify_client_assertion(
                token, OAuthClient(agent), issuer=s.settings.issuer,
                token_endpoint=s.settings.token_endpoint, store=s.store,
                jwks_cache=s.jwks_cache, now=self.now)
        except ClientAssertionReplayedError as e:
            raise InvalidRequestError("actor_token was already used", debug=e.debug,
                                      reason="actor_token_replayed") from e
        except InvalidClientError as e:
            # Which client-assertion check refused it: its `client_assertion_*` reason.
            raise InvalidRequestError("actor_token is not acceptable",
                                      debug=e.debug or e.description, reason=e.reason) from e
        return str(agent_id)

    def check_delegation(self, ex: Exchange) -> None:
        """TX-12/13: the caller is the assertion's agent, or one its `may_act` names (then
        `act` nests). `actor_token`, when sent, must name the caller itself."""
        claims, caller = ex.subject, ex.client.client_id
        previous = claims.get("act")
        if caller == claims["client_id"]:
            ex.act = previous or {"sub": caller}
        else:
            may_act = claims.get("may_act") or {}
            if may_act.get("sub") != caller:
                raise InvalidRequestError("The client may not act for this subject",
                                          reason="delegation_not_permitted")
            ex.act = {"sub": caller, "act": previous} if previous else {"sub": caller}
        if _act_depth(ex.act) > MAX_ACT_DEPTH:
            raise InvalidRequestError("Delegation chain is too long",
                                      reason="delegation_too_long_chain")
        actor_token = ex.form.get("actor_token")
        if actor_token:
            agent, _ = self.verify_actor_token(actor_token, ex.form.get("actor_token_type"))
            if agent != caller:
                # Naming another agent designates it as the next actor (only when narrowing,
                # checked by the caller): it goes into `may_act` of the new assertion.
                self.check_is_agent(agent)
                ex.designee = agent
        ex.agent_id = caller

    def check_is_agent(self, client_id: str) -> None:
        agent = self.client_record(client_id)
        if agent is None or GRANT_TYPE not in agent.grant_types:
            raise InvalidRequestError("The actor is not an agent allowed to exchange",
                                      reason="actor_not_agent")

    def subject_mandate(self, ex: Exchange) -> Mandate | None:
        for entry in ex.subject.get("authorization_details") or []:
            if isinstance(entry, dict) and entry.get("type") == MANDATE_TYPE:
                return parse_mandate([entry])
        return None

    def narrowed_assertion(self, ex: Exchange, details: list[dict[str, Any]], scope: str
                           ) -> Issued:
        """No target: a new assertion for this server whose mandate may only narrow."""
        wider = self.subject_mandate(ex)
        try:
            narrower = parse_mandate(details) if details else wider
        except OAuthError as e:
            e.with_reason("mandate_invalid")
            raise
        if narrower is None or wider is None:
            raise InvalidAuthorizationDetailsError("A mandate can only be narrowed",
                                                   reason="mandate_missing")
        if not narrower.narrows(wider):
            raise InvalidAuthorizationDetailsError(
                "A mandate can only be narrowed",
                reason="mandate_widened" if _same_request(narrower, wider)
                else "mandate_other_request")
        ex.mandate = narrower
        s = self.services
        jkt, extra = self.check_designee_key(ex)
        ex.token = issue_access_token(
            s.keyring, s.settings.issuer,
            TokenRequestContext(
                sub=ex.user.id, client_id=ex.client.client_id,  # type: ignore[union-attr]
                audience=s.settings.issuer, scope=scope,
                ttl=remaining_lifetime(ex.subject, self.now, s.settings.user_assertion_ttl),
                jkt=jkt, act=ex.act, authorization_details=[narrower.to_authorization_details()],
                extra=extra,
            ),
            now=self.now,
        )
        return self.exchange_response(ex.token)

    def check_designee_key(self, ex: Exchange) -> tuple[str, dict[str, Any]]:
        """TX-13: a narrowed assertion for another agent names it in `may_act` and is bound to
        that agent's key (`dpop_jkt`), like the edge mint; otherwise to the caller's key."""
        if ex.designee is None:
            if ex.form.get("dpop_jkt"):
                raise InvalidRequestError("dpop_jkt is only for designating another agent",
                                          reason="dpop_jkt_without_designee")
            return ex.proof.jkt, {}  # type: ignore[union-attr]
        jkt = ex.form.get("dpop_jkt")
        if not isinstance(jkt, str) or len(jkt) != 43:
            raise InvalidRequestError("dpop_jkt (the designated agent's key) is required",
                                      reason="designee_key_missing")
        if _act_depth({"sub": ex.designee, "act": ex.act}) > MAX_ACT_DEPTH:
            raise InvalidRequestError("Delegation chain is too long",
                                      reason="designee_chain_too_long")
        return jkt, {"may_act": {"sub": ex.designee, "iss": self.services.settings.issuer}}


def _same_request(narrower: Mandate, wider: Mandate) -> bool:
    """The first half of `Mandate.narrows` (RAR-06): the same channel and user request, so a
    mandate that fails to narrow is one that widens (not one for another request)."""
    return narrower.channel == wider.channel and narrower.request_hash == wider.request_hash \
        and (narrower.request_text is None or wider.request_text is None
             or narrower.request_text == wider.request_text)


def _act_depth(act: dict[str, Any] | None) -> int:
    depth = 0
    while isinstance(act, dict):
        depth += 1
        act = act.get("act")
    return depth
