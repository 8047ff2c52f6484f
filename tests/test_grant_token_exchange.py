"""TokenExchangeGrant.issue (RFC 8693; docs/architecture.md "Two exchanges") in-process at a
fixed `now`, on SQLite and PostgreSQL (it writes audit records, approvals): the agent exchange
of a user assertion minted here with the project's own keyring (as the edge mint would) for a
capability token or a narrowed assertion, and one test per refusal of the dispatch
(token_exchange/__init__.py), exchange.py, agent.py, delegation.py and the edge mint's checks
that come before an IdP is consulted. Cedar is the default policies/ directory. Every refusal
is audited with its reason (`assert_audited`)."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.errors import (
    ApprovalRequiredError,
    ConnectionRequiredError,
    InvalidAuthorizationDetailsError,
    InvalidDpopProofError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    PolicyDeniedError,
    RateLimitedError,
)
from authserver.grants.token_exchange import (
    MAX_ACT_DEPTH,
    MAX_TOKEN_LENGTH,
    TT_ACCESS_TOKEN,
    TT_ID_TOKEN,
    TT_JWT,
    TokenExchangeGrant,
)
from authserver.identity import IdentityError, IdPConfig
from authserver.identity.federation import Federation
from authserver.identity.users import user_id_for
from authserver.models import Approval, User
from authserver.models.audit import AuditEvent
from authserver.models.broker import Connection
from authserver.services import Services
from authserver.tokens import TokenRequestContext, issue_access_token, revoke_access_token
from tests.dpop_helpers import ProofKey
from tests.grant_helpers import (  # noqa: F401 (fixtures)
    CRM_API,
    EDGE_AUD,
    IDP,
    ISSUER,
    NO_STORE,
    NOW,
    PLATFORMS,
    IdP,
    assert_refusal,
    built_services,
    claims_of,
    database_url,
    db,
    new_client,
    new_user,
    oauth_client,
    postgres_template,
    proof,
    refusal,
    sqlite_template,
    token_request,
)
from tests.stack import intent, mandate

GRANT = TokenExchangeGrant()
TX = "urn:ietf:params:oauth:grant-type:token-exchange"
GATEWAY = ISSUER + "/gateway/crm"
ALL_ACTIONS = ["read", "create", "update", "delete", "bulk_update", "bulk_delete"]
READ_DELETE = mandate({"platform": "crm", "actions": ["read", "delete"], "resources": ["deal:*"],
                       "max_count": 1})


@pytest.fixture
def settings_extra() -> dict[str, Any]:
    return {}


@pytest.fixture
def services(tmp_path: Any, database_url: str, settings_extra: dict[str, Any]
             ) -> Iterator[Services]:
    with built_services(tmp_path, database_url, platforms=PLATFORMS, **settings_extra) as built:
        yield built


class Agent:
    """An agent: a private_key_jwt client that may exchange, and its DPoP key."""

    def __init__(self, services: Services, **attributes: Any) -> None:
        self.signing = ECKey.generate_key("P-256", parameters={"kid": "k1"})
        self.dpop = ProofKey()
        self.client_id = new_client(
            services, {"allowed_platforms": ["crm"], "allowed_actions": ALL_ACTIONS,
                       **attributes},
            token_endpoint_auth_method="private_key_jwt", grant_types=[TX],
            jwks={"keys": [self.signing.as_dict(private=False)]})

    def client_assertion(self, **claims: Any) -> str:
        """Its RFC 7523 client assertion (an edge's or a caller's `actor_token`)."""
        body = {"iss": self.client_id, "sub": self.client_id, "aud": ISSUER, "iat": NOW,
                "exp": NOW + 60, "jti": secrets.token_urlsafe(12), **claims}
        return jwt.encode({"alg": "ES256", "kid": "k1"}, body, self.signing)

    def own_token(self, services: Services) -> str:
        """A token of ours issued to the agent itself (client credentials)."""
        return issue_access_token(services.keyring, ISSUER, TokenRequestContext(
            sub=self.client_id, client_id=self.client_id, audience=ISSUER, ttl=300,
            jkt=self.dpop.jkt), now=NOW).value


@pytest.fixture
def agent(services: Services) -> Agent:
    return Agent(services)


@pytest.fixture
def user(services: Services) -> str:
    return new_user(services, roles=[], groups=[])


def user_assertion(services: Services, user: str, agent: Agent, *, issued: int = NOW,
                   ttl: int = 300, details: list[dict[str, Any]] | None = None,
                   **values: Any) -> str:
    """The user assertion the edge mint issues: sub = the user, client_id/act = the agent,
    aud = this server, cnf.jkt = the agent's key, the user's mandate."""
    ctx: dict[str, Any] = {
        "sub": user, "client_id": agent.client_id, "audience": ISSUER, "ttl": ttl,
        "jkt": agent.dpop.jkt, "act": {"sub": agent.client_id},
        "authorization_details": mandate() if details is None else details, **values}
    return issue_access_token(services.keyring, ISSUER, TokenRequestContext(**ctx),
                              now=issued).value


def connect(services: Services, user: str) -> None:
    with services.db.session() as session:
        session.add(Connection(id="con_crm", user_id=user, platform="crm", status="active",
                               access_token_ciphertext="sealed", refresh_token_ciphertext=None,
                               access_expires_at=None, access_obtained_at=NOW, scope="read",
                               generation=1, created_at=NOW, updated_at=NOW))


def exchange(services: Services, db: Session, client_id: str, form: dict[str, Any], *,
             dpop: tuple[str, ...] = ()) -> Any:
    values = {k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in form.items()
              if v is not None}
    result = GRANT.issue(services, token_request(db, values, dpop=dpop),
                         oauth_client(db, client_id))
    db.commit()
    return result


def agent_form(subject: str, **form: Any) -> dict[str, Any]:
    return {"subject_token": subject, "subject_token_type": TT_ACCESS_TOKEN, **form}


def capability_form(subject: str, **form: Any) -> dict[str, Any]:
    return agent_form(subject, **{"audience": "crm", "intent": intent(), **form})


def refused(services: Services, db: Session, client_id: str, form: dict[str, Any], *,
            dpop: tuple[str, ...] = ()) -> OAuthError:
    error = refusal(lambda: exchange(services, db, client_id, form, dpop=dpop))
    assert_audited(services, error)
    return error


def assert_audited(services: Services, error: OAuthError) -> None:
    """The refusal's one audit record carries its reason."""
    with services.db.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [(e.outcome == "allowed", e.reason) for e in events][-1:] == [
            (False, error.reason)]


