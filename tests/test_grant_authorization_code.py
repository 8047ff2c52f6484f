"""AuthorizationCodeGrant.issue (RFC 6749 §4.1.3, PKCE, RFC 9449 §10) in-process at a fixed
`now`, on SQLite and PostgreSQL (it spends codes and writes grants and refresh tokens): what it
issues and writes, and one test per refusal it raises. The refusals of the shared helpers
(scope, resource, DPoP proof checks) are in tests/test_grant_client_credentials.py."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver import resource_servers
from authserver.errors import (
    InvalidDpopProofError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidTargetError,
)
from authserver.grants.authorization_code import ID_TOKEN_TTL, AuthorizationCodeGrant, code_hash
from authserver.models import AuthorizationCode, Grant, RefreshToken, User
from authserver.services import Services
from tests.dpop_helpers import ProofKey
from tests.grant_helpers import (  # noqa: F401 (fixtures)
    ISSUER,
    NOW,
    RESOURCE,
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

GRANT = AuthorizationCodeGrant()
REDIRECT_URI = "https://client.example.com/cb"
RS = "https://rs.example.com/api"
AUTH_TIME = NOW - 30


@pytest.fixture
def services(tmp_path: Any, database_url: str) -> Iterator[Services]:
    with built_services(tmp_path, database_url) as built:
        yield built


@pytest.fixture
def user(services: Services) -> str:
    return new_user(services)


def public_client(services: Services, **metadata: Any) -> str:
    return new_client(services, token_endpoint_auth_method="none",
                      grant_types=["authorization_code", "refresh_token"],
                      redirect_uris=[REDIRECT_URI], **metadata)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_code(services: Services, client_id: str, user_id: str, **values: Any
             ) -> tuple[str, str]:
    """A code as the authorization endpoint stores it: (code, its PKCE verifier)."""
    code, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    row: dict[str, Any] = {
        "code_hash": code_hash(code), "client_id": client_id, "user_id": user_id,
        "redirect_uri": REDIRECT_URI, "scope": "openid read", "resources": [RESOURCE],
        "authorization_details": [], "code_challenge": s256(verifier),
        "code_challenge_method": "S256", "nonce": "n-0S6", "dpop_jkt": None,
        "auth_time": AUTH_TIME, "expires_at": NOW + 60, **values}
    with services.db.session() as session:
        session.add(AuthorizationCode(**row))
    return code, verifier


def redeem(services: Services, db: Session, client_id: str, code: str, verifier: str | None,
           **form: Any) -> Any:
    values = {"code": code, "redirect_uri": REDIRECT_URI, **form}
    if verifier is not None:
        values["code_verifier"] = verifier
    dpop = values.pop("dpop", ())
    values = {k: v for k, v in values.items() if v is not None}
    return GRANT.issue(services, token_request(db, values, dpop=dpop),
                       oauth_client(db, client_id))


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def code_row(services: Services, code: str) -> AuthorizationCode:
    with services.db.session() as session:
        row = session.get(AuthorizationCode, code_hash(code))
        assert row is not None
        session.expunge(row)
        return row


def grant_row(services: Services, grant_id: str) -> Grant:
    with services.db.session() as session:
        row = session.get(Grant, grant_id)
        assert row is not None
        session.expunge(row)
        return row


# --- issued ------------------------------------------------------------------------------------


def test_issues_tokens_and_spends_the_code(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user)
    result = redeem(services, db, client_id, code, verifier)
    db.commit()
    claims = claims_of(services, result.body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        user, client_id, RESOURCE, "openid read")
    assert (claims["iat"], claims["exp"] - claims["iat"]) == (
        NOW, services.settings.access_token_ttl)
    assert claims["auth_time"] == AUTH_TIME and "cnf" not in claims
    assert result.body["token_type"] == "Bearer" and result.body["refresh_token"]
    # The ID token: for this client, its nonce, short.
    id_token = jwt_claims(result.body["id_token"])
    assert (id_token["sub"], id_token["aud"], id_token["azp"], id_token["nonce"]) == (
        user, client_id, client_id, "n-0S6")
    assert id_token["exp"] - id_token["iat"] == min(services.settings.access_token_ttl,
                                                    ID_TOKEN_TTL)
    # The code is spent, its grant written, the refresh token stored (hashed) under it.
    spent = code_row(services, code)
    assert spent.used_at == NOW and spent.grant_id == claims["gid"]
    grant = grant_row(services, claims["gid"])
    assert (grant.client_id, grant.user_id, grant.scope, grant.resources, grant.dpop_jkt,
            grant.auth_time) == (client_id, user, "openid read", [RESOURCE], None, AUTH_TIME)
    with services.db.session() as session:
        tokens = session.scalars(select(RefreshToken)).all()
        assert [(t.grant_id, t.issued_at, t.expires_at) for t in tokens] == [
            (grant.id, NOW, NOW + services.settings.refresh_token_ttl)]


def test_a_dpop_proof_binds_the_token_and_a_public_clients_grant(
        services: Services, db: Session, user: str) -> None:
    key = ProofKey()
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, dpop_jkt=key.jkt, scope="read")
    result = redeem(services, db, client_id, code, verifier, dpop=proof(key))
    db.commit()
    claims = claims_of(services, result.body["access_token"])
    assert (claims["cnf"], result.body["token_type"]) == ({"jkt": key.jkt}, "DPoP")
    assert "id_token" not in result.body
    assert grant_row(services, claims["gid"]).dpop_jkt == key.jkt


def test_a_confidential_clients_grant_is_not_key_bound(services: Services, db: Session,
                                                       user: str) -> None:
    key = ProofKey()
    client_id = new_client(services, grant_types=["authorization_code"],
                           redirect_uris=[REDIRECT_URI])
    code, verifier = new_code(services, client_id, user)
    result = redeem(services, db, client_id, code, verifier, dpop=proof(key))
    db.commit()
    claims = claims_of(services, result.body["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt}
    # No refresh_token grant type registered: no refresh token.
    assert "refresh_token" not in result.body
    assert grant_row(services, claims["gid"]).dpop_jkt is None


def test_a_code_one_second_before_it_expires_is_redeemed(services: Services, db: Session,
                                                          user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, expires_at=NOW + 1)
    assert redeem(services, db, client_id, code, verifier).body["access_token"]


def test_a_requested_resource_narrows_the_audience(services: Services, db: Session,
                                                   user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, resources=[RESOURCE, ISSUER])
    result = redeem(services, db, client_id, code, verifier, resource=RESOURCE)
    assert claims_of(services, result.body["access_token"])["aud"] == RESOURCE


# --- refusals ----------------------------------------------------------------------------------


def test_a_missing_code(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    error = refusal(lambda: redeem(services, db, client_id, None, "v" * 43))  # type: ignore[arg-type]
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "Missing code",
                   "code_missing")


def test_an_unknown_code(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    error = refusal(lambda: redeem(services, db, client_id, "no-such-code", "v" * 43))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "Invalid code",
                   "code_unknown")


def test_another_clients_code_is_an_unknown_code(services: Services, db: Session,
                                                 user: str) -> None:
    owner, other = public_client(services), public_client(services)
    code, verifier = new_code(services, owner, user)
    error = refusal(lambda: redeem(services, db, other, code, verifier))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "Invalid code",
                   "code_unknown")
    assert code_row(services, code).used_at is None


def test_a_reused_code_revokes_what_it_produced(services: Services, db: Session,
                                                user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user)
    first = redeem(services, db, client_id, code, verifier)
    db.commit()
    grant_id = claims_of(services, first.body["access_token"])["gid"]
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "The code was already used",
                   "code_reused")
    assert grant_row(services, grant_id).revoked_at == NOW


def test_a_replay_after_expiry_is_still_reuse(services: Services, db: Session,
                                              user: str) -> None:
    # Reuse is checked before expiry: a late replay still revokes.
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, used_at=NOW - 600,
                              expires_at=NOW - 540)
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "The code was already used",
                   "code_reused")


def test_a_code_spent_concurrently_is_reuse(services: Services, db: Session,
                                            user: str) -> None:
    # Another request spends the code after this one read it: the conditional UPDATE
    # (`consume`) is what refuses, and revokes the grant the other redemption created.
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user)
    assert db.get(AuthorizationCode, code_hash(code)) is not None  # this request's read
    with services.db.session() as other:
        other.execute(update(AuthorizationCode).where(
            AuthorizationCode.code_hash == code_hash(code)).values(used_at=NOW))
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "The code was already used",
                   "code_reused")
    with services.db.session() as session:
        assert session.scalars(select(Grant)).all() == []


def test_a_code_expired_at_exactly_expires_at(services: Services, db: Session,
                                              user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, expires_at=NOW)
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "The code has expired",
                   "code_expired")
    assert code_row(services, code).used_at is None


@pytest.mark.parametrize("redirect_uri", ["https://client.example.com/cb/", None])
def test_a_redirect_uri_that_does_not_match(services: Services, db: Session, user: str,
                                            redirect_uri: str | None) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user)
    error = refusal(lambda: redeem(services, db, client_id, code, verifier,
                                   redirect_uri=redirect_uri))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "redirect_uri does not match the authorization request",
                   "redirect_uri_mismatch")


def test_a_missing_code_verifier(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    code, _ = new_code(services, client_id, user)
    error = refusal(lambda: redeem(services, db, client_id, code, None))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "Missing code_verifier",
                   "code_verifier_missing")


@pytest.mark.parametrize("length", [42, 129])
def test_a_code_verifier_of_the_wrong_length(services: Services, db: Session, user: str,
                                             length: int) -> None:
    client_id = public_client(services)
    code, _ = new_code(services, client_id, user)
    error = refusal(lambda: redeem(services, db, client_id, code, "a" * length))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "Invalid code_verifier",
                   "code_verifier_malformed")


def test_a_code_verifier_that_does_not_match(services: Services, db: Session,
                                             user: str) -> None:
    client_id = public_client(services)
    code, _ = new_code(services, client_id, user)
    error = refusal(lambda: redeem(services, db, client_id, code, "a" * 43))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "code_verifier does not match the code_challenge", "code_verifier_mismatch")


def test_a_client_registered_for_bound_tokens_needs_a_proof(services: Services, db: Session,
                                                            user: str) -> None:
    client_id = public_client(services, dpop_bound_access_tokens=True)
    code, verifier = new_code(services, client_id, user)
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidDpopProofError, 400, "invalid_dpop_proof",
                   "DPoP proof required", "dpop_proof_required")


@pytest.mark.parametrize("with_proof", [False, True], ids=["no-proof", "other-key"])
def test_a_code_bound_to_another_key(services: Services, db: Session, user: str,
                                     with_proof: bool) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, dpop_jkt=ProofKey().jkt)
    dpop = proof(ProofKey()) if with_proof else ()
    error = refusal(lambda: redeem(services, db, client_id, code, verifier, dpop=dpop))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "DPoP key does not match the authorization request", "code_dpop_key_mismatch")


def test_a_resource_the_authorization_did_not_name(services: Services, db: Session,
                                                   user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user)
    error = refusal(lambda: redeem(services, db, client_id, code, verifier, resource=ISSUER))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "resource was not part of the authorization request", "resource_not_authorized")


def test_a_resource_removed_since_the_authorization(services: Services, db: Session,
                                                    user: str) -> None:
    with services.db.session() as session:
        resource_servers.add(session, uri=RS, name="rs", scopes=[], token_types=["bearer"],
                             introspection=False, issuer=ISSUER,
                             supported_scopes=services.settings.scopes, now=NOW)
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user, resources=[RS])
    with services.db.session() as session:
        resource_servers.remove(session, RS)
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "The resource is no longer served by this server", "resource_no_longer_served")


def test_a_user_deactivated_since_the_authorization(services: Services, db: Session,
                                                    user: str) -> None:
    client_id = public_client(services)
    code, verifier = new_code(services, client_id, user)
    with services.db.session() as session:
        session.execute(update(User).where(User.id == user).values(active=False))
    error = refusal(lambda: redeem(services, db, client_id, code, verifier))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The user is no longer active", "user_inactive")
