"""RefreshTokenGrant.issue (RFC 6749 §6, rotation and reuse detection, RFC 9449 §5) in-process
at a fixed `now`, on SQLite and PostgreSQL (it rotates refresh tokens and revokes grants): what
it issues and writes, the retry of a lost rotation at the edges of the reuse interval, and one
test per refusal it raises."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver import refresh_tokens, resource_servers
from authserver.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
)
from authserver.grants.refresh_token import RefreshTokenGrant
from authserver.models import Grant, RefreshToken, User
from authserver.refresh_tokens import ROTATED_AHEAD_TOLERANCE
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

GRANT = RefreshTokenGrant()
REDIRECT_URI = "https://client.example.com/cb"
RS = "https://rs.example.com/api"


@pytest.fixture
def services(tmp_path: Any, database_url: str) -> Iterator[Services]:
    with built_services(tmp_path, database_url) as built:
        yield built


@pytest.fixture
def user(services: Services) -> str:
    return new_user(services)


def public_client(services: Services) -> str:
    return new_client(services, token_endpoint_auth_method="none",
                      grant_types=["authorization_code", "refresh_token"],
                      redirect_uris=[REDIRECT_URI])


def confidential_client(services: Services) -> str:
    return new_client(services, grant_types=["authorization_code", "refresh_token"],
                      redirect_uris=[REDIRECT_URI])


def new_grant(services: Services, client_id: str, user_id: str | None, *,
              expires_at: int | None = None, **values: Any) -> tuple[str, str]:
    """A grant as the code exchange writes it, and its first refresh token: (grant id, token)."""
    grant = Grant(id=refresh_tokens.new_grant_id(), client_id=client_id, user_id=user_id,
                  **{"scope": "read write", "resources": [RESOURCE], "authorization_details": [],
                     "dpop_jkt": None, "auth_time": NOW - 3600, "created_at": NOW - 3600,
                     **values})
    with services.db.session() as session:
        session.add(grant)
        session.flush()
        token = refresh_tokens.issue(session, grant, now=NOW - 3600, ttl=7200)
        if expires_at is not None:
            session.execute(update(RefreshToken).where(
                RefreshToken.token_hash == refresh_tokens.token_hash(token)).values(
                    expires_at=expires_at))
        return grant.id, token


def refresh(services: Services, db: Session, client_id: str, token: str | None, *,
            dpop: tuple[str, ...] = (), now: int = NOW, **form: str) -> Any:
    values = {"refresh_token": token, **form} if token is not None else dict(form)
    result = GRANT.issue(services, token_request(db, values, dpop=dpop, now=now),
                         oauth_client(db, client_id))
    db.commit()
    return result


def revoked_at(services: Services, grant_id: str) -> int | None:
    with services.db.session() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        return grant.revoked_at


# --- issued ------------------------------------------------------------------------------------


def test_rotates_the_refresh_token(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    grant_id, token = new_grant(services, client_id, user)
    result = refresh(services, db, client_id, token)
    claims = claims_of(services, result.body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        user, client_id, RESOURCE, "read write")
    assert (claims["iat"], claims["exp"] - claims["iat"], claims["gid"]) == (
        NOW, services.settings.access_token_ttl, grant_id)
    assert "cnf" not in claims and result.body["token_type"] == "Bearer"
    successor = result.body["refresh_token"]
    assert successor != token
    with services.db.session() as session:
        old = session.get(RefreshToken, refresh_tokens.token_hash(token))
        new = session.get(RefreshToken, refresh_tokens.token_hash(successor))
        assert old is not None and new is not None
        assert (old.rotated_at, old.successor_hash) == (NOW, new.token_hash)
        assert (new.grant_id, new.issued_at, new.expires_at, new.rotated_at) == (
            grant_id, NOW, NOW + services.settings.refresh_token_ttl, None)


def test_a_scope_and_resource_may_narrow(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, resources=[RESOURCE, ISSUER])
    result = refresh(services, db, client_id, token, scope="read", resource=RESOURCE)
    claims = claims_of(services, result.body["access_token"])
    assert (claims["aud"], claims["scope"]) == (RESOURCE, "read")


def test_a_bound_grant_needs_its_key_and_binds_the_token(services: Services, db: Session,
                                                         user: str) -> None:
    key = ProofKey()
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, dpop_jkt=key.jkt)
    result = refresh(services, db, client_id, token, dpop=proof(key))
    claims = claims_of(services, result.body["access_token"])
    assert (claims["cnf"], result.body["token_type"]) == ({"jkt": key.jkt}, "DPoP")


def test_a_client_grant_without_a_user(services: Services, db: Session) -> None:
    client_id = confidential_client(services)
    _, token = new_grant(services, client_id, None)
    claims = claims_of(services, refresh(services, db, client_id, token).body["access_token"])
    assert (claims["sub"], claims["client_id"]) == (client_id, client_id)


def test_one_second_before_expiry_is_accepted(services: Services, db: Session,
                                              user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, expires_at=NOW + 1)
    assert refresh(services, db, client_id, token).body["refresh_token"]


def test_a_lost_rotation_retried_at_the_last_second_of_the_interval(
        services: Services, db: Session, user: str) -> None:
    client_id = confidential_client(services)
    grant_id, token = new_grant(services, client_id, user)
    interval = services.settings.refresh_token_reuse_interval
    first = refresh(services, db, client_id, token)
    again = refresh(services, db, client_id, token, now=NOW + interval)
    assert again.body["refresh_token"] == first.body["refresh_token"]
    assert revoked_at(services, grant_id) is None


def test_a_concurrent_retry_that_read_the_clock_before_the_rotation(
        services: Services, db: Session, user: str) -> None:
    """Two requests race one rotation: the loser read its clock a second before the winner
    (a second boundary between them, or another host's clock) and reaches the rotated row
    with `now` < `rotated_at`. That is the same rotation retried, not reuse: the family
    survives (tests/test_http_refresh.py's 50 parallel refreshes once revoked it this way)."""
    client_id = confidential_client(services)
    grant_id, token = new_grant(services, client_id, user)
    first = refresh(services, db, client_id, token, now=NOW + 1)
    again = refresh(services, db, client_id, token, now=NOW + 1 - ROTATED_AHEAD_TOLERANCE)
    assert again.body["refresh_token"] == first.body["refresh_token"]
    assert revoked_at(services, grant_id) is None


# --- refusals ----------------------------------------------------------------------------------


def test_a_missing_refresh_token(services: Services, db: Session) -> None:
    client_id = public_client(services)
    error = refusal(lambda: refresh(services, db, client_id, None))
    assert_refusal(error, InvalidRequestError, 400, "invalid_request", "Missing refresh_token",
                   "refresh_token_missing")


def test_an_unknown_refresh_token(services: Services, db: Session) -> None:
    client_id = public_client(services)
    error = refusal(lambda: refresh(services, db, client_id, "not-a-token"))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "Invalid refresh token",
                   "refresh_token_unknown")


def test_another_clients_refresh_token(services: Services, db: Session, user: str) -> None:
    owner, other = public_client(services), public_client(services)
    grant_id, token = new_grant(services, owner, user)
    error = refusal(lambda: refresh(services, db, other, token))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant", "Invalid refresh token",
                   "refresh_token_other_client")
    assert revoked_at(services, grant_id) is None