# --- the capability token ------------------------------------------------------------------------


def test_a_capability_token_for_the_gateway(services: Services, db: Session, agent: Agent,
                                            user: str) -> None:
    connect(services, user)
    subject = user_assertion(services, user, agent, scope="read")
    result = exchange(services, db, agent.client_id, capability_form(subject),
                      dpop=proof(agent.dpop))
    claims = claims_of(services, result.body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        user, agent.client_id, GATEWAY, "read")
    assert (claims["cnf"], claims["act"], claims["platform"]) == (
        {"jkt": agent.dpop.jkt}, {"sub": agent.client_id}, "crm")
    assert claims["exp"] - claims["iat"] == services.settings.capability_token_ttl
    assert result.body["issued_token_type"] == TT_ACCESS_TOKEN
    assert claims["authorization_details"][0]["type"] == "agent_intent"
    with services.db.session() as session:
        event = session.scalars(select(AuditEvent)).one()
        assert (event.event, event.outcome, event.user_id, event.token_jti) == (
            "token_exchange", "allowed", user, claims["jti"])


def test_the_capability_outlives_neither_the_assertion(services: Services, db: Session,
                                                       agent: Agent, user: str) -> None:
    # TX-08 at its edge: an assertion with one second left gives a one-second token.
    connect(services, user)
    subject = user_assertion(services, user, agent, issued=NOW - 299, ttl=300)
    result = exchange(services, db, agent.client_id, capability_form(subject),
                      dpop=proof(agent.dpop))
    claims = claims_of(services, result.body["access_token"])
    assert claims["exp"] - claims["iat"] == 1


def test_a_narrowed_assertion_without_a_target(services: Services, db: Session, agent: Agent,
                                               user: str) -> None:
    subject = user_assertion(services, user, agent, details=READ_DELETE)
    narrower = mandate({"platform": "crm", "actions": ["read"], "resources": ["deal:*"],
                        "max_count": 1})
    result = exchange(services, db, agent.client_id,
                      agent_form(subject, authorization_details=narrower),
                      dpop=proof(agent.dpop))
    claims = claims_of(services, result.body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["cnf"]) == (
        user, agent.client_id, ISSUER, {"jkt": agent.dpop.jkt})
    assert claims["authorization_details"][0]["platforms"][0]["actions"] == ["read"]
    assert claims["exp"] - claims["iat"] == services.settings.user_assertion_ttl


def test_a_designated_agent_gets_an_assertion_bound_to_its_key(
        services: Services, db: Session, agent: Agent, user: str) -> None:
    other = Agent(services)
    subject = user_assertion(services, user, agent)
    result = exchange(services, db, agent.client_id, agent_form(
        subject, actor_token=other.client_assertion(), actor_token_type=TT_JWT,
        dpop_jkt=other.dpop.jkt), dpop=proof(agent.dpop))
    claims = claims_of(services, result.body["access_token"])
    assert (claims["cnf"], claims["may_act"]) == (
        {"jkt": other.dpop.jkt}, {"sub": other.client_id, "iss": ISSUER})


