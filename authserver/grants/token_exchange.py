"""RFC 8693 token exchange, in two roles (docs/architecture.md "Two exchanges").

*Edge mint* — a trusted edge client (admin-set `trusted_edge`) trades the user's IdP token for a
user assertion: `sub` = our user, `client_id`/`act` = the agent named by `actor_token`,
`aud` = this server, ≤ 5 minutes, `cnf.jkt` = the AGENT's key (`dpop_jkt`), and the user's
mandate (`agent_mandate`, Part A2). The edge cannot use what it minted.

*Agent exchange* — the agent proves the assertion's key with its DPoP proof, declares an
`intent` (Part A1), and gets a capability token for the gateway (Part A4) if Cedar allows it,
after step-up if Cedar asks for it, within rate limits. Every outcome is audited before the
response leaves (authserver.audit), with the request's correlation id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error as AuthlibError
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from joserfc import jws
from joserfc.errors import JoseError

from authserver import approvals
from authserver.audit import AuditRecord, refused_unauthenticated
from authserver.authorization_server import from_authlib
from authserver.broker.connections import connect_uri, get_access_token
from authserver.clients import (
    ClientAssertionReplayedError,
    OAuthClient,
    verify_client_assertion,
)
from authserver.dpop import DPoPProof
from authserver.errors import (
    ConnectionRequiredError,
    InvalidAuthorizationDetailsError,
    InvalidClientError,
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    PolicyDeniedError,
    UnauthorizedClientError,
)
from authserver.grants.base import GrantMixin
from authserver.intent import (
    MANDATE_TYPE,
    Intent,
    Mandate,
    loads_authorization_details,
    parse_intent,
    parse_mandate,
)
from authserver.models import Client, User
from authserver.models.broker import CONNECTION_ACTIVE
from authserver.observability import POLICY_DECISIONS, correlation_id
from authserver.policy import PolicyDecision, PolicyRequest
from authserver.tokens import (
    AccessToken,
    TokenNotLiveError,
    TokenRequestContext,
    check_token_live,
    issue_access_token,
    verify_access_token,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
IDP_TOKEN_TYPES = (TT_ID_TOKEN, TT_JWT)
#: Nested `act` claims beyond this depth are refused (TX-12 chains stay short and auditable).
MAX_ACT_DEPTH = 4
MAX_TOKEN_LENGTH = 8192


@dataclass
class Exchange:
    """What the checks established, in the order they run; also what the audit records."""

    client: OAuthClient
    form: Any
    proof: DPoPProof | None = None
    user: User | None = None
    subject: dict[str, Any] = field(default_factory=dict)
    agent_id: str | None = None
    act: dict[str, Any] | None = None
    platform: str | None = None
    intent: Intent | None = None
    mandate: Mandate | None = None
    within_mandate: bool | None = None
    policy_ids: list[str] = field(default_factory=list)
    approval_id: str | None = None
    token: AccessToken | None = None
    role: str = "agent"
    #: The other agent an `actor_token` names in a narrowing exchange (TX-13 `may_act`).
    designee: str | None = None


class TokenExchangeGrant(GrantMixin, BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = GRANT_TYPE
    # TX-07: only authenticated confidential clients may exchange.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self) -> None:
        """Everything happens in `create_token_response`, so that even a failed client
        authentication is audited."""

    def create_token_response(self) -> Any:
        ex = Exchange(client=None, form=self.request.form)  # type: ignore[arg-type]
        try:
            ex.client = self.authenticate_token_endpoint_client()
            if not ex.client.check_grant_type(self.GRANT_TYPE):
                raise UnauthorizedClientError("The client may not use token exchange")
            body = self._exchange(ex)
        except AuthlibError as authlib_error:
            error = from_authlib(authlib_error)
            self._audit_failure(ex, outcome="invalid", reason=error.error,
                                detail={"error": error.error})
            raise error from authlib_error
        except OAuthError as error:
            self._audit_failure(ex, outcome=_outcome_of(error), reason=_reason_of(error, ex),
                                detail={"error": error.error})
            raise
        except Exception:
            self._audit_failure(ex, outcome="error", reason="server_error", detail={})
            raise
        # Success: the record joins the request's transaction, so the token is issued only if
        # its audit record commits with it.
        self._audit(ex, self.db, outcome="allowed", reason=None,
                    detail={"issued": "user_assertion" if ex.role == "edge" else
                            ("platform_token" if ex.role == "executor" else "capability")})
        return body

    # --- the two exchanges -----------------------------------------------------------------

    def _exchange(self, ex: Exchange) -> Any:
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
                                              "one agent_mandate")
                if any(d.get("type") == MANDATE_TYPE for d in details):
                    raise InvalidRequestError("Only a client registered as a trusted edge may "
                                              "mint user assertions")
            # Say which type is accepted: clients that default to `...:jwt` get no further.
            raise InvalidRequestError(f"Unsupported subject_token_type: the agent exchange "
                                      f"takes {TT_ACCESS_TOKEN} (the user assertion)")
        return self.agent_exchange(ex, details)

    def edge_mint(self, ex: Exchange, details: list[dict[str, Any]]) -> Any:
        ex.proof = self.check_dpop(ex.client, grant_policy=False)
        self.check_requested_token_type(ex)
        self.check_subject_idp_token(ex)
        self.check_actor_is_agent(ex)
        jkt = self.check_agent_key(ex)
        ex.mandate = parse_mandate(details)
        self.check_no_target(ex)
        settings = self.services.settings
        # Last check: a mint refused above leaves the IdP token usable for a corrected retry.
        self.services.federation.spend_subject_token(
            ex.form["subject_token"], ex.subject, now=self.now)
        ex.act = {"sub": ex.agent_id}
        # TX-08: the assertion outlives neither its default lifetime nor the IdP token.
        ttl = _remaining(ex.subject, self.now, settings.user_assertion_ttl)
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

    def agent_exchange(self, ex: Exchange, details: list[dict[str, Any]]) -> Any:
        ex.proof = self.check_dpop(ex.client, required=True)
        self.check_subject_assertion(ex)
        self.check_holder_key(ex)
        self.check_delegation(ex)
        self.check_requested_token_type(ex)
        scope = self.check_scope_narrows(ex)
        target = self.check_target(ex)
        if target is None:
            return self.narrowed_assertion(ex, details, scope)
        if ex.designee is not None or ex.form.get("dpop_jkt"):
            raise InvalidRequestError("actor_token does not name the client")
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
        ttl = _remaining(ex.subject, self.now, settings.capability_token_ttl)
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

    # --- named checks ----------------------------------------------------------------------

    def check_parameters(self, ex: Exchange) -> None:
        # (Repeated parameters were refused before any grant ran: check_parameters in
        # authserver.authorization_server.)
        # TX-02: subject_token and its type are required.
        if not ex.form.get("subject_token") or not ex.form.get("subject_token_type"):
            raise InvalidRequestError("subject_token and subject_token_type are required")
        if len(ex.form["subject_token"]) > MAX_TOKEN_LENGTH:
            raise InvalidRequestError("subject_token is too large")
        # TX-03: actor_token_type if and only if actor_token.
        if bool(ex.form.get("actor_token")) != bool(ex.form.get("actor_token_type")):
            raise InvalidRequestError("actor_token and actor_token_type go together")

    def authorization_details(self, ex: Exchange) -> list[dict[str, Any]]:
        raw = ex.form.get("authorization_details")
        if raw is None:
            return []
        # The one strict parser (no duplicate members, RAR-01 shape), as for `intent`.
        return loads_authorization_details(raw)

    def check_subject_idp_token(self, ex: Exchange) -> None:
        """Edge mint: the user's token from a configured corporate IdP (JIT provisioning)."""
        if ex.form["subject_token_type"] not in IDP_TOKEN_TYPES:
            raise InvalidRequestError("The edge exchange takes an IdP id_token or jwt")
        federation = self.services.federation
        if federation is None:
            raise InvalidRequestError("No identity provider is configured")
        from authserver.identity.users import provision_user

        config, claims = federation.verify_subject_token(
            ex.form["subject_token"], now=self.now, token_type=ex.form["subject_token_type"])
        ex.user = provision_user(self.db, config, claims, now=self.now)
        ex.subject = claims

    def check_actor_is_agent(self, ex: Exchange) -> None:
        """The agent named by `actor_token`: its client assertion JWT, or our token issued to
        it. Unacceptable actor tokens are `invalid_request` (RFC 8693 §2.2.2)."""
        token, token_type = ex.form.get("actor_token"), ex.form.get("actor_token_type")
        if not token:
            raise InvalidRequestError("actor_token naming the agent is required")
        if token_type == TT_JWT:
            ex.agent_id = self._verify_agent_assertion(token)
        elif token_type == TT_ACCESS_TOKEN:
            claims = self._verify_our_token(token, what="actor_token")
            if claims["sub"] != claims["client_id"]:
                raise InvalidRequestError("actor_token must be the agent's own token")
            ex.agent_id = claims["client_id"]
            ex.subject["actor_cnf"] = claims.get("cnf")
        else:
            raise InvalidRequestError("Unsupported actor_token_type")
        self.check_is_agent(str(ex.agent_id))

    def _verify_agent_assertion(self, token: str) -> str:
        """The agent's own private_key_jwt-style assertion (RFC 7523 §3 claims, `aud` = us,
        single use): which agent the edge names."""
        try:
            payload = json.loads(jws.extract_compact(token.encode()).payload)
            agent_id = payload["sub"]
        except (JoseError, ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError("Malformed actor_token") from e
        agent = self.db.get(Client, agent_id) if isinstance(agent_id, str) else None
        if agent is None:
            raise InvalidRequestError("Unknown actor")
        s = self.services
        try:
            # The same verifier and replay namespace as client authentication: an assertion
            # spent at /token or /introspect is spent here too, and the other way round.
            verify_client_assertion(
                token, OAuthClient(agent), issuer=s.settings.issuer,
                token_endpoint=s.settings.token_endpoint, store=s.store,
                jwks_cache=s.jwks_cache, now=self.now)
        except ClientAssertionReplayedError as e:
            raise InvalidRequestError("actor_token was already used", debug=e.debug) from e
        except InvalidClientError as e:
            raise InvalidRequestError("actor_token is not acceptable",
                                      debug=e.debug or e.description) from e
        return str(agent_id)

    def check_agent_key(self, ex: Exchange) -> str:
        """The assertion is bound to the agent's key: `dpop_jkt`, or the actor token's cnf."""
        jkt = ex.form.get("dpop_jkt") or (ex.subject.get("actor_cnf") or {}).get("jkt")
        if not isinstance(jkt, str) or len(jkt) != 43:
            raise InvalidRequestError("dpop_jkt (the agent's key thumbprint) is required")
        actor_cnf = ex.subject.get("actor_cnf")
        if actor_cnf and actor_cnf.get("jkt") != jkt:
            raise InvalidRequestError("dpop_jkt does not match the actor token's key")
        return jkt

    def check_no_target(self, ex: Exchange) -> None:
        resources = self.request.payload.datalist.get("resource", [])
        audiences = self.request.payload.datalist.get("audience", [])
        issuer = self.services.settings.issuer
        if any(r != issuer for r in resources) or any(a != issuer for a in audiences):
            raise InvalidTargetError("A user assertion is only for this server")

    def _verify_our_token(self, token: str, *, what: str) -> dict[str, Any]:
        s = self.services
        try:
            claims = verify_access_token(s.keyring, s.settings.issuer, token, now=self.now)
            check_token_live(self.db, claims)
        except TokenNotLiveError as e:
            # RFC 8693 §2.2.2: an unacceptable input token is invalid_request.
            raise InvalidRequestError(f"{what} is invalid, expired or revoked",
                                      debug=e.reason) from e
        return claims

    def check_subject_assertion(self, ex: Exchange) -> None:
        claims = self._verify_our_token(ex.form["subject_token"], what="subject_token")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        if self.services.settings.issuer not in audiences:
            raise InvalidRequestError("subject_token is not for this server")
        if int(claims["exp"]) <= self.now:
            # Our own token: no clock skew to allow for, and TX-08 caps the output at its exp.
            raise InvalidRequestError("subject_token is invalid, expired or revoked",
                                      debug="expired")
        if claims["sub"] == claims["client_id"]:
            raise InvalidRequestError("subject_token does not represent a user")
        user = self.db.get(User, claims["sub"])
        if user is None or not user.active:
            raise InvalidRequestError("subject_token is invalid, expired or revoked")
        ex.user, ex.subject = user, claims

    def check_holder_key(self, ex: Exchange) -> None:
        """TX-16: a DPoP-bound subject token needs a proof made with that same key."""
        cnf = ex.subject.get("cnf") or {}
        if cnf.get("jkt") and ex.proof is not None and ex.proof.jkt != cnf["jkt"]:
            raise InvalidRequestError("DPoP proof key does not match the subject token")
        if ex.proof is None:
            raise InvalidDpopProofError("DPoP proof required")

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
                raise InvalidRequestError("The client may not act for this subject")
            ex.act = {"sub": caller, "act": previous} if previous else {"sub": caller}
        if _act_depth(ex.act) > MAX_ACT_DEPTH:
            raise InvalidRequestError("Delegation chain is too long")
        actor_token = ex.form.get("actor_token")
        if actor_token:
            if ex.form.get("actor_token_type") == TT_JWT:
                agent = self._verify_agent_assertion(actor_token)
            elif ex.form.get("actor_token_type") == TT_ACCESS_TOKEN:
                named = self._verify_our_token(actor_token, what="actor_token")
                if named["sub"] != named["client_id"]:
                    raise InvalidRequestError("actor_token must be the agent's own token")
                agent = named["sub"]
            else:
                raise InvalidRequestError("Unsupported actor_token_type")
            if agent != caller:
                # Naming another agent designates it as the next actor (only when narrowing,
                # checked by the caller): it goes into `may_act` of the new assertion.
                self.check_is_agent(agent)
                ex.designee = agent
        ex.agent_id = caller

    def check_is_agent(self, client_id: str) -> None:
        agent = self.db.get(Client, client_id)
        if agent is None or GRANT_TYPE not in agent.grant_types:
            raise InvalidRequestError("The actor is not an agent allowed to exchange")

    def check_requested_token_type(self, ex: Exchange) -> None:
        requested = ex.form.get("requested_token_type")
        if requested not in (None, TT_ACCESS_TOKEN):
            raise InvalidRequestError("Unsupported requested_token_type")

    def check_scope_narrows(self, ex: Exchange) -> str:
        requested = ex.form.get("scope")
        granted = str(ex.subject.get("scope") or "")
        if requested is None:
            return granted
        if not set(requested.split()) <= set(granted.split()):
            raise InvalidScopeError("scope may only narrow the subject token's scope")
        return requested

    def check_target(self, ex: Exchange) -> tuple[str, bool] | None:
        """Part A4: audience=<platform> or resource=<issuer>/gateway/<platform> → capability;
        resource=<platform API base> → the platform token (executor). None: no target."""
        datalist = self.request.payload.datalist
        audiences, resources = datalist.get("audience", []), datalist.get("resource", [])
        if len(audiences) + len(resources) == 0:
            return None
        if len(audiences) + len(resources) > 1:
            raise InvalidTargetError("Exactly one audience or resource")
        platforms = self.services.platforms
        issuer = self.services.settings.issuer
        if audiences:
            if audiences[0] in platforms:
                return audiences[0], False
            raise InvalidTargetError("Unknown audience")
        resource = resources[0]
        prefix = f"{issuer}/gateway/"
        if resource.startswith(prefix) and resource[len(prefix):] in platforms:
            return resource[len(prefix):], False
        for name, platform in platforms.items():
            if platform.api_base_url and resource == platform.api_base_url:
                return name, True
        raise InvalidTargetError("Unknown resource")

    def check_intent(self, ex: Exchange, details: list[dict[str, Any]]) -> Intent:
        # A mandate only ever comes from the assertion: parse_intent rejects one sent here.
        intent = parse_intent(ex.form.get("intent"), details or None)
        if intent is None:
            raise InvalidRequestError("An intent is required to reach a platform")
        return intent

    def subject_mandate(self, ex: Exchange) -> Mandate | None:
        for entry in ex.subject.get("authorization_details") or []:
            if isinstance(entry, dict) and entry.get("type") == MANDATE_TYPE:
                return parse_mandate([entry])
        return None

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
        raise PolicyDeniedError("The intent is not allowed", debug=reason)

    def check_rate_limit(self, ex: Exchange) -> None:
        assert ex.intent is not None and ex.user is not None
        action_class = "destructive" if ex.intent.is_destructive else ex.intent.action_class
        self.services.rate_limiter.check(user_id=ex.user.id, agent_id=ex.client.client_id,
                                         action_class=action_class, now=self.now)

    def check_connection(self, ex: Exchange) -> None:
        from sqlalchemy import select

        from authserver.models.broker import Connection

        assert ex.user is not None and ex.platform is not None
        conn = self.db.scalars(select(Connection).where(
            Connection.user_id == ex.user.id, Connection.platform == ex.platform)).first()
        if conn is None or conn.status != CONNECTION_ACTIVE:
            raise ConnectionRequiredError(
                "The user has no live connection to this platform",
                extra={"connect_uri": connect_uri(self.services.settings.issuer, ex.platform)})

    def platform_token(self, ex: Exchange) -> Any:
        """Part A4 executor path: only clients policy places in the executor trust zone."""
        assert ex.user is not None and ex.platform is not None
        if not ex.client.row.attributes.get("executor"):
            raise PolicyDeniedError("This client may not receive platform tokens",
                                    debug="not_executor")
        ex.role = "executor"
        s = self.services
        token, conn = get_access_token(
            s.db, s.store, s.vault, s.platforms[ex.platform], user_id=ex.user.id, now=self.now,
            connect_uri=connect_uri(s.settings.issuer, ex.platform))
        expires_in = max(1, (conn.access_expires_at or self.now + 60) - self.now)
        return 200, {
            "access_token": token,
            "issued_token_type": TT_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": min(expires_in, s.settings.capability_token_ttl),
        }, [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
            ("Pragma", "no-cache")]

    def narrowed_assertion(self, ex: Exchange, details: list[dict[str, Any]], scope: str) -> Any:
        """No target: a new assertion for this server whose mandate may only narrow."""
        wider = self.subject_mandate(ex)
        narrower = parse_mandate(details) if details else wider
        if narrower is None or wider is None or not narrower.narrows(wider):
            raise InvalidAuthorizationDetailsError("A mandate can only be narrowed")
        ex.mandate = narrower
        s = self.services
        jkt, extra = self.check_designee_key(ex)
        ex.token = issue_access_token(
            s.keyring, s.settings.issuer,
            TokenRequestContext(
                sub=ex.user.id, client_id=ex.client.client_id,  # type: ignore[union-attr]
                audience=s.settings.issuer, scope=scope,
                ttl=_remaining(ex.subject, self.now, s.settings.user_assertion_ttl),
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
                raise InvalidRequestError("dpop_jkt is only for designating another agent")
            return ex.proof.jkt, {}  # type: ignore[union-attr]
        jkt = ex.form.get("dpop_jkt")
        if not isinstance(jkt, str) or len(jkt) != 43:
            raise InvalidRequestError("dpop_jkt (the designated agent's key) is required")
        if _act_depth({"sub": ex.designee, "act": ex.act}) > MAX_ACT_DEPTH:
            raise InvalidRequestError("Delegation chain is too long")
        return jkt, {"may_act": {"sub": ex.designee, "iss": self.services.settings.issuer}}

    def exchange_response(self, token: AccessToken) -> Any:
        status, body, headers = self.token_response(
            token, extra={"issued_token_type": TT_ACCESS_TOKEN})
        return status, body, headers

    # --- audit -----------------------------------------------------------------------------

    def _audit_failure(self, ex: Exchange, *, outcome: str, reason: str | None,
                       detail: dict[str, Any]) -> None:
        """A refused exchange: drop what the request did (its locks too), then record the
        refusal in a transaction of its own, since the request's own one will not commit.
        A client that did not authenticate is nobody to hold to account: it is counted, not
        appended to the chain, whose lock it could otherwise take at will (issue 13, item 8)."""
        self.db.rollback()
        if ex.client is None:
            refused_unauthenticated("token_exchange", reason or "server_error")
            return
        with self.services.db.session() as session:
            self._audit(ex, session, outcome=outcome, reason=reason, detail=detail)

    def _audit(self, ex: Exchange, session: Any, *, outcome: str, reason: str | None,
               detail: dict[str, Any]) -> None:
        """One record per exchange, written before the response leaves."""
        s = self.services
        record = AuditRecord(
            event="edge_mint" if ex.role == "edge" else "token_exchange",
            outcome=outcome,
            reason=reason,
            correlation_id=correlation_id(),
            user_id=ex.user.id if ex.user else None,
            agent_id=ex.agent_id or (ex.client.client_id if ex.client else None),
            actor_chain=_actor_chain(ex.act) if ex.act else [],
            platform=ex.platform,
            intent=ex.intent.to_json() if ex.intent else None,
            intent_hash=ex.intent.hash() if ex.intent else None,
            within_mandate=ex.within_mandate,
            policy_ids=ex.policy_ids,
            approval_id=ex.approval_id,
            token_jti=ex.token.jti if ex.token else None,
            client_ip=getattr(self.request, "client_ip", None),
            detail={"client_id": ex.client.client_id if ex.client else None, **detail},
        )
        s.audit.append(session, record, now=self.now)


def _remaining(subject: dict[str, Any], now: int, ttl: int) -> int:
    """TX-08: `ttl`, capped at what is left of the subject token; never past its exp."""
    left = int(subject.get("exp", now + ttl)) - now
    if left <= 0:
        raise InvalidRequestError("subject_token is invalid, expired or revoked",
                                  debug="expired")
    return min(ttl, left)


def _act_depth(act: dict[str, Any] | None) -> int:
    depth = 0
    while isinstance(act, dict):
        depth += 1
        act = act.get("act")
    return depth


def _actor_chain(act: dict[str, Any] | None) -> list[str]:
    chain: list[str] = []
    while isinstance(act, dict):
        chain.append(str(act.get("sub")))
        act = act.get("act")
    return chain


def _outcome_of(error: OAuthError) -> str:
    return {
        "approval_required": "step_up",
        "rate_limited": "rate_limited",
        "access_denied": "denied",
        "authorization_pending": "pending",
        "slow_down": "pending",
        "expired_token": "expired",
        "connection_required": "denied",
        "temporarily_unavailable": "error",
        "server_error": "error",
    }.get(error.error, "invalid")


def _reason_of(error: OAuthError, ex: Exchange) -> str:
    if isinstance(error, PolicyDeniedError) and error.debug:
        return error.debug
    return error.error