def test_a_revoked_grant(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, revoked_at=NOW - 1)
    error = refusal(lambda: refresh(services, db, client_id, token))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token was revoked", "refresh_token_revoked")


def test_expired_at_exactly_expires_at(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, expires_at=NOW)
    error = refusal(lambda: refresh(services, db, client_id, token))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token has expired", "refresh_token_expired")


def test_a_deactivated_user(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user)
    with services.db.session() as session:
        session.execute(update(User).where(User.id == user).values(active=False))
    error = refusal(lambda: refresh(services, db, client_id, token))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The user is no longer active", "user_inactive")


@pytest.mark.parametrize("with_proof", [False, True], ids=["no-proof", "other-key"])
def test_a_bound_grant_with_another_key(services: Services, db: Session, user: str,
                                        with_proof: bool) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, dpop_jkt=ProofKey().jkt)
    dpop = proof(ProofKey()) if with_proof else ()
    error = refusal(lambda: refresh(services, db, client_id, token, dpop=dpop))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token is bound to another DPoP key",
                   "refresh_token_dpop_key_mismatch")


def test_a_scope_beyond_the_grant(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, scope="read")
    error = refusal(lambda: refresh(services, db, client_id, token, scope="read write"))
    assert_refusal(error, InvalidScopeError, 400, "invalid_scope",
                   "The requested scope exceeds the granted scope", "scope_exceeds_grant")