def test_the_designee_acts_with_a_nested_act(services: Services, db: Session, agent: Agent,
                                             user: str) -> None:
    other = Agent(services)
    connect(services, user)
    subject = user_assertion(services, user, agent,
                             extra={"may_act": {"sub": other.client_id, "iss": ISSUER}},
                             jkt=other.dpop.jkt)
    result = exchange(services, db, other.client_id, capability_form(subject),
                      dpop=proof(other.dpop))
    claims = claims_of(services, result.body["access_token"])
    assert claims["act"] == {"sub": other.client_id, "act": {"sub": agent.client_id}}


# --- dispatch and parameters (token_exchange/__init__.py) ---------------------------------------


@pytest.mark.parametrize("form", [{"subject_token_type": TT_ACCESS_TOKEN},
                                  {"subject_token": "x"}], ids=["no-token", "no-type"])
def test_subject_token_and_type_are_required(services: Services, db: Session, agent: Agent,
                                             form: dict[str, Any]) -> None:
    error = refused(services, db, agent.client_id, form)
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token and subject_token_type are required", "subject_token_missing")


def test_a_subject_token_one_character_too_large(services: Services, db: Session,
                                                 agent: Agent) -> None:
    error = refused(services, db, agent.client_id, agent_form("a" * (MAX_TOKEN_LENGTH + 1)))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is too large", "subject_token_too_large")


@pytest.mark.parametrize("actor", [{"actor_token": "x"}, {"actor_token_type": TT_JWT}],
                         ids=["no-type", "no-token"])
def test_actor_token_and_type_go_together(services: Services, db: Session, agent: Agent,
                                          actor: dict[str, str]) -> None:
    error = refused(services, db, agent.client_id, agent_form("x", **actor))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token and actor_token_type go together", "actor_token_type_mismatch")


def test_malformed_authorization_details(services: Services, db: Session,
                                         agent: Agent) -> None:
    error = refused(services, db, agent.client_id,
                    agent_form("x", authorization_details='{"type": "agent_mandate"}'))
    assert type(error) is InvalidAuthorizationDetailsError
    assert (error.status_code, error.reason) == (400, "authorization_details_malformed")
    assert error.headers() == NO_STORE


def test_the_edge_mint_needs_a_mandate(services: Services, db: Session) -> None:
    edge = new_client(services, {"trusted_edge": True}, grant_types=[TX])
    error = refused(services, db, edge,
                    {"subject_token": "x", "subject_token_type": TT_ID_TOKEN})
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "The edge mint needs authorization_details with one agent_mandate",
                   "edge_mint_no_mandate")


def test_only_a_trusted_edge_mints(services: Services, db: Session, agent: Agent) -> None:
    error = refused(services, db, agent.client_id, {
        "subject_token": "x", "subject_token_type": TT_ID_TOKEN,
        "authorization_details": mandate()})
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "Only a client registered as a trusted edge may mint user assertions",
                   "edge_not_trusted")


@pytest.mark.parametrize("subject_type", [TT_JWT, "urn:example:other"])
def test_the_agent_exchange_takes_an_access_token(services: Services, db: Session,
                                                  agent: Agent, subject_type: str) -> None:
    error = refused(services, db, agent.client_id,
                    {"subject_token": "x", "subject_token_type": subject_type})
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   f"Unsupported subject_token_type: the agent exchange takes {TT_ACCESS_TOKEN}"
                   " (the user assertion)", "subject_token_type_unsupported")


# --- the edge mint before the IdP (edge_mint.py) -----------------------------------------------


@pytest.fixture
def edge(services: Services) -> str:
    return new_client(services, {"trusted_edge": True}, grant_types=[TX])


def edge_form(**form: Any) -> dict[str, Any]:
    return {"subject_token": "x", "subject_token_type": TT_ID_TOKEN,
            "authorization_details": mandate(), **form}


def test_the_edge_mint_checks_a_sent_dpop_proof(services: Services, db: Session,
                                                edge: str) -> None:
    window = services.settings.dpop_proof_window
    error = refused(services, db, edge, edge_form(),
                    dpop=proof(ProofKey(), iat=NOW - window - 1))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof has expired", "dpop_proof_invalid")


def test_the_edge_mint_issues_access_tokens_only(services: Services, db: Session,
                                                 edge: str) -> None:
    error = refused(services, db, edge, edge_form(requested_token_type=TT_JWT))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "Unsupported requested_token_type", "requested_token_type_unsupported")


def test_the_edge_mint_takes_an_idp_token(services: Services, db: Session, edge: str) -> None:
    error = refused(services, db, edge, edge_form(subject_token_type=TT_ACCESS_TOKEN))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "The edge exchange takes an IdP id_token or jwt", "subject_token_type_not_idp")


