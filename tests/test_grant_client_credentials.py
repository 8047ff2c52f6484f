"""ClientCredentialsGrant.issue (RFC 6749 §4.4) in-process at a fixed `now`: the token it
issues, and one test per refusal it raises (all from authserver.grants.base: scope, resource
indicators, DPoP, registered resource servers). It writes no rows: SQLite only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from authserver import resource_servers
from authserver.errors import (
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    UseDpopNonceError,
)
from authserver.grants.client_credentials import ClientCredentialsGrant
from authserver.http.errors import render
from authserver.services import Services
from tests.dpop_helpers import ProofKey
from tests.grant_helpers import (  # noqa: F401 (fixtures)
    ISSUER,
    NO_STORE,
    NOW,
    RESOURCE,
    assert_refusal,
    built_services,
    claims_of,
    db,
    new_client,
    oauth_client,
    proof,
    refusal,
    sqlite_template,
    sqlite_url,
    token_request,
)

GRANT = ClientCredentialsGrant()
CC = "client_credentials"
RS = "https://rs.example.com/api"


@pytest.fixture
def settings_extra() -> dict[str, Any]:
    return {}


@pytest.fixture
def services(tmp_path: Any, sqlite_url: str, settings_extra: dict[str, Any]
             ) -> Iterator[Services]:
    with built_services(tmp_path, sqlite_url, **settings_extra) as built:
        yield built


def issue(services: Services, db: Session, client_id: str, form: dict[str, Any] | None = None,
          **kwargs: Any) -> Any:
    return GRANT.issue(services, token_request(db, form or {}, **kwargs),
                       oauth_client(db, client_id))


def add_resource_server(services: Services, token_types: list[str],
                        scopes: list[str] | None = None) -> None:
    with services.db.session() as session:
        resource_servers.add(session, uri=RS, name="rs", scopes=scopes or [],
                             token_types=token_types, introspection=False, issuer=ISSUER,
                             supported_scopes=services.settings.scopes, now=NOW)


def cc_client(services: Services, **metadata: Any) -> str:
    return new_client(services, grant_types=[CC], **metadata)


# --- issued ------------------------------------------------------------------------------------


def test_issues_a_bearer_token_for_the_client_itself(services: Services, db: Session) -> None:
    client_id = cc_client(services, scope="read write")
    result = issue(services, db, client_id, {"scope": "read"})
    claims = claims_of(services, result.body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        client_id, client_id, ISSUER, "read")
    assert claims["iat"] == NOW
    assert claims["exp"] - claims["iat"] == services.settings.access_token_ttl
    assert "cnf" not in claims
    assert result.body == {"access_token": result.body["access_token"], "token_type": "Bearer",
                           "expires_in": services.settings.access_token_ttl, "scope": "read"}


def test_a_dpop_proof_binds_the_token(services: Services, db: Session) -> None:
    key = ProofKey()
    client_id = cc_client(services)
    result = issue(services, db, client_id, {"resource": RESOURCE}, dpop=proof(key))
    claims = claims_of(services, result.body["access_token"])
    assert (claims["aud"], claims["cnf"], result.body["token_type"]) == (
        RESOURCE, {"jkt": key.jkt}, "DPoP")
    assert claims["exp"] - claims["iat"] == services.settings.access_token_ttl


def test_a_proof_at_the_oldest_second_of_the_window_is_accepted(services: Services,
                                                                 db: Session) -> None:
    key = ProofKey()
    window = services.settings.dpop_proof_window
    result = issue(services, db, cc_client(services), dpop=proof(key, iat=NOW - window))
    assert claims_of(services, result.body["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_dpop_only_resource_server_gets_a_bound_token(services: Services,
                                                        db: Session) -> None:
    add_resource_server(services, ["dpop"], ["read"])
    key = ProofKey()
    result = issue(services, db, cc_client(services), {"resource": RS, "scope": "read"},
                   dpop=proof(key))
    claims = claims_of(services, result.body["access_token"])
    assert (claims["aud"], claims["scope"], claims["cnf"]) == (RS, "read", {"jkt": key.jkt})


# --- checked_scope -----------------------------------------------------------------------------


def test_an_unsupported_scope(services: Services, db: Session) -> None:
    error = refusal(lambda: issue(services, db, cc_client(services), {"scope": "read admin"}))
    assert_refusal(error, InvalidScopeError, 400, "invalid_scope",
                   "The requested scope is not supported", "scope_unsupported")


def test_a_scope_the_client_may_not_have(services: Services, db: Session) -> None:
    client_id = cc_client(services, scope="read")
    error = refusal(lambda: issue(services, db, client_id, {"scope": "read write"}))
    assert_refusal(error, InvalidScopeError, 400, "invalid_scope",
                   "The requested scope is not allowed for this client", "scope_not_allowed")


# --- requested_resources -----------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["/relative", "https://api.example.com/mcp#frag",
                                      "urn-no-authority"])
def test_a_malformed_resource(services: Services, db: Session, resource: str) -> None:
    error = refusal(lambda: issue(services, db, cc_client(services), {"resource": resource}))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "resource must be an absolute URI without a fragment", "resource_malformed")


def test_a_resource_not_served(services: Services, db: Session) -> None:
    error = refusal(lambda: issue(services, db, cc_client(services),
                                  {"resource": "https://other.example.com/api"}))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "The requested resource is not served by this server", "resource_unknown")


# --- check_dpop --------------------------------------------------------------------------------


def test_a_client_registered_for_bound_tokens_needs_a_proof(services: Services,
                                                            db: Session) -> None:
    client_id = cc_client(services, dpop_bound_access_tokens=True)
    error = refusal(lambda: issue(services, db, client_id))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof required", "dpop_proof_required")


@pytest.mark.parametrize("settings_extra", [{"dpop_required_grants": (CC,)}])
def test_a_grant_configured_to_need_dpop_needs_a_proof(services: Services,
                                                       db: Session) -> None:
    error = refusal(lambda: issue(services, db, cc_client(services)))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof required", "dpop_proof_required")


def test_a_proof_one_second_past_the_window_has_expired(services: Services,
                                                        db: Session) -> None:
    window = services.settings.dpop_proof_window
    error = refusal(lambda: issue(services, db, cc_client(services),
                                  dpop=proof(ProofKey(), iat=NOW - window - 1)))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof has expired", "dpop_proof_invalid")


def test_a_proof_for_another_uri(services: Services, db: Session) -> None:
    dpop = (ProofKey().proof(ISSUER + "/introspect", iat=NOW),)
    error = refusal(lambda: issue(services, db, cc_client(services), dpop=dpop))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof htu does not match the request URI", "dpop_proof_invalid")


@pytest.mark.parametrize("settings_extra", [{"dpop_nonce": "all"}])
def test_a_proof_without_the_required_nonce(services: Services, db: Session) -> None:
    error = refusal(lambda: issue(services, db, cc_client(services), dpop=proof(ProofKey())))
    assert isinstance(error, UseDpopNonceError)
    assert_refusal(error, UseDpopNonceError, 400, "use_dpop_nonce",
                   "Authorization server requires nonce in DPoP proof", "dpop_nonce_missing",
                   {**NO_STORE, "DPoP-Nonce": error.nonce})
    assert services.nonces.is_valid(error.nonce, NOW)
    # As the one error handler renders it.
    response = render(error)
    assert (response.status_code, response.get_json()) == (400, {
        "error": "use_dpop_nonce",
        "error_description": "Authorization server requires nonce in DPoP proof"})
    assert (response.headers["DPoP-Nonce"], response.headers["Cache-Control"]) == (
        error.nonce, "no-store")
    assert "WWW-Authenticate" not in response.headers  # 400 at the token endpoint, no challenge


@pytest.mark.parametrize("settings_extra", [{"dpop_nonce": "all"}])
def test_a_nonce_expired_at_exactly_its_lifetime(services: Services, db: Session) -> None:
    stale = services.nonces.issue(NOW - services.nonces.ttl)
    error = refusal(lambda: issue(services, db, cc_client(services),
                                  dpop=proof(ProofKey(), nonce=stale)))
    assert isinstance(error, UseDpopNonceError)
    assert_refusal(error, UseDpopNonceError, 400, "use_dpop_nonce",
                   "DPoP proof nonce has expired", "dpop_nonce_invalid",
                   {**NO_STORE, "DPoP-Nonce": error.nonce})
    assert error.nonce != stale
    # One second younger, the same nonce is still good.
    fresh = services.nonces.issue(NOW - services.nonces.ttl + 1)
    result = issue(services, db, cc_client(services), dpop=proof(ProofKey(), nonce=fresh))
    assert result.body["token_type"] == "DPoP"


@pytest.mark.parametrize("settings_extra", [{"dpop_nonce": "per_client"}])
def test_a_per_client_nonce_applies_to_that_client_only(services: Services,
                                                        db: Session) -> None:
    plain = issue(services, db, cc_client(services), dpop=proof(ProofKey()))
    assert plain.body["token_type"] == "DPoP"
    client_id = new_client(services, {"dpop_nonce": True}, grant_types=[CC])
    error = refusal(lambda: issue(services, db, client_id, dpop=proof(ProofKey())))
    assert_refusal(error, UseDpopNonceError, 400, "use_dpop_nonce",
                   "Authorization server requires nonce in DPoP proof", "dpop_nonce_missing",
                   {**NO_STORE, "DPoP-Nonce": error.nonce})  # type: ignore[attr-defined]


def test_a_replayed_proof(services: Services, db: Session) -> None:
    dpop = proof(ProofKey())
    client_id = cc_client(services)
    issue(services, db, client_id, dpop=dpop)
    error = refusal(lambda: issue(services, db, client_id, dpop=dpop))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof replayed", "dpop_proof_invalid")


# --- check_resource_servers --------------------------------------------------------------------


def test_a_dpop_only_resource_server_without_a_proof(services: Services, db: Session) -> None:
    add_resource_server(services, ["dpop"])
    error = refusal(lambda: issue(services, db, cc_client(services), {"resource": RS}))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   f"DPoP proof required: the resource {RS} accepts only DPoP-bound tokens",
                   "resource_requires_dpop")


def test_a_bearer_only_resource_server_with_a_proof(services: Services, db: Session) -> None:
    add_resource_server(services, ["bearer"])
    error = refusal(lambda: issue(services, db, cc_client(services), {"resource": RS},
                                  dpop=proof(ProofKey())))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request",
                   f"The resource {RS} accepts only Bearer tokens: request it without a "
                   "DPoP proof", "resource_requires_bearer")


def test_a_scope_the_resource_server_does_not_serve(services: Services, db: Session) -> None:
    add_resource_server(services, ["bearer"], ["read"])
    error = refusal(lambda: issue(services, db, cc_client(services),
                                  {"resource": RS, "scope": "read write"}))
    assert_refusal(error, InvalidScopeError, 400, "invalid_scope",
                   f"The requested scope is not served by the resource {RS}",
                   "resource_scope_not_served")
