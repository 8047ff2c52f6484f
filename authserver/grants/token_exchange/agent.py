"""The agent exchange (Parts A1, A4): the agent proves the assertion's key with its DPoP proof,
declares an `intent`, and gets a capability token for the gateway if Cedar allows it (after
step-up if Cedar asks for it, within rate limits), or, as an executor, the user's platform
token. Without a target the same checks lead to a narrowed assertion (`delegation`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from authserver import approvals
from authserver.broker.connections import connect_uri, get_access_token
from authserver.errors import (
    ConnectionRequiredError,
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    PolicyDeniedError,
)
from authserver.grants.base import Issued, check_dpop
from authserver.grants.token_exchange.delegation import DelegationSteps
from authserver.grants.token_exchange.exchange import (
    GRANT_TYPE,
    TT_ACCESS_TOKEN,
    Exchange,
    remaining_lifetime,
)
from authserver.intent import Intent, parse_intent
from authserver.models.broker import CONNECTION_ACTIVE, Connection
from authserver.observability import POLICY_DECISIONS
from authserver.policy import PolicyDecision, PolicyRequest
from authserver.tokens import TokenRequestContext, issue_access_token

#: Whether the user's connection at a platform is active: its id and status only (no ORM
#: object of the whole row, tokens and all), one statement built once (issue 18).
_CONNECTIONS = Connection.__table__.c
_CONNECTION_STATUS = select(_CONNECTIONS.id, _CONNECTIONS.status).where(
    _CONNECTIONS.user_id == bindparam("user_id"), _CONNECTIONS.platform == bindparam("platform"))


class AgentExchange(DelegationSteps):
    """An agent's exchange of its user assertion for a capability or platform token."""

    def agent_exchange(self, ex: Exchange, details: list[dict[str, Any]]) -> Issued:
        ex.proof = check_dpop(self.services, self.req, ex.client, grant_type=GRANT_TYPE,
                              required=True)
        self.check_subject_assertion(ex)
        self.check_holder_key(ex)
        self.check_delegation(ex)
        self.check_requested_token_type(ex)
        scope = self.check_scope_narrows(ex)
        target = self.check_target(ex)
        if target is None:
            return self.narrowed_assertion(ex, details, scope)
        if ex.designee is not None or ex.form.get("dpop_jkt"):
            raise InvalidRequestError("actor_token does not name the client",
                                      reason="actor_not_client")
        ex.platform, executor = target
        ex.intent = self.check_intent(ex, details)
        ex.mandate = self.subject_mandate(ex)
        approved = self.check_approval(ex)
        decision = self.check_policy(ex, approved=approved)
        # The budget is spent before anything is created (a pending approval) and whatever
        # the decision: step-up and denied requests are no free way to flood the user.
        # Redeeming an approval spends nothing more: the request spent when it asked.
        if not approved:
            self.check_rate_limit(ex)
        self.enforce_decision(ex, decision, approved=approved)
        if executor:
            return self.platform_token(ex)
        self.check_connection(ex)
        settings = self.services.settings
        gateway = f"{settings.issuer}/gateway/{ex.platform}"
        ttl = remaining_lifetime(ex.subject, self.now, settings.capability_token_ttl)
        ex.token = issue_access_token(
            self.services.keyring, settings.issuer,
            TokenRequestContext(
                sub=ex.user.id,  # type: ignore[union-attr]
                client_id=ex.client.client_id,
                audience=gateway,
                scope=scope,
                ttl=ttl,
                jkt=ex.proof.jkt,  # type: ignore[union-attr]
                act=ex.act,
                authorization_details=[ex.intent.to_authorization_details(gateway)],
                extra={"platform": ex.platform, "intent_hash": ex.intent.hash()},
            ),
            now=self.now,
        )
        return self.exchange_response(ex.token)

    def check_subject_assertion(self, ex: Exchange) -> None:
        claims, user = self._verify_our_token(ex.form["subject_token"], what="subject_token",
                                              caller=ex.client)
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        if self.services.settings.issuer not in audiences:
            raise InvalidRequestError("subject_token is not for this server",
                                      reason="subject_token_wrong_audience")
        if int(claims["exp"]) <= self.now:
            # Our own token: no clock skew to allow for, and TX-08 caps the output at its exp.
            raise InvalidRequestError("subject_token is invalid, expired or revoked",
                                      debug="expired", reason="subject_token_expired_in_leeway")
        if claims["sub"] == claims["client_id"]:
            raise InvalidRequestError("subject_token does not represent a user",
                                      reason="subject_token_not_user")
        # The user row the liveness check loaded and found active (None: not a user's token,
        # refused just above). Checked again here: this step fails closed on its own.
        if user is None or user.id != claims["sub"] or not user.active:
            raise InvalidRequestError("subject_token is invalid, expired or revoked",
                                      reason="subject_user_inactive")
        ex.user, ex.subject = user, claims

    def check_holder_key(self, ex: Exchange) -> None:
        """TX-16: a DPoP-bound subject token needs a proof made with that same key."""
        cnf = ex.subject.get("cnf") or {}
        if cnf.get("jkt") and ex.proof is not None and ex.proof.jkt != cnf["jkt"]:
            raise InvalidRequestError("DPoP proof key does not match the subject token",
                                      reason="dpop_key_mismatch")
        if ex.proof is None:
            raise InvalidDpopProofError("DPoP proof required", reason="dpop_proof_required")

    def check_scope_narrows(self, ex: Exchange) -> str:
        requested = ex.form.get("scope")
        granted = str(ex.subject.get("scope") or "")
        if requested is None:
            return granted
        if not set(requested.split()) <= set(granted.split()):
            raise InvalidScopeError("scope may only narrow the subject token's scope",
                                    reason="scope_widened")
        return requested

    def check_target(self, ex: Exchange) -> tuple[str, bool] | None:
        """Part A4: audience=<platform> or resource=<issuer>/gateway/<platform> → capability;
        resource=<platform API base> → the platform token (executor). None: no target."""
        audiences, resources = self.req.form.getlist("audience"), self.req.form.getlist("resource")
        if len(audiences) + len(resources) == 0:
            return None
        if len(audiences) + len(resources) > 1:
            raise InvalidTargetError("Exactly one audience or resource",
                                     reason="target_not_single")
        platforms = self.services.platforms
        issuer = self.services.settings.issuer
        if audiences:
            if audiences[0] in platforms:
                return audiences[0], False
            raise InvalidTargetError("Unknown audience", reason="target_unknown_audience")
        resource = resources[0]
        prefix = f"{issuer}/gateway/"
        if resource.startswith(prefix) and resource[len(prefix):] in platforms:
            return resource[len(prefix):], False
        for name, platform in platforms.items():
            if platform.api_base_url and resource == platform.api_base_url:
                return name, True
        raise InvalidTargetError("Unknown resource", reason="target_unknown_resource")

    def check_intent(self, ex: Exchange, details: list[dict[str, Any]]) -> Intent:
        # A mandate only ever comes from the assertion: parse_intent rejects one sent here.
        try:
            intent = parse_intent(ex.form.get("intent"), details or None)
        except OAuthError as e:
            e.with_reason("intent_invalid")
            raise
        if intent is None:
            raise InvalidRequestError("An intent is required to reach a platform",
                                      reason="intent_missing")
        return intent

    def check_approval(self, ex: Exchange) -> bool:
        approval_id = ex.form.get("approval_id")
        if not approval_id:
            return False
        ex.approval_id = approval_id
        approvals.redeem_approval(
            self.db, self.services.store, approval_id, user_id=ex.user.id,  # type: ignore[union-attr]
            agent_id=ex.client.client_id, platform=ex.platform or "",
            intent_hash=ex.intent.hash(), now=self.now,  # type: ignore[union-attr]
        )
        return True

    def check_policy(self, ex: Exchange, *, approved: bool) -> PolicyDecision:
        """Cedar's decision, recorded on `ex` for the audit; acting on it is
        `enforce_decision`, after the rate limit."""
        assert ex.user is not None and ex.intent is not None and ex.platform is not None
        attrs = ex.client.row.attributes
        decision = self.services.policy.decide(PolicyRequest(
            user_id=ex.user.id, tenant=ex.user.tenant, roles=ex.user.roles,
            groups=ex.user.groups, agent_id=ex.client.client_id,
            agent_allowed_platforms=attrs.get("allowed_platforms"),
            agent_allowed_actions=attrs.get("allowed_actions"),
            platform=ex.platform, intent=ex.intent, mandate=ex.mandate, approved=approved,
        ))
        ex.within_mandate = decision.within_mandate
        ex.policy_ids = list(decision.policy_ids)
        POLICY_DECISIONS.labels(outcome=decision.outcome, reason=decision.reason).inc()
        return decision

    def enforce_decision(self, ex: Exchange, decision: PolicyDecision, *,
                         approved: bool) -> None:
        """Act on the decision. The one step before issuing that writes: on step-up, the
        pending approval, through `approvals.request_approval` (a unit of work of its own,
        committed there, so it outlives the `approval_required` refusal raised here; the
        request's own transaction is never committed by it)."""
        assert ex.user is not None and ex.intent is not None and ex.platform is not None
        if decision.outcome == "allow":
            return
        if decision.outcome == "step_up" and not approved:
            # The same intent again gets the card already waiting; the number waiting per
            # (user, agent) is capped (429).
            approval = approvals.request_approval(
                self.db, self.services.store, user_id=ex.user.id,
                agent_id=ex.client.client_id, platform=ex.platform,
                intent=ex.intent.to_json(), intent_hash=ex.intent.hash(),
                mandate=ex.mandate.to_authorization_details() if ex.mandate else None,
                now=self.now,
            )
            ex.approval_id = approval.id
            raise approvals.approval_required_error(
                approval, approval_uri=f"{self.services.settings.issuer}/approvals/{approval.id}",
                now=self.now)
        reason = "intent_mismatch" if decision.is_intent_mismatch else decision.reason
        # The reason is the policy's own `@reason` (docs/policies.md), e.g. intent_mismatch.
        raise PolicyDeniedError("The intent is not allowed", debug=reason, reason=reason)

    def check_rate_limit(self, ex: Exchange) -> None:
        assert ex.intent is not None and ex.user is not None
        action_class = "destructive" if ex.intent.is_destructive else ex.intent.action_class
        self.services.rate_limiter.check(user_id=ex.user.id, agent_id=ex.client.client_id,
                                         action_class=action_class, now=self.now)

    def check_connection(self, ex: Exchange) -> None:
        assert ex.user is not None and ex.platform is not None
        conn = self.db.execute(_CONNECTION_STATUS, {
            "user_id": ex.user.id, "platform": ex.platform}).first()
        if conn is None or conn.status != CONNECTION_ACTIVE:
            raise ConnectionRequiredError(
                "The user has no live connection to this platform",
                reason="connection_missing",
                extra={"connect_uri": connect_uri(self.services.settings.issuer, ex.platform)})

    def platform_token(self, ex: Exchange) -> Issued:
        """Part A4 executor path: only clients policy places in the executor trust zone."""
        assert ex.user is not None and ex.platform is not None
        if not ex.client.row.attributes.get("executor"):
            raise PolicyDeniedError("This client may not receive platform tokens",
                                    debug="not_executor", reason="not_executor")
        ex.role = "executor"
        s = self.services
        token, conn = get_access_token(
            s.db, s.store, s.vault, s.platforms[ex.platform], user_id=ex.user.id, now=self.now,
            connect_uri=connect_uri(s.settings.issuer, ex.platform))
        expires_in = max(1, (conn.access_expires_at or self.now + 60) - self.now)
        # Not a token we signed: no `Issued.token` (counted as token_type "other").
        return Issued({
            "access_token": token,
            "issued_token_type": TT_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": min(expires_in, s.settings.capability_token_ttl),
        })