def test_the_edge_mint_without_an_idp(services: Services, db: Session, edge: str) -> None:
    error = refused(services, db, edge, edge_form())
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "No identity provider is configured", "no_idp_configured")


# --- the edge mint with an IdP (edge_mint.py) ---------------------------------------------------
# The IdP is a discovery document and JWKS behind a fake Outbound (tests/grant_helpers.py).

CORP = IdPConfig(name="corp", issuer=IDP, client_id="authserver-rp", client_secret="s",
                 trusted_audiences=(EDGE_AUD,))


@pytest.fixture
def idp() -> IdP:
    return IdP()


@pytest.fixture
def federated(services: Services, idp: IdP) -> Services:
    return dataclasses.replace(services, federation=Federation([CORP], services.store,
                                                               outbound=idp.outbound()))


def mint_form(idp: IdP, agent: Agent, *, id_token: str | None = None,
              **form: Any) -> dict[str, Any]:
    return edge_form(**{"subject_token": id_token or idp.id_token(),
                        "actor_token": agent.client_assertion(), "actor_token_type": TT_JWT,
                        "dpop_jkt": agent.dpop.jkt, **form})


def test_the_edge_mints_a_user_assertion_for_the_agent(federated: Services, db: Session,
                                                       idp: IdP, edge: str,
                                                       agent: Agent) -> None:
    result = exchange(federated, db, edge, mint_form(idp, agent))
    claims = claims_of(federated, result.body["access_token"])
    user = user_id_for(CORP, {"iss": IDP, "sub": "alice"})
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["cnf"]) == (
        user, agent.client_id, ISSUER, {"jkt": agent.dpop.jkt})
    assert (claims["act"], claims["auth_time"]) == ({"sub": agent.client_id}, NOW - 60)
    assert claims["exp"] - claims["iat"] == federated.settings.user_assertion_ttl
    assert claims["authorization_details"][0]["type"] == "agent_mandate"
    with federated.db.session() as session:
        event = session.scalars(select(AuditEvent)).one()
        assert (event.event, event.outcome, event.user_id, event.agent_id) == (
            "edge_mint", "allowed", user, agent.client_id)


def test_the_assertion_outlives_neither_the_idp_token(federated: Services, db: Session,
                                                      idp: IdP, edge: str,
                                                      agent: Agent) -> None:
    token = idp.id_token(iat=NOW - 299, exp=NOW + 1)
    result = exchange(federated, db, edge, mint_form(idp, agent, id_token=token))
    claims = claims_of(federated, result.body["access_token"])
    assert claims["exp"] - claims["iat"] == 1


def test_an_agents_own_token_names_the_agent_and_its_key(federated: Services, db: Session,
                                                         idp: IdP, edge: str,
                                                         agent: Agent) -> None:
    result = exchange(federated, db, edge, edge_form(
        subject_token=idp.id_token(), actor_token=agent.own_token(federated),
        actor_token_type=TT_ACCESS_TOKEN))
    assert claims_of(federated, result.body["access_token"])["cnf"] == {"jkt": agent.dpop.jkt}


@pytest.mark.parametrize(("claims", "debug"), [
    ({"aud": [EDGE_AUD, "authserver-rp"], "azp": EDGE_AUD}, "aud is our own login client"),
    ({"iss": "https://other.example.com"}, "untrusted issuer 'https://other.example.com'"),
    ({"iat": NOW - 300, "exp": NOW - 30}, "expired"),
], ids=["login-client", "issuer", "expired"])
def test_an_unacceptable_idp_token(federated: Services, db: Session, idp: IdP, edge: str,
                                   agent: Agent, claims: dict[str, Any], debug: str) -> None:
    error = refused(federated, db, edge, mint_form(idp, agent, id_token=idp.id_token(**claims)))
    assert_refusal(error, IdentityError, 400, "invalid_request",
                   "The identity token is not acceptable", "subject_token_idp_rejected")
    assert error.debug == debug


def test_an_idp_token_expired_at_exactly_exp(federated: Services, db: Session, idp: IdP,
                                             edge: str, agent: Agent) -> None:
    # Within the IdP token leeway, but no lifetime left for the assertion (TX-08).
    token = idp.id_token(iat=NOW - 300, exp=NOW)
    error = refused(federated, db, edge, mint_form(idp, agent, id_token=token))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked",
                   "subject_token_no_lifetime_left")


def test_a_user_in_a_tenant_not_bound_to_the_idp(federated: Services, db: Session, idp: IdP,
                                                 edge: str, agent: Agent) -> None:
    error = refused(federated, db, edge,
                    mint_form(idp, agent, id_token=idp.id_token(tenant="globex")))
    assert_refusal(error, IdentityError, 400, "invalid_request",
                   "The identity token is not acceptable", "subject_user_refused")
    assert error.debug == "tenant 'globex' is not bound to idp corp"