def test_a_resource_beyond_the_grant(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user)
    error = refusal(lambda: refresh(services, db, client_id, token, resource=ISSUER))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "resource was not part of the grant", "resource_not_granted")


def test_a_resource_removed_since_the_grant(services: Services, db: Session, user: str) -> None:
    with services.db.session() as session:
        resource_servers.add(session, uri=RS, name="rs", scopes=[], token_types=["bearer"],
                             introspection=False, issuer=ISSUER,
                             supported_scopes=services.settings.scopes, now=NOW)
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user, resources=[RS])
    with services.db.session() as session:
        resource_servers.remove(session, RS)
    error = refusal(lambda: refresh(services, db, client_id, token))
    assert_refusal(error, InvalidTargetError, 400, "invalid_target",
                   "The resource is no longer served by this server", "resource_no_longer_served")


def test_no_successor_key_fails_closed(services: Services, db: Session, user: str) -> None:
    client_id = public_client(services)
    _, token = new_grant(services, client_id, user)
    keyless = dataclasses.replace(services, refresh_successor_key=b"")
    with pytest.raises(RuntimeError, match=r"^no refresh-token successor key configured$"):
        refresh(keyless, db, client_id, token)
    with services.db.session() as session:
        row = session.get(RefreshToken, refresh_tokens.token_hash(token))
        assert row is not None and row.rotated_at is None


def test_a_public_unbound_clients_reuse_revokes_the_family(services: Services, db: Session,
                                                           user: str) -> None:
    # Its client_id proves nothing: even an immediate retry is reuse.
    client_id = public_client(services)
    grant_id, token = new_grant(services, client_id, user)
    refresh(services, db, client_id, token)
    error = refusal(lambda: refresh(services, db, client_id, token))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token was already used", "refresh_token_reused")
    assert revoked_at(services, grant_id) == NOW


def test_a_rotation_further_ahead_than_the_tolerance_is_reuse(services: Services, db: Session,
                                                              user: str) -> None:
    client_id = confidential_client(services)
    grant_id, token = new_grant(services, client_id, user)
    refresh(services, db, client_id, token, now=NOW + ROTATED_AHEAD_TOLERANCE + 1)
    error = refusal(lambda: refresh(services, db, client_id, token, now=NOW))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token was already used", "refresh_token_reused")
    assert revoked_at(services, grant_id) == NOW


def test_a_retry_one_second_past_the_interval_is_reuse(services: Services, db: Session,
                                                       user: str) -> None:
    client_id = confidential_client(services)
    grant_id, token = new_grant(services, client_id, user)
    interval = services.settings.refresh_token_reuse_interval
    refresh(services, db, client_id, token)
    error = refusal(lambda: refresh(services, db, client_id, token, now=NOW + interval + 1))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token was already used", "refresh_token_reused")
    assert revoked_at(services, grant_id) == NOW + interval + 1


def test_a_retry_with_another_dpop_key_is_reuse(services: Services, db: Session,
                                                user: str) -> None:
    client_id = confidential_client(services)
    grant_id, token = new_grant(services, client_id, user)
    refresh(services, db, client_id, token, dpop=proof(ProofKey()))
    error = refusal(lambda: refresh(services, db, client_id, token, dpop=proof(ProofKey())))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token was already used", "refresh_token_reused")
    assert revoked_at(services, grant_id) == NOW


def test_a_retry_after_the_successor_was_used_is_reuse(services: Services, db: Session,
                                                       user: str) -> None:
    client_id = confidential_client(services)
    grant_id, token = new_grant(services, client_id, user)
    first = refresh(services, db, client_id, token)
    refresh(services, db, client_id, first.body["refresh_token"])
    error = refusal(lambda: refresh(services, db, client_id, token))
    assert_refusal(error, InvalidGrantError, 400, "invalid_grant",
                   "The refresh token was already used", "refresh_token_reused")
    assert revoked_at(services, grant_id) == NOW
