"""Broker connect flow, single-flight refresh and disconnect against real OAuth servers on
loopback (authserver.testing.crm: rotating refresh tokens with reuse detection;
authserver.testing.projects: instance_url, no expires_in, no refresh token on refresh).

Every test runs on the embedded store and Redis, and on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, text, update

from authserver.broker import connections, refresh
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
from authserver.broker.profiles import Platform
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
from tests.conftest import NOW

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


def _database_fails_once_storing_the_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    from authserver.db import DatabaseUnavailableError

    real = refresh._store_refreshed

    def fail_once(*args, **kwargs):
        monkeypatch.setattr(refresh, "_store_refreshed", real)
        raise DatabaseUnavailableError(debug="database: OperationalError")

    monkeypatch.setattr(refresh, "_store_refreshed", fail_once)


def test_refresh_the_database_could_not_store_is_stored_later(db, store, vault, crm, now,
                                                              monkeypatch):
    # The CRM rotated the refresh token, then storing failed: the next refresh stores the
    # tokens it received (kept sealed in the store) instead of presenting the spent one.
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    before = _refresh_token(db, vault)
    _database_fails_once_storing_the_refresh(monkeypatch)
    with pytest.raises(TemporarilyUnavailableError):
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER,
                         connect_uri=CONNECT_URI)
    assert _refresh_token(db, vault) == before
    token, conn = get_access_token(db, store, vault, crm.platform, user_id=USER,
                                   now=now + LATER + 1, connect_uri=CONNECT_URI)
    assert conn.status == "active" and _api_me(crm.base_url, token) == 200
    assert _refresh_token(db, vault) != before
    stats = crm.provider.stats
    assert (stats["refresh"], stats["refresh_reuse"], stats["active_grants"]) == (1, 0, 1)


def test_pending_refresh_is_ignored_after_a_reconnect(db, store, vault, crm, now, monkeypatch):
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    _database_fails_once_storing_the_refresh(monkeypatch)
    with pytest.raises(TemporarilyUnavailableError):
        get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + LATER,
                         connect_uri=CONNECT_URI)
    # Alice reconnects meanwhile: the kept tokens belong to the grant she replaced.
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice",
            now=now + LATER + 1)
    reconnected = _refresh_token(db, vault)
    token, _ = get_access_token(db, store, vault, crm.platform, user_id=USER,
                                   now=now + 2 * LATER, connect_uri=CONNECT_URI)
    assert _api_me(crm.base_url, token) == 200
    assert _refresh_token(db, vault) != reconnected  # refreshed from the new grant
    assert crm.provider.stats["refresh"] == 2


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
        written = refresh._fenced_update(session, stale, stale.generation + 1,
                                         {"updated_at": now + 5})
    assert written is False
    row = _row(db)
    assert row is not None and row.updated_at == now


# --- the refresh margin, bounded by the token's own lifetime ---------------------------------


@pytest.mark.parametrize(("configured", "lifetime", "margin"), [
    (60, 5, 2), (60, 12, 6), (60, 3600, 60), (60, 70, 35), (60, 1, 0), (60, 0, 0),
    (60, -30, 0), (0, 3600, 0), (300, 3600, 300)])
def test_refresh_margin_is_at_most_half_the_lifetime(configured, lifetime, margin):
    assert connections.refresh_margin(configured, NOW, NOW + lifetime) == margin


def _crm_settings(**extra):
    return {"authorize_url": "https://crm.example.com/authorize",
            "token_url": "https://crm.example.com/token",
            "revocation_url": "https://crm.example.com/revoke",
            "client_id": "c", "client_secret": "s", **extra}


def test_refresh_margin_setting_defaults_to_sixty_seconds():
    assert Platform.from_settings("crm", _crm_settings()).refresh_margin == 60
    assert Platform.from_settings("crm", _crm_settings(refresh_margin=0)).refresh_margin == 0
    assert Platform.from_settings("crm", _crm_settings(refresh_margin=3600)).refresh_margin \
        == 3600


@pytest.mark.parametrize("value", [-1, 3601, "60", 1.5, True, None, [60]])
def test_refresh_margin_setting_is_validated(value):
    with pytest.raises(ValueError, match="platform crm: refresh_margin must be a whole number"):
        Platform.from_settings("crm", _crm_settings(refresh_margin=value))


def _with_margin(platform, margin):
    return dataclasses.replace(platform, refresh_margin=margin)


def _refreshes_at(db, store, vault, platform, provider, instants):
    """Refresh count at the platform after one get_access_token at each instant, in order."""
    counts = []
    for instant in instants:
        get_access_token(db, store, vault, platform, user_id=USER, now=instant,
                         connect_uri=CONNECT_URI)
        counts.append(provider.stats["refresh"])
    return counts


@pytest.mark.parametrize(("ttl", "stale_after"), [(5, 3), (12, 6), (3600, 3540)])
def test_token_is_fresh_until_the_margin_bounded_by_half_its_lifetime(db, store, vault, crm, now,
                                                                      ttl, stale_after):
    # 5 s and 12 s tokens are shorter than the default 60 s margin: they must still be used
    # for the first half of their life, not refreshed on every call (issue 16).
    crm.provider.access_token_ttl = ttl
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    counts = _refreshes_at(db, store, vault, crm.platform, crm.provider,
                           [now, now + stale_after - 1, now + stale_after,
                            now + stale_after, now + stale_after + ttl - stale_after - 1])
    # Fresh, fresh (last second before the margin), refreshed, the new token is fresh, and
    # it in turn is still fresh one second before its own margin.
    assert counts == [0, 0, 1, 1, 1]
    get_access_token(db, store, vault, crm.platform, user_id=USER,
                     now=now + 2 * stale_after, connect_uri=CONNECT_URI)
    assert crm.provider.stats["refresh"] == 2  # exactly one refresh per expiry
    assert crm.provider.stats["refresh_reuse"] == 0


def test_configured_margin_applies_to_long_lived_tokens(db, store, vault, crm, now):
    crm.provider.access_token_ttl = 3600
    platform = _with_margin(crm.platform, 300)
    connect(db, store, vault, platform, user_id=USER, login_hint="alice", now=now)
    assert _refreshes_at(db, store, vault, platform, crm.provider,
                         [now + 3299, now + 3300]) == [0, 1]


def test_zero_margin_uses_the_token_until_its_last_second(db, store, vault, crm, now):
    crm.provider.access_token_ttl = 12
    platform = _with_margin(crm.platform, 0)
    connect(db, store, vault, platform, user_id=USER, login_hint="alice", now=now)
    assert _refreshes_at(db, store, vault, platform, crm.provider,
                         [now + 11, now + 12]) == [0, 1]


def test_obtained_time_is_stored_with_the_token(db, store, vault, crm, now):
    crm.provider.access_token_ttl = 12
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    row = _row(db)
    assert row is not None and (row.access_obtained_at, row.access_expires_at) == (now, now + 12)
    get_access_token(db, store, vault, crm.platform, user_id=USER, now=now + 7,
                     connect_uri=CONNECT_URI)
    row = _row(db)
    assert row is not None
    assert (row.access_obtained_at, row.access_expires_at) == (now + 7, now + 19)


def test_rows_from_before_the_column_use_updated_at(db, store, vault, crm, now):
    crm.provider.access_token_ttl = 12
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    with db.session() as session:
        session.execute(update(Connection).values(access_obtained_at=None))
    assert _refreshes_at(db, store, vault, crm.platform, crm.provider,
                         [now + 5, now + 6]) == [0, 1]


def _fifty_at_once(db, store, vault, platform, instant):
    barrier = threading.Barrier(50)
    results: list[str] = []
    errors: list[BaseException] = []
    mutex = threading.Lock()

    def call() -> None:
        barrier.wait()
        try:
            token, _ = get_access_token(db, store, vault, platform, user_id=USER, now=instant,
                                        connect_uri=CONNECT_URI)
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
    return results


@pytest.mark.parametrize("ttl", [5, 12, 3600])
def test_fifty_threads_one_refresh_per_expiry(db, store, vault, crm, now, ttl):
    crm.provider.access_token_ttl = ttl
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    margin = min(60, ttl // 2)
    instant = now
    for expiry in (1, 2, 3):
        instant += ttl - margin  # the first second the current token counts as stale
        results = _fifty_at_once(db, store, vault, crm.platform, instant)
        assert len(results) == 50 and len(set(results)) == 1
        assert crm.provider.stats["refresh"] == expiry
    assert crm.provider.stats["refresh_reuse"] == 0 and crm.provider.stats["active_grants"] == 1


def test_tokens_stale_on_arrival_cost_one_refresh_per_second(db, store, vault, crm, now):
    # A platform that answers with tokens that are already stale (expires_in 0): the waiters
    # take the token refreshed while they waited, and callers arriving in the same second use
    # it too, instead of refreshing again in turn; no call waits on more than one refresh.
    connect(db, store, vault, crm.platform, user_id=USER, login_hint="alice", now=now)
    crm.provider.access_token_ttl = 0
    results = _fifty_at_once(db, store, vault, crm.platform, now + LATER)
    assert len(set(results)) == 1
    assert crm.provider.stats["refresh"] == 1 and crm.provider.stats["refresh_reuse"] == 0
    # A second later the next wave refreshes once more (bounded: one per second).
    again = _fifty_at_once(db, store, vault, crm.platform, now + LATER + 1)
    assert len(set(again)) == 1 and again[0] != results[0]
    assert crm.provider.stats["refresh"] == 2 and crm.provider.stats["refresh_reuse"] == 0


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