def test_the_edge_mint_needs_an_actor(federated: Services, db: Session, idp: IdP,
                                      edge: str) -> None:
    error = refused(federated, db, edge, edge_form(subject_token=idp.id_token()))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token naming the agent is required", "actor_token_missing")


@pytest.mark.parametrize("dpop_jkt", [None, "x" * 42])
def test_the_agents_key_is_required(federated: Services, db: Session, idp: IdP, edge: str,
                                    agent: Agent, dpop_jkt: str | None) -> None:
    error = refused(federated, db, edge, mint_form(idp, agent, dpop_jkt=dpop_jkt))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "dpop_jkt (the agent's key thumbprint) is required", "agent_key_missing")


def test_the_agents_key_must_be_its_tokens(federated: Services, db: Session, idp: IdP,
                                           edge: str, agent: Agent) -> None:
    error = refused(federated, db, edge, edge_form(
        subject_token=idp.id_token(), actor_token=agent.own_token(federated),
        actor_token_type=TT_ACCESS_TOKEN, dpop_jkt=ProofKey().jkt))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "dpop_jkt does not match the actor token's key", "agent_key_mismatch")


def test_an_invalid_mandate_for_the_edge(federated: Services, db: Session, idp: IdP,
                                         edge: str, agent: Agent) -> None:
    bad = [{**mandate()[0], "platforms": []}]
    error = refused(federated, db, edge, mint_form(idp, agent, authorization_details=bad))
    assert (type(error), error.status_code, error.reason) == (
        InvalidAuthorizationDetailsError, 400, "mandate_invalid")


@pytest.mark.parametrize("target", [{"resource": GATEWAY}, {"audience": "crm"}])
def test_a_user_assertion_has_no_other_target(federated: Services, db: Session, idp: IdP,
                                              edge: str, agent: Agent,
                                              target: dict[str, str]) -> None:
    error = refused(federated, db, edge, mint_form(idp, agent, **target))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "A user assertion is only for this server", "target_not_this_server")


def test_a_replayed_idp_token(federated: Services, db: Session, idp: IdP, edge: str,
                              agent: Agent) -> None:
    token = idp.id_token()
    exchange(federated, db, edge, mint_form(idp, agent, id_token=token))
    error = refused(federated, db, edge, mint_form(idp, agent, id_token=token))
    assert_refusal(error, IdentityError, 400, "invalid_request",
                   "The identity token is not acceptable", "subject_token_replayed")
    assert error.debug == "subject_token already used"


def test_a_refused_mint_leaves_the_idp_token_usable(federated: Services, db: Session, idp: IdP,
                                                    edge: str, agent: Agent) -> None:
    token = idp.id_token()
    refused(federated, db, edge, mint_form(idp, agent, id_token=token, audience="crm"))
    assert exchange(federated, db, edge, mint_form(idp, agent, id_token=token)).body


# --- the subject assertion (agent.py, exchange.py) ---------------------------------------------


def test_the_agent_exchange_needs_a_dpop_proof(services: Services, db: Session, agent: Agent,
                                               user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, capability_form(subject))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof required", "dpop_proof_required")


def test_a_subject_token_not_ours(services: Services, db: Session, agent: Agent) -> None:
    error = refused(services, db, agent.client_id, capability_form("e30.e30.sig"),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked", "subject_token_bad_signature")
    assert error.debug == "signature"


def test_a_subject_token_past_the_leeway(services: Services, db: Session, agent: Agent,
                                         user: str) -> None:
    # Expired JWT_LEEWAY (30 s) ago: verify_access_token refuses it.
    subject = user_assertion(services, user, agent, issued=NOW - 330, ttl=300)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked", "subject_token_expired")


def test_a_subject_token_expired_at_exactly_exp(services: Services, db: Session, agent: Agent,
                                                user: str) -> None:
    # Within verify_access_token's leeway, but our own token: no skew is allowed for.
    subject = user_assertion(services, user, agent, issued=NOW - 300, ttl=300)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked",
                   "subject_token_expired_in_leeway")
    assert error.debug == "expired"


def test_a_revoked_subject_token(services: Services, db: Session, agent: Agent,
                                 user: str) -> None:
    subject = user_assertion(services, user, agent)
    with services.db.session() as session:
        revoke_access_token(session, claims_of(services, subject))
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked", "subject_token_revoked")


def test_a_subject_token_for_another_audience(services: Services, db: Session, agent: Agent,
                                              user: str) -> None:
    subject = user_assertion(services, user, agent, audience=GATEWAY)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is not for this server", "subject_token_wrong_audience")


