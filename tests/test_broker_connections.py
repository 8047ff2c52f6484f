"""Broker connect flow, single-flight refresh and disconnect against real OAuth servers on
loopback (authserver.testing.crm: rotating refresh tokens with reuse detection;
authserver.testing.projects: instance_url, no expires_in, no refresh token on refresh).

Every test runs on the embedded store and Redis, and on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, text, update

from authserver.broker import connections
from authserver.broker.connections import (
    CONNECT_STATE_TTL,
    REFRESH_ATTEMPTS,
    connection_epoch,
    disconnect,
    finish_connect,
    force_refresh,
    get_access_token,
    revoke_all_for_user,
    start_connect,
)
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import (
    ConnectionRequiredError,
    InvalidRequestError,
    TemporarilyUnavailableError,
)
from authserver.kms import LocalKMS
from authserver.models import Base
from authserver.models.broker import Connection
from tests.broker_fake import (
    REDIRECT_URI,
    RunningPlatform,
    add_user,
    authorize,
    connect,
    running_crm,
    running_projects,
)

CONNECT_URI = "http://127.0.0.1:8000/connections/crm/connect"
USER = "u-alice"
LATER = 10_000  # seconds: far past the platforms' access-token lifetimes


@pytest.fixture
def db(database_url: str, now: int) -> Iterator[Database]:
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    add_user(database, USER, now)
    add_user(database, "u-bob", now)
    yield database
    database.engine.dispose()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKMS(tmp_path / "kek.key"))


@pytest.fixture
def crm() -> Iterator[RunningPlatform]:
    yield from running_crm()


@pytest.fixture
def projects() -> Iterator[RunningPlatform]:
    yield from running_projects()


def _row(db: Database, platform: str = "crm") -> Connection | None:
    with db.session() as session:
        return session.scalars(select(Connection).where(
            Connection.user_id == USER, Connection.platform == platform)).one_or_none()


def _refresh_token(db: Database, vault: Vault, platform: str = "crm") -> str:
    row = _row(db, platform)
    assert row is not None and row.refresh_token_ciphertext is not None
    return vault.open(USER, platform, "refresh_token", row.refresh_token_ciphertext)


def _api_me(base_url: str, access_token: str) -> int:
    return requests.get(base_url + "/api/v1/me", timeout=5,
                        headers={"Authorization": f"Bearer {access_token}"}).status_code


# --- connecting --------------------------------------------------------------------------------


def test_connect_stores_a_working_grant(db, store, vault, crm, now):
    conn = connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    assert conn.status == "active"
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                                connect_uri=CONNECT_URI)
    assert _api_me(crm.base_url, token) == 200
    assert crm.provider.stats["refresh"] == 0


def test_db_row_contains_no_plaintext_token(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                                connect_uri=CONNECT_URI)
    refresh_token = _refresh_token(db, vault)
    with db.engine.connect() as raw:
        dump = repr(raw.execute(text("SELECT * FROM connections")).all())
    assert token not in dump and refresh_token not in dump


def test_finish_connect_by_another_user_is_rejected(db, store, vault, crm, now):
    url = start_connect(store, crm.platform, user_id=USER, session_binding="s1",
                        redirect_uri=REDIRECT_URI, now=now)
    code, state = authorize(url, "alice")
    with pytest.raises(InvalidRequestError) as info:
        finish_connect(db, store, vault, crm.platform, state=state, code=code, user_id="u-bob",
                       session_binding="s1", redirect_uri=REDIRECT_URI, now=now)
    assert info.value.error == "invalid_request"
    assert _row(db) is None


def test_finish_connect_from_another_session_is_rejected(db, store, vault, crm, now):
    url = start_connect(store, crm.platform, user_id=USER, session_binding="s1",
                        redirect_uri=REDIRECT_URI, now=now)
    code, state = authorize(url, "alice")
    with pytest.raises(InvalidRequestError):
        finish_connect(db, store, vault, crm.platform, state=state, code=code, user_id=USER,
                       session_binding="s2", redirect_uri=REDIRECT_URI, now=now)


def test_finish_connect_replayed_state_is_rejected(db, store, vault, crm, now):
    url = start_connect(store, crm.platform, user_id=USER, session_binding="s1",
                        redirect_uri=REDIRECT_URI, now=now)
    code, state = authorize(url, "alice")
    finish_connect(db, store, vault, crm.platform, state=state, code=code, user_id=USER,
                   session_binding="s1", redirect_uri=REDIRECT_URI, now=now)
    with pytest.raises(InvalidRequestError):
        finish_connect(db, store, vault, crm.platform, state=state, code=code, user_id=USER,
                       session_binding="s1", redirect_uri=REDIRECT_URI, now=now)
    assert crm.provider.stats["authorization_code"] == 1


def test_finish_connect_unknown_state_is_rejected(db, store, vault, crm, now):
    with pytest.raises(InvalidRequestError):
        finish_connect(db, store, vault, crm.platform, state="forged", code="x", user_id=USER,
                       session_binding="s1", redirect_uri=REDIRECT_URI, now=now)


def test_finish_connect_expired_state_is_rejected(db, store, vault, crm, now):
    url = start_connect(store, crm.platform, user_id=USER, session_binding="s1",
                        redirect_uri=REDIRECT_URI, now=now)
    code, state = authorize(url, "alice")
    with pytest.raises(InvalidRequestError):
        finish_connect(db, store, vault, crm.platform, state=state, code=code, user_id=USER,
                       session_binding="s1", redirect_uri=REDIRECT_URI,
                       now=now + CONNECT_STATE_TTL + 1)


def test_authorize_url_carries_pkce_s256_and_state(store, crm, now):
    url = start_connect(store, crm.platform, user_id=USER, session_binding="s1",
                        redirect_uri=REDIRECT_URI, now=now)
    assert "code_challenge_method=S256" in url and "code_challenge=" in url and "state=" in url


# --- refresh -------------------------------------------------------------------------------------


def test_single_flight_fifty_threads_one_refresh(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    barrier = threading.Barrier(50)
    results: list[str] = []
    errors: list[BaseException] = []
    mutex = threading.Lock()

    def call() -> None:
        barrier.wait()
        try:
            token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER,
                                        now=now + LATER, connect_uri=CONNECT_URI)
            with mutex:
                results.append(token)
        except BaseException as e:  # collected and asserted below
            with mutex:
                errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert crm.provider.stats["refresh"] == 1
    assert len(results) == 50 and len(set(results)) == 1
    assert _api_me(crm.base_url, results[0]) == 200
    stats = crm.provider.stats
    assert stats["refresh_reuse"] == 0 and stats["active_grants"] == 1
    # The grant is still good: the next expiry refreshes again with the rotated token.
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER,
                                now=now + 2 * LATER, connect_uri=CONNECT_URI)
    assert crm.provider.stats["refresh"] == 2 and _api_me(crm.base_url, token) == 200


def test_rotated_refresh_token_is_persisted(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    before = _refresh_token(db, vault)
    get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER,
                     connect_uri=CONNECT_URI)
    after = _refresh_token(db, vault)
    assert after != before
    row = _row(db)
    assert row is not None and row.access_expires_at == now + LATER + 300


def test_missing_refresh_token_in_response_keeps_the_old_one(db, store, vault, projects, now):
    connect(db, store, vault, projects.platform, user_id=USER, login_hint="alice", now=now)
    before = _refresh_token(db, vault, "projects")
    token, conn = get_access_token(db, store, vault, projects.platform, user_id=USER,
                                   now=now + LATER, connect_uri=CONNECT_URI)
    assert projects.provider.stats["refresh"] == 1
    assert _refresh_token(db, vault, "projects") == before
    # No expires_in: the profile's conservative default applies; the API lives at instance_url.
    assert conn.access_expires_at == now + LATER + 300
    assert conn.api_base_url == projects.base_url + "/ws/acme-ws/api"
    response = requests.get(conn.api_base_url + "/me", timeout=5,
                            headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_invalid_grant_marks_needs_reconnect_without_retry_storm(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    # The user revokes the grant at the platform (RFC 7009, as the platform's own UI would).
    requests.post(crm.base_url + "/oauth/revoke", data={"token": _refresh_token(db, vault)},
                  auth=("authserver-broker", "broker-s3cret"), timeout=5).raise_for_status()
    with pytest.raises(ConnectionRequiredError) as info:
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER,
                         connect_uri=CONNECT_URI)
    assert info.value.error == "connection_required" and info.value.status_code == 403
    assert info.value.body()["connect_uri"] == CONNECT_URI
    row = _row(db)
    assert row is not None and row.status == "needs_reconnect"
    requests_so_far = crm.faults.token_requests
    with pytest.raises(ConnectionRequiredError) as again:
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER + 1,
                         connect_uri=CONNECT_URI)
    assert again.value.body()["connect_uri"] == CONNECT_URI
    assert crm.faults.token_requests == requests_so_far


def test_reconnect_after_needs_reconnect_restores_the_connection(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    with db.session() as session:
        session.execute(update(Connection).values(status="needs_reconnect"))
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now + 1)
    token, conn = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + 1,
                                   connect_uri=CONNECT_URI)
    assert conn.status == "active" and _api_me(crm.base_url, token) == 200


def test_transient_503_bounded_retries_then_temporarily_unavailable(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    crm.faults.fail_next(100)
    before = crm.faults.token_requests
    sleeps: list[float] = []
    with pytest.raises(TemporarilyUnavailableError) as info:
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER,
                         connect_uri=CONNECT_URI, sleep=sleeps.append)
    assert info.value.error == "temporarily_unavailable" and info.value.status_code == 503
    assert "overloaded" not in str(info.value.description) + str(info.value.debug)
    assert crm.faults.token_requests - before == REFRESH_ATTEMPTS
    assert sleeps == [0.25, 0.5]
    row = _row(db)
    assert row is not None and row.status == "active"


def test_transient_503_then_success_recovers(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    crm.faults.fail_next(REFRESH_ATTEMPTS - 1)
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER,
                                connect_uri=CONNECT_URI, sleep=lambda _s: None)
    assert crm.provider.stats["refresh"] == 1 and _api_me(crm.base_url, token) == 200


def test_missing_connection_requires_connection(db, store, vault, crm, now):
    with pytest.raises(ConnectionRequiredError) as info:
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                         connect_uri=CONNECT_URI)
    assert info.value.body()["connect_uri"] == CONNECT_URI


def test_force_refresh_only_replaces_the_rejected_token(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    first, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                                connect_uri=CONNECT_URI)
    later = now + connections.FORCE_REFRESH_MIN_INTERVAL
    second, _ = force_refresh(db, store, vault, crm.platform, user_id=USER,
                              rejected_access_token=first, now=later, connect_uri=CONNECT_URI)
    assert second != first and crm.provider.stats["refresh"] == 1
    # Another caller that also saw the old token rejected gets the new one: no second refresh.
    third, _ = force_refresh(db, store, vault, crm.platform, user_id=USER,
                             rejected_access_token=first, now=later, connect_uri=CONNECT_URI)
    assert third == second and crm.provider.stats["refresh"] == 1


def test_force_refresh_right_after_connecting_refreshes_once(db, store, vault, crm, now):
    # A token the API rejects minutes after the user connected (revoked or expired early at
    # the platform) is replaced once; the user is not sent to reconnect.
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                                connect_uri=CONNECT_URI)
    fresh, _ = force_refresh(db, store, vault, crm.platform, user_id=USER,
                             rejected_access_token=token, now=now + 1, connect_uri=CONNECT_URI)
    assert fresh != token and crm.provider.stats["refresh"] == 1


def test_force_refresh_right_after_a_refresh_does_not_refresh_again(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                                connect_uri=CONNECT_URI)
    fresh, _ = force_refresh(db, store, vault, crm.platform, user_id=USER,
                             rejected_access_token=token, now=now + 1, connect_uri=CONNECT_URI)
    # The API rejects the brand-new token too: no second refresh (no storm), same token back.
    same, _ = force_refresh(db, store, vault, crm.platform, user_id=USER,
                            rejected_access_token=fresh, now=now + 2, connect_uri=CONNECT_URI)
    assert same == fresh and crm.provider.stats["refresh"] == 1


def test_stale_fence_cannot_overwrite_newer_tokens(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    stale = _row(db)
    assert stale is not None
    with db.session() as session:  # a newer writer (fence 10**6) has written since
        session.execute(update(Connection).values(generation=10**6))
    with db.session() as session:
        written = connections._fenced_update(session, stale, stale.generation + 1,
                                             {"updated_at": now + 5})
    assert written is False
    row = _row(db)
    assert row is not None and row.updated_at == now


# --- disconnecting ----------------------------------------------------------------------------


def test_disconnect_revokes_at_platform_and_bumps_epoch(db, store, vault, crm, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER, now=now,
                                connect_uri=CONNECT_URI)
    assert connection_epoch(store, USER, "crm") == 0
    assert disconnect(db, store, vault, crm.platform, user_id=USER, now=now + 7) is True
    assert connection_epoch(store, USER, "crm") == now + 7
    stats = crm.provider.stats
    assert stats["revoked"] == 1 and stats["active_grants"] == 0
    assert _api_me(crm.base_url, token) == 401
    assert _row(db) is None
    with pytest.raises(ConnectionRequiredError):
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + 8,
                         connect_uri=CONNECT_URI)


def test_disconnect_without_platform_revocation_still_forgets(db, store, vault, projects, now):
    connect(db, store, vault, projects.platform, user_id=USER, login_hint="alice", now=now)
    assert disconnect(db, store, vault, projects.platform, user_id=USER, now=now) is True
    assert _row(db, "projects") is None and connection_epoch(store, USER, "projects") == now


def test_revoke_all_for_user_disconnects_every_platform(db, store, vault, crm, projects, now):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    connect(db, store, vault, projects.platform, user_id=USER, login_hint="alice", now=now)
    platforms = {"crm": crm.platform, "projects": projects.platform}
    assert revoke_all_for_user(db, store, vault, platforms, USER, now) == 2
    assert _row(db) is None and _row(db, "projects") is None
    assert crm.provider.stats["active_grants"] == 0
    assert connection_epoch(store, USER, "crm") == now
