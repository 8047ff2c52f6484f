"""JwtBearerGrant.issue (RFC 7523 §2.1 for ID-JAGs, Cross-App Access) in-process at a fixed
`now`, on SQLite and PostgreSQL (it provisions users and audits every outcome): the IdP is an
in-memory discovery document and JWKS behind a fake `Outbound` (no server), its ID-JAGs are
signed here. The user assertion and the access token it issues, and one test per refusal it
raises, the ID-JAG's exp/iat windows at their boundary second."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.errors import (
    InvalidDpopProofError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
)
from authserver.grants.jwt_bearer import MAX_ASSERTION_LENGTH, JwtBearerGrant
from authserver.identity.federation import Federation
from authserver.identity.id_tokens import ID_TOKEN_LEEWAY, MAX_ID_JAG_LIFETIME
from authserver.identity.users import user_id_for
from authserver.models import User
from authserver.models.audit import AuditEvent
from authserver.services import Services
from tests.dpop_helpers import ProofKey
from tests.grant_helpers import (  # noqa: F401 (fixtures)
    IDP,
    ISSUER,
    NOW,
    PLATFORMS,
    RESOURCE,
    IdP,
    assert_refusal,
    built_services,
    claims_of,
    database_url,
    db,
    new_client,
    oauth_client,
    postgres_template,
    proof,
    refusal,
    sqlite_template,
    token_request,
)
from tests.stack import mandate

GRANT = JwtBearerGrant()
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
IDPS = {"corp": {"issuer": IDP, "client_id": "authserver-rp", "client_secret": "rp-secret",
                 "id_jag": True}}


@pytest.fixture
def idp() -> IdP:
    return IdP()


@pytest.fixture
def services(tmp_path: Any, database_url: str, idp: IdP) -> Iterator[Services]:
    with built_services(tmp_path, database_url, idps=IDPS,
                        platforms=PLATFORMS) as built:
        federation = Federation.from_settings(built.settings.idps, built.store,
                                              outbound=idp.outbound())
        yield dataclasses.replace(built, federation=federation)


@pytest.fixture
def client_id(services: Services) -> str:
    return new_client(services, grant_types=[JWT_BEARER])


def present(services: Services, db: Session, client_id: str, assertion: str | None, *,
            dpop: tuple[str, ...] = (), **form: Any) -> Any:
    values = {"assertion": assertion, **form}
    values = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in values.items()
              if v is not None}
    result = GRANT.issue(services, token_request(db, values, dpop=dpop),
                         oauth_client(db, client_id))
    db.commit()
    return result


def refused(services: Services, db: Session, client_id: str, assertion: str | None,
            **kwargs: Any) -> OAuthError:
    error = refusal(lambda: present(services, db, client_id, assertion, **kwargs))
    with services.db.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [(e.event, e.outcome, e.reason) for e in events][-1:] == [
            ("id_jag", "invalid", error.reason)]
    return error


def alice(services: Services) -> str:
    return user_id_for(services.require_federation().get("corp").config,
                       {"iss": IDP, "sub": "alice"})


# --- issued ------------------------------------------------------------------------------------


def test_a_user_assertion_bound_to_the_callers_key(services: Services, db: Session,
                                                   idp: IdP, client_id: str) -> None:
    key = ProofKey()
    grant = idp.id_jag(client_id, scope="read", authorization_details=mandate())
    result = present(services, db, client_id, grant, dpop=proof(key))
    claims = claims_of(services, result.body["access_token"])
    user = alice(services)
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        user, client_id, ISSUER, "read")
    assert (claims["cnf"], claims["act"], claims["auth_time"]) == (
        {"jkt": key.jkt}, {"sub": client_id}, NOW - 60)
    assert claims["exp"] - claims["iat"] == services.settings.user_assertion_ttl
    assert claims["authorization_details"][0]["type"] == "agent_mandate"
    with services.db.session() as session:
        row = session.get(User, user)
        assert row is not None and row.email == "alice@acme.example"
        event = session.scalars(select(AuditEvent)).one()
        assert (event.event, event.outcome, event.user_id, event.token_jti) == (
            "id_jag", "allowed", user, claims["jti"])


def test_a_user_assertion_outlives_neither_the_grant(services: Services, db: Session,
                                                     idp: IdP, client_id: str) -> None:
    grant = idp.id_jag(client_id, iat=NOW - 299, exp=NOW + 1)
    result = present(services, db, client_id, grant, dpop=proof(ProofKey()))
    claims = claims_of(services, result.body["access_token"])
    assert claims["exp"] - claims["iat"] == 1


def test_an_access_token_for_a_granted_resource(services: Services, db: Session, idp: IdP,
                                                client_id: str) -> None:
    grant = idp.id_jag(client_id, resource=RESOURCE, scope="read write admin")
    result = present(services, db, client_id, grant)
    claims = claims_of(services, result.body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        alice(services), client_id, RESOURCE, "read write")
    assert claims["exp"] - claims["iat"] == services.settings.access_token_ttl
    assert "cnf" not in claims and "act" not in claims


def test_the_last_second_of_the_exp_leeway_is_accepted(services: Services, db: Session,
                                                       idp: IdP, client_id: str) -> None:
    # For a resource (an access token): its lifetime is ours, not the grant's.
    grant = idp.id_jag(client_id, iat=NOW - 300, exp=NOW - ID_TOKEN_LEEWAY + 1,
                       resource=RESOURCE)
    result = present(services, db, client_id, grant)
    assert claims_of(services, result.body["access_token"])["aud"] == RESOURCE


def test_no_user_assertion_from_a_grant_past_its_exp(services: Services, db: Session,
                                                     idp: IdP, client_id: str) -> None:
    # Within the verification leeway the ID-JAG still verifies, but a user assertion from it
    # would outlive it: refused, as the edge mint refuses an IdP token with no lifetime left.
    grant = idp.id_jag(client_id, iat=NOW - 300, exp=NOW)
    error = refused(services, db, client_id, grant, dpop=proof(ProofKey()))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_no_lifetime_left")


def test_an_iat_at_the_edge_of_the_future_skew_is_accepted(services: Services, db: Session,
                                                           idp: IdP, client_id: str) -> None:
    grant = idp.id_jag(client_id, iat=NOW + ID_TOKEN_LEEWAY, exp=NOW + 300)
    assert present(services, db, client_id, grant, dpop=proof(ProofKey())).body["access_token"]


# --- the assertion parameter -------------------------------------------------------------------


def test_a_missing_assertion(services: Services, db: Session, client_id: str) -> None:
    error = refused(services, db, client_id, None)
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "assertion is required",
                   "assertion_missing")


def test_an_assertion_one_character_too_large(services: Services, db: Session,
                                              client_id: str) -> None:
    error = refused(services, db, client_id, "a" * (MAX_ASSERTION_LENGTH + 1))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "assertion is too large",
                   "assertion_too_large")


def test_no_idp_configured(services: Services, db: Session, idp: IdP, client_id: str) -> None:
    without = dataclasses.replace(services, federation=None)
    error = refused(without, db, client_id, idp.id_jag(client_id))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "no_idp_configured")
    assert error.debug == "no idp configured"


# --- the ID-JAG (verify_id_jag): each failed check is its debug ---------------------------------


@pytest.mark.parametrize(("change", "debug"), [
    ({"header": {"typ": "JWT"}}, "typ 'JWT' is not oauth-id-jag+jwt"),
    ({"iss": "https://other.example.com"}, "untrusted issuer 'https://other.example.com'"),
    ({"aud": [ISSUER, RESOURCE], "azp": ISSUER}, "aud is not exactly this server"),
    ({"aud": RESOURCE}, "aud mismatch"),
    ({"jti": None}, "jti missing or invalid"),
    # The exp and iat windows, at their boundary second.
    ({"iat": NOW - 300, "exp": NOW - ID_TOKEN_LEEWAY}, "expired"),
    ({"iat": NOW + ID_TOKEN_LEEWAY + 1, "exp": NOW + 300}, "iat in the future"),
    ({"iat": NOW, "exp": NOW + MAX_ID_JAG_LIFETIME + 1}, "lifetime too long"),
], ids=["typ", "iss", "aud-several", "aud-other", "jti", "exp", "iat", "lifetime"])
def test_an_unacceptable_id_jag(services: Services, db: Session, idp: IdP, client_id: str,
                                change: dict[str, Any], debug: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id, **change))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_rejected")
    assert error.debug == debug


def test_an_id_jag_signed_by_another_key(services: Services, db: Session, idp: IdP,
                                         client_id: str) -> None:
    forged = IdP().id_jag(client_id)  # same kid, another key
    error = refused(services, db, client_id, forged)
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_rejected")
    assert error.debug is not None and error.debug.startswith("bad signature")


def test_an_id_jag_for_another_client(services: Services, db: Session, idp: IdP,
                                      client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag("cli_other"))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_other_client")
    assert error.debug == "client_id is not the authenticated client"


# --- resources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", [[""], [1], {"a": 1}])
def test_a_malformed_resource_claim(services: Services, db: Session, idp: IdP, client_id: str,
                                    resource: Any) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id, resource=resource))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_resource_malformed")


@pytest.mark.parametrize("granted", [None, RESOURCE], ids=["none-granted", "other-granted"])
def test_a_requested_resource_beyond_the_grant(services: Services, db: Session, idp: IdP,
                                               client_id: str, granted: str | None) -> None:
    # No resource in the grant: only this server (a user assertion) is granted.
    requested = RESOURCE if granted is None else ISSUER
    error = refused(services, db, client_id, idp.id_jag(client_id, resource=granted),
                    resource=requested)
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "The requested resource exceeds the grant", "resource_exceeds_grant")


def test_a_granted_resource_not_served(services: Services, db: Session, idp: IdP,
                                       client_id: str) -> None:
    error = refused(services, db, client_id,
                    idp.id_jag(client_id, resource="https://other.example.com/api"))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "The granted resource is not served by this server", "resource_granted_unknown")


def test_a_gateway_resource(services: Services, db: Session, idp: IdP, client_id: str) -> None:
    gateway = ISSUER + "/gateway/crm"
    error = refused(services, db, client_id, idp.id_jag(client_id, resource=gateway),
                    resource=gateway)
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "Gateway tokens are issued only for an intent", "resource_gateway")


def test_this_server_with_another_resource(services: Services, db: Session, idp: IdP,
                                           client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id, resource=[ISSUER, RESOURCE]))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "A user assertion is only for this server", "resource_mixes_this_server")


# --- scope, mandate, user, DPoP, single use ----------------------------------------------------


def test_a_malformed_scope_claim(services: Services, db: Session, idp: IdP,
                                 client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id, scope=["read"]))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_scope_malformed")


def test_a_requested_scope_beyond_the_grant(services: Services, db: Session, idp: IdP,
                                            client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id, scope="read"),
                    scope="read write")
    assert_refusal(error, InvalidScopeError, 400, "invalid_scope",
                   "The requested scope exceeds the granted scope", "scope_exceeds_grant")


def test_authorization_details_in_the_request(services: Services, db: Session, idp: IdP,
                                              client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id),
                    authorization_details=mandate())
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   "authorization_details come from the assertion only",
                   "authorization_details_in_request")


@pytest.mark.parametrize("details", [{"type": "agent_mandate"}, ["x"]])
def test_malformed_authorization_details_claim(services: Services, db: Session, idp: IdP,
                                               client_id: str, details: Any) -> None:
    error = refused(services, db, client_id,
                    idp.id_jag(client_id, authorization_details=details))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_details_malformed")


def test_an_invalid_mandate(services: Services, db: Session, idp: IdP, client_id: str) -> None:
    bad = [{**mandate()[0], "platforms": []}]
    error = refused(services, db, client_id, idp.id_jag(client_id, authorization_details=bad))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_mandate_invalid")
    assert error.debug is not None and error.debug.startswith("mandate: ")


def test_a_deprovisioned_user(services: Services, db: Session, idp: IdP,
                              client_id: str) -> None:
    present(services, db, client_id, idp.id_jag(client_id), dpop=proof(ProofKey()))
    with services.db.session() as session:
        session.execute(update(User).where(User.id == alice(services)).values(active=False))
    error = refused(services, db, client_id, idp.id_jag(client_id), dpop=proof(ProofKey()))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_user_refused")
    assert error.debug == f"user {alice(services)} is deprovisioned"


def test_a_tenant_not_bound_to_the_idp(services: Services, db: Session, idp: IdP,
                                       client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id, tenant="globex"))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_user_refused")
    with services.db.session() as session:
        assert session.scalars(select(User)).all() == []


def test_a_user_assertion_needs_a_dpop_proof(services: Services, db: Session, idp: IdP,
                                             client_id: str) -> None:
    error = refused(services, db, client_id, idp.id_jag(client_id))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof required", "dpop_proof_required")


def test_a_dpop_proof_past_the_window(services: Services, db: Session, idp: IdP,
                                      client_id: str) -> None:
    window = services.settings.dpop_proof_window
    error = refused(services, db, client_id, idp.id_jag(client_id),
                    dpop=proof(ProofKey(), iat=NOW - window - 1))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof has expired", "dpop_proof_invalid")


def test_a_replayed_id_jag(services: Services, db: Session, idp: IdP, client_id: str) -> None:
    grant = idp.id_jag(client_id)
    present(services, db, client_id, grant, dpop=proof(ProofKey()))
    error = refused(services, db, client_id, grant, dpop=proof(ProofKey()))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The assertion is not acceptable", "id_jag_replayed")
    assert error.debug == "ID-JAG already used"


def test_a_refused_request_leaves_the_grant_usable(services: Services, db: Session, idp: IdP,
                                                   client_id: str) -> None:
    # The grant is spent only by the last check: corrected, the same ID-JAG is accepted.
    grant = idp.id_jag(client_id)
    refused(services, db, client_id, grant)  # no DPoP proof
    assert present(services, db, client_id, grant, dpop=proof(ProofKey())).body["access_token"]