def test_a_subject_token_that_is_no_user(services: Services, db: Session,
                                         agent: Agent) -> None:
    error = refused(services, db, agent.client_id, capability_form(agent.own_token(services)),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token does not represent a user", "subject_token_not_user")


def test_a_subject_whose_user_is_unknown(services: Services, db: Session, agent: Agent) -> None:
    # check_token_live refuses an unknown user as "user inactive", before agent.py's own
    # check (reason subject_user_inactive) could.
    subject = user_assertion(services, "usr_nobody", agent)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked", "subject_token_user_inactive")


def test_a_subject_whose_user_is_inactive(services: Services, db: Session, agent: Agent,
                                          user: str) -> None:
    # check_token_live refuses first: the user's deactivation is its "user inactive".
    subject = user_assertion(services, user, agent)
    with services.db.session() as session:
        session.execute(update(User).where(User.id == user).values(active=False))
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "subject_token is invalid, expired or revoked", "subject_token_user_inactive")


def test_a_proof_with_another_key_than_the_assertions(services: Services, db: Session,
                                                      agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(ProofKey()))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "DPoP proof key does not match the subject token", "dpop_key_mismatch")


def test_a_requested_token_type_other_than_access_token(services: Services, db: Session,
                                                        agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    capability_form(subject, requested_token_type=TT_JWT),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "Unsupported requested_token_type", "requested_token_type_unsupported")


def test_a_scope_wider_than_the_assertions(services: Services, db: Session, agent: Agent,
                                           user: str) -> None:
    subject = user_assertion(services, user, agent, scope="read")
    error = refused(services, db, agent.client_id, capability_form(subject, scope="read write"),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidScopeError, 400, "invalid_scope",
                   "scope may only narrow the subject token's scope", "scope_widened")


# --- the target (agent.py) ---------------------------------------------------------------------


def test_exactly_one_target(services: Services, db: Session, agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    capability_form(subject, resource=GATEWAY), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "Exactly one audience or resource", "target_not_single")


def test_an_unknown_audience(services: Services, db: Session, agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, capability_form(subject, audience="erp"),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target", "Unknown audience",
                   "target_unknown_audience")


@pytest.mark.parametrize("resource", [ISSUER + "/gateway/erp", "https://crm.example.com/api"])
def test_an_unknown_resource(services: Services, db: Session, agent: Agent, user: str,
                             resource: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    agent_form(subject, resource=resource, intent=intent()),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target", "Unknown resource",
                   "target_unknown_resource")


def test_a_designee_with_a_target(services: Services, db: Session, agent: Agent,
                                  user: str) -> None:
    other = Agent(services)
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, capability_form(
        subject, actor_token=other.client_assertion(), actor_token_type=TT_JWT),
        dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token does not name the client", "actor_not_client")


def test_a_dpop_jkt_with_a_target(services: Services, db: Session, agent: Agent,
                                  user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    capability_form(subject, dpop_jkt=ProofKey().jkt), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token does not name the client", "actor_not_client")


# --- the intent, policy, budget, connection (agent.py) -----------------------------------------


def test_a_target_needs_an_intent(services: Services, db: Session, agent: Agent,
                                  user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(subject, audience="crm"),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "An intent is required to reach a platform", "intent_missing")


def test_a_malformed_intent(services: Services, db: Session, agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    agent_form(subject, audience="crm", intent="{not json"),
                    dpop=proof(agent.dpop))
    assert (error.status_code, error.reason) == (400, "intent_invalid")
    assert error.headers() == NO_STORE


def test_an_intent_outside_the_mandate_is_denied(services: Services, db: Session,
                                                 agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    capability_form(subject, intent=intent(resource="contact:1")),
                    dpop=proof(agent.dpop))
    assert_refusal(error, PolicyDeniedError, 403, "access_denied", "The intent is not allowed",
                   "intent_mismatch")
    assert error.debug == "intent_mismatch"


def test_an_assertion_without_a_mandate_is_denied(services: Services, db: Session,
                                                  agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent, details=[])
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, PolicyDeniedError, 403, "access_denied", "The intent is not allowed",
                   "no_mandate")


def test_an_agent_not_allowed_the_platform_is_denied(services: Services, db: Session,
                                                     user: str) -> None:
    agent = Agent(services, allowed_platforms=["projects"])
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    # A not-allowlisted agent is reported as an intent mismatch (INTENT_MISMATCH_REASONS); the
    # audit record names the policy.
    assert_refusal(error, PolicyDeniedError, 403, "access_denied", "The intent is not allowed",
                   "intent_mismatch")
    with services.db.session() as session:
        event = session.scalars(select(AuditEvent)).one()
        assert event.policy_ids == ["deny-agent-not-allowlisted"]


def test_a_destructive_intent_asks_the_user(services: Services, db: Session, agent: Agent,
                                            user: str) -> None:
    subject = user_assertion(services, user, agent, details=READ_DELETE)
    error = refused(services, db, agent.client_id,
                    capability_form(subject, intent=intent("delete")), dpop=proof(agent.dpop))
    assert_refusal(error, ApprovalRequiredError, 403, "approval_required",
                   "User confirmation required", "approval_required")
    with services.db.session() as session:
        approval = session.scalars(select(Approval)).one()
        assert (approval.user_id, approval.agent_id, approval.platform, approval.status) == (
            user, agent.client_id, "crm", "pending")
    assert error.extra == {"approval_id": approval.id,
                           "approval_uri": f"{ISSUER}/approvals/{approval.id}",
                           "expires_in": approval.expires_at - NOW,
                           "interval": error.extra["interval"]}


def test_an_unknown_approval_id(services: Services, db: Session, agent: Agent,
                                user: str) -> None:
    subject = user_assertion(services, user, agent, details=READ_DELETE)
    error = refused(services, db, agent.client_id, capability_form(
        subject, intent=intent("delete"), approval_id="apr_nothing"), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "Unknown approval_id",
                   "invalid_grant")


@pytest.mark.parametrize("settings_extra", [{"rate_limits": {"read": {"limit": 1,
                                                                      "window": 60}}}])
def test_the_users_read_budget(services: Services, db: Session, agent: Agent,
                               user: str) -> None:
    connect(services, user)
    exchange(services, db, agent.client_id, capability_form(
        user_assertion(services, user, agent)), dpop=proof(agent.dpop))
    error = refused(services, db, agent.client_id, capability_form(
        user_assertion(services, user, agent)), dpop=proof(agent.dpop))
    assert_refusal(error, RateLimitedError, 429, "rate_limited", "Rate limit exceeded",
                   "rate_limited", {**NO_STORE, "Retry-After": "120"})


def test_no_live_connection_to_the_platform(services: Services, db: Session, agent: Agent,
                                            user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, capability_form(subject),
                    dpop=proof(agent.dpop))
    assert_refusal(error, ConnectionRequiredError, 403, "connection_required",
                   "The user has no live connection to this platform", "connection_missing")
    assert error.extra == {"connect_uri": error.extra["connect_uri"]}
    assert error.extra["connect_uri"].startswith(ISSUER)


def test_a_platform_token_only_for_an_executor(services: Services, db: Session, agent: Agent,
                                               user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id,
                    agent_form(subject, resource=CRM_API, intent=intent()),
                    dpop=proof(agent.dpop))
    assert_refusal(error, PolicyDeniedError, 403, "access_denied",
                   "This client may not receive platform tokens", "not_executor")
    assert error.debug == "not_executor"


# --- delegation (delegation.py) ----------------------------------------------------------------


def test_a_caller_the_assertion_does_not_name(services: Services, db: Session, agent: Agent,
                                              user: str) -> None:
    other = Agent(services)
    subject = user_assertion(services, user, agent, jkt=other.dpop.jkt)
    error = refused(services, db, other.client_id, capability_form(subject),
                    dpop=proof(other.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "The client may not act for this subject", "delegation_not_permitted")


def test_a_delegation_chain_one_too_long(services: Services, db: Session, agent: Agent,
                                         user: str) -> None:
    other = Agent(services)
    act: dict[str, Any] = {"sub": agent.client_id}
    for _ in range(MAX_ACT_DEPTH - 1):
        act = {"sub": agent.client_id, "act": act}
    subject = user_assertion(services, user, agent, act=act, jkt=other.dpop.jkt,
                             extra={"may_act": {"sub": other.client_id}})
    error = refused(services, db, other.client_id, capability_form(subject),
                    dpop=proof(other.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "Delegation chain is too long", "delegation_too_long_chain")


def test_an_actor_token_of_an_unsupported_type(services: Services, db: Session, agent: Agent,
                                               user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token="x", actor_token_type=TT_ID_TOKEN), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "Unsupported actor_token_type", "actor_token_type_unsupported")


def test_an_actor_access_token_that_is_a_users(services: Services, db: Session, agent: Agent,
                                               user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token=subject, actor_token_type=TT_ACCESS_TOKEN), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token must be the agent's own token", "actor_token_not_agent_own")


def test_an_actor_access_token_not_ours(services: Services, db: Session, agent: Agent,
                                        user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token="e30.e30.sig", actor_token_type=TT_ACCESS_TOKEN),
        dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token is invalid, expired or revoked", "actor_token_bad_signature")


def test_a_malformed_actor_assertion(services: Services, db: Session, agent: Agent,
                                     user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token="not-a-jws", actor_token_type=TT_JWT), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "Malformed actor_token",
                   "actor_token_malformed")


def test_an_actor_assertion_for_an_unknown_client(services: Services, db: Session,
                                                  agent: Agent, user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token=agent.client_assertion(sub="cli_nobody"), actor_token_type=TT_JWT),
        dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "Unknown actor",
                   "actor_unknown")


def test_a_replayed_actor_assertion(services: Services, db: Session, agent: Agent,
                                    user: str) -> None:
    other = Agent(services)
    actor = other.client_assertion()
    exchange(services, db, agent.client_id, agent_form(
        user_assertion(services, user, agent), actor_token=actor, actor_token_type=TT_JWT,
        dpop_jkt=other.dpop.jkt), dpop=proof(agent.dpop))
    error = refused(services, db, agent.client_id, agent_form(
        user_assertion(services, user, agent), actor_token=actor, actor_token_type=TT_JWT,
        dpop_jkt=other.dpop.jkt), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token was already used", "actor_token_replayed")


def test_an_actor_assertion_expired_past_the_leeway(services: Services, db: Session,
                                                    agent: Agent, user: str) -> None:
    other = Agent(services)
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token=other.client_assertion(iat=NOW - 90, exp=NOW - 30),
        actor_token_type=TT_JWT, dpop_jkt=other.dpop.jkt), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "actor_token is not acceptable", "client_assertion_expired")
    assert error.debug == "client_assertion is expired"


def test_an_actor_that_may_not_exchange(services: Services, db: Session, agent: Agent,
                                        user: str) -> None:
    other = Agent(services)
    with services.db.session() as session:
        from authserver.models import Client

        row = session.get(Client, other.client_id)
        assert row is not None
        row.client_metadata = {**row.client_metadata, "grant_types": ["client_credentials"]}
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token=other.client_assertion(), actor_token_type=TT_JWT,
        dpop_jkt=other.dpop.jkt), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "The actor is not an agent allowed to exchange", "actor_not_agent")


# --- the narrowed assertion (delegation.py) ----------------------------------------------------


def test_a_narrowed_assertion_needs_a_mandate(services: Services, db: Session, agent: Agent,
                                              user: str) -> None:
    subject = user_assertion(services, user, agent, details=[])
    error = refused(services, db, agent.client_id, agent_form(subject), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidAuthorizationDetailsError, 400, "invalid_authorization_details",
                   "A mandate can only be narrowed", "mandate_missing")


def test_a_mandate_that_widens(services: Services, db: Session, agent: Agent,
                               user: str) -> None:
    subject = user_assertion(services, user, agent)  # read only
    error = refused(services, db, agent.client_id,
                    agent_form(subject, authorization_details=READ_DELETE),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidAuthorizationDetailsError, 400, "invalid_authorization_details",
                   "A mandate can only be narrowed", "mandate_widened")


def test_a_mandate_for_another_request(services: Services, db: Session, agent: Agent,
                                       user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, authorization_details=mandate(request="Something else")),
        dpop=proof(agent.dpop))
    assert_refusal(error, InvalidAuthorizationDetailsError, 400, "invalid_authorization_details",
                   "A mandate can only be narrowed", "mandate_other_request")


def test_an_invalid_narrower_mandate(services: Services, db: Session, agent: Agent,
                                     user: str) -> None:
    subject = user_assertion(services, user, agent)
    bad = [{**mandate()[0], "platforms": []}]
    error = refused(services, db, agent.client_id, agent_form(subject, authorization_details=bad),
                    dpop=proof(agent.dpop))
    assert (type(error), error.status_code, error.reason) == (
        InvalidAuthorizationDetailsError, 400, "mandate_invalid")


def test_a_dpop_jkt_without_a_designee(services: Services, db: Session, agent: Agent,
                                       user: str) -> None:
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(subject, dpop_jkt=ProofKey().jkt),
                    dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "dpop_jkt is only for designating another agent", "dpop_jkt_without_designee")


@pytest.mark.parametrize("dpop_jkt", [None, "x" * 42])
def test_a_designee_needs_its_key(services: Services, db: Session, agent: Agent, user: str,
                                  dpop_jkt: str | None) -> None:
    other = Agent(services)
    subject = user_assertion(services, user, agent)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token=other.client_assertion(), actor_token_type=TT_JWT,
        dpop_jkt=dpop_jkt), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "dpop_jkt (the designated agent's key) is required", "designee_key_missing")


def test_a_designee_one_too_deep(services: Services, db: Session, agent: Agent,
                                 user: str) -> None:
    other = Agent(services)
    act: dict[str, Any] = {"sub": agent.client_id}
    for _ in range(MAX_ACT_DEPTH - 1):
        act = {"sub": agent.client_id, "act": act}
    subject = user_assertion(services, user, agent, act=act)
    error = refused(services, db, agent.client_id, agent_form(
        subject, actor_token=other.client_assertion(), actor_token_type=TT_JWT,
        dpop_jkt=other.dpop.jkt), dpop=proof(agent.dpop))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "Delegation chain is too long", "designee_chain_too_long")
