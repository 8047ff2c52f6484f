"""RFC 6749 §4.1 + RFC 7636 connect flow, RFC 6749 §6 refresh under a distributed lock, and
RFC 7009 disconnect, for users' downstream platform grants.

Connecting: `state` is bound to the signed-in user and the browser session that started the
flow and is single-use. Refreshing: a token is stale `refresh_margin` seconds before it expires
(the platform's setting, at most half the token's own lifetime, so a 12 s token is not stale
the moment it arrives). At most one refresh runs per (user, platform) across every process and
host (a lock in the shared store, with a fencing token stored on the row so a writer whose lock
expired cannot overwrite newer tokens); a waiter that finds the tokens rewritten while it
waited uses them, so no call ever waits on, or causes, more than one refresh.
A rotated refresh token is committed before the new access token is handed out. A refresh
answered `invalid_grant` parks the connection as `needs_reconnect` (no retry storm).
Disconnecting kills capability tokens first (an epoch in the shared store), then our copy,
then the grant at the platform.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from authserver.broker.oauth_client import (
    PlatformInvalidGrant,
    PlatformRejected,
    PlatformUnavailable,
    TokenSet,
    build_authorize_url,
    exchange_code,
    refresh,
    revoke,
    s256,
    send_revocation,
)
from authserver.broker.profiles import Platform
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import (
    ConnectionRequiredError,
    InvalidGrantError,
    InvalidRequestError,
    TemporarilyUnavailableError,
)
from authserver.kms import EnvelopeIntegrityError
from authserver.models.broker import (
    CONNECTION_ACTIVE,
    CONNECTION_NEEDS_RECONNECT,
    Connection,
)
from authserver.observability import PLATFORM_REFRESHES
from authserver.store import Store
from authserver.store import keys as store_keys

log = logging.getLogger(__name__)

#: How long a started connect flow may take (the user signs in at the platform meanwhile).
CONNECT_STATE_TTL = 600
STATE_BYTES = 32
CODE_VERIFIER_BYTES = 48  # 64 characters: RFC 7636 §4.1 allows 43-128
#: Refresh attempts for transient platform failures, and the backoff between them.
REFRESH_ATTEMPTS = 3
BACKOFF_BASE = 0.25  # seconds; doubles per attempt
BACKOFF_MAX = 2.0
#: The refresh lock auto-expires after this long. It must exceed the worst refresh:
#: REFRESH_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + backoffs, about 40 s.
LOCK_TIMEOUT = 60
#: The longest a refresh with its retries can take (seconds): a rotated refresh token whose
#: reuse leeway exceeds it may be retried after an unknown outcome.
REFRESH_RETRY_WINDOW = LOCK_TIMEOUT
#: How long a caller waits for another process's refresh before answering 503.
LOCK_WAIT = 30
#: How long refreshed tokens the database could not store wait, sealed, in the store.
PENDING_REFRESH_TTL = 24 * 3600
#: A token is used for at least this many seconds after it was obtained, however soon the
#: platform says it expires.
MIN_TOKEN_AGE = 1
#: A 401 from the API forces a refresh at most this often per connection.
FORCE_REFRESH_MIN_INTERVAL = 30
#: Connection epochs outlive every capability token minted before them many times over.
CONNECTION_EPOCH_TTL = 30 * 24 * 3600
CONNECT_PATH = "/connections/{platform}/connect"

Sleep = Callable[[float], None]


def connect_uri(issuer: str, platform_name: str) -> str:
    """Where a user (re)connects a platform; sent with `connection_required`."""
    return issuer.rstrip("/") + CONNECT_PATH.format(platform=platform_name)


def connection_sites(conn: Connection) -> list[dict[str, str]] | None:
    """The sites stored on `conn` (`Connection.sites`); None when none were stored (a platform
    without sites, or a row from before they were) or the column is unreadable."""
    if conn.sites is None:
        return None
    try:
        sites = json.loads(conn.sites)
    except ValueError:
        return None
    if not isinstance(sites, list) or not all(
            isinstance(s, dict) and isinstance(s.get("id"), str) for s in sites):
        return None
    return [{k: str(s.get(k) or "") for k in ("id", "name", "url")} for s in sites]


def user_connections(session: Session, user_id: str) -> list[Connection]:
    """The user's connections, for their connections page (no token is decrypted)."""
    return list(session.scalars(
        select(Connection).where(Connection.user_id == user_id).order_by(Connection.platform)
    ))


# --- connecting (RFC 6749 §4.1, RFC 7636) ------------------------------------------------------


def start_connect(store: Store, platform: Platform, *, user_id: str, session_binding: str,
                  redirect_uri: str, now: int) -> str:
    """Begin the code flow for the signed-in `user_id`; returns the platform's authorize URL.

    `session_binding` is a secret tied to the browser session (e.g. its session id): the flow
    can only be finished by the same user in the same session (RFC 9700 §4.7, CSRF).
    """
    if not session_binding or not user_id:
        raise ValueError("start_connect needs a signed-in user and a session binding")
    state = secrets.token_urlsafe(STATE_BYTES)
    code_verifier = secrets.token_urlsafe(CODE_VERIFIER_BYTES)
    record = {
        "user_id": user_id,
        "platform": platform.name,
        "code_verifier": code_verifier,
        "session": _digest(session_binding),
        "redirect_uri": redirect_uri,
        "created_at": now,
    }
    store.set(store_keys.connect_state(state), json.dumps(record), ttl=CONNECT_STATE_TTL)
    return build_authorize_url(platform, redirect_uri=redirect_uri, state=state,
                               code_challenge=s256(code_verifier))


def finish_connect(db: Database, store: Store, vault: Vault, platform: Platform, *, state: str,
                   code: str, user_id: str, session_binding: str, redirect_uri: str,
                   now: int) -> Connection:
    """Redeem the platform's code and store the grant (replacing an older one).

    Raises InvalidRequestError for an unknown, expired, replayed or foreign `state`, and
    InvalidGrantError when the platform refuses the code. The state is spent either way.
    """
    record = _claim_state(store, state)
    _check_state_owner(record, platform, user_id, session_binding, redirect_uri, now)
    try:
        tokens = exchange_code(platform, code, str(record["code_verifier"]), redirect_uri)
    except PlatformInvalidGrant as e:
        raise InvalidGrantError("The platform did not accept the authorization",
                                debug=e.debug) from e
    superseded: dict[str, str] = {}
    with store.lock(store_keys.refresh_lock(user_id, platform.name), timeout=LOCK_TIMEOUT,
                    blocking_timeout=LOCK_WAIT) as fence, db.session() as session:
        conn = _select(session, user_id, platform.name)
        if conn is None:
            conn = Connection(id="con_" + secrets.token_urlsafe(16), user_id=user_id,
                              platform=platform.name, created_at=now, generation=0)
            session.add(conn)
        elif platform.profile.revoke_superseded_grant:
            superseded = _open_all(vault, conn)
        conn.generation = _next_generation(conn.generation, fence)
        conn.status = CONNECTION_ACTIVE
        conn.access_token_ciphertext = vault.seal(user_id, platform.name, "access_token",
                                                  tokens.access_token)
        conn.refresh_token_ciphertext = None if tokens.refresh_token is None else vault.seal(
            user_id, platform.name, "refresh_token", tokens.refresh_token)
        conn.access_expires_at = None if tokens.expires_in is None else now + tokens.expires_in
        conn.access_obtained_at = now
        conn.api_base_url = tokens.api_base_url
        conn.scope = tokens.scope or " ".join(platform.scopes)
        conn.account_label = tokens.account_label
        conn.sites = None if tokens.sites is None else json.dumps(list(tokens.sites))
        conn.updated_at = now
    log.info("connected user to platform %s", platform.name)
    if superseded:
        _revoke_superseded(platform, superseded, tokens)
    return conn


def _revoke_superseded(platform: Platform, old: Mapping[str, str], new: TokenSet) -> None:
    """A reconnect replaced a grant: revoke the old one (best effort, after the new one is
    stored), so a platform that caps live grants per user and app (Salesforce 5, GitHub 10)
    does not silently revoke the oldest, and a stale grant does not linger."""
    fresh = {new.access_token, new.refresh_token}
    old = {kind: token for kind, token in old.items() if token not in fresh}
    if not old:
        return
    hook = platform.profile.superseded_revocation_request
    if hook is None:
        _revoke_at_platform(platform, old)
        return
    for kind in platform.profile.revocable_tokens:
        token = old.get(kind)
        if token is None:
            continue
        try:
            req = hook(platform, token, kind)
            send_revocation(platform, req)
            return
        except (PlatformUnavailable, PlatformRejected) as e:
            log.warning("revocation of a superseded %s at %s failed: %s", kind,
                        platform.name, e.debug)


def _claim_state(store: Store, state: str) -> dict[str, object]:
    key = store_keys.connect_state(state)
    raw = store.get(key)
    if raw is None:
        raise InvalidRequestError("The connection request is unknown or expired",
                                  debug="connect: unknown or expired state")
    # Single use even under concurrency: only one caller can add the marker.
    if not store.add_if_absent(key + ":used", CONNECT_STATE_TTL):
        raise InvalidRequestError("The connection request was already used",
                                  debug="connect: state replayed")
    store.delete(key)
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise InvalidRequestError("The connection request is invalid", debug="connect: record")
    return record


def _check_state_owner(record: Mapping[str, object], platform: Platform, user_id: str,
                       session_binding: str, redirect_uri: str, now: int) -> None:
    def reject(reason: str) -> InvalidRequestError:
        return InvalidRequestError("The connection request does not belong to this session",
                                   debug=f"connect: {reason}")

    created_at = record.get("created_at")
    if not isinstance(created_at, int) or now - created_at > CONNECT_STATE_TTL:
        raise InvalidRequestError("The connection request is unknown or expired",
                                  debug="connect: state expired")
    if record.get("platform") != platform.name:
        raise reject("state was issued for another platform")
    # The user who finishes must be the user who started, in the same browser session.
    if not hmac.compare_digest(str(record.get("user_id", "")).encode(), user_id.encode()):
        raise reject("state was issued to another user")
    if not hmac.compare_digest(str(record.get("session", "")), _digest(session_binding)):
        raise reject("state was issued to another session")
    if record.get("redirect_uri") != redirect_uri:
        raise reject("redirect_uri differs from the one the flow started with")


# --- access tokens, refreshed single-flight (RFC 6749 §6) --------------------------------------


def get_access_token(db: Database, store: Store, vault: Vault, platform: Platform, *,
                     user_id: str, now: int, connect_uri: str,
                     sleep: Sleep = time.sleep) -> tuple[str, Connection]:
    """The user's live access token at `platform`, refreshed first if it is stale (it has no
    more than `refresh_margin` seconds left).

    Raises ConnectionRequiredError (with `connect_uri`) when there is no usable connection or
    the platform refused the refresh token; TemporarilyUnavailableError when the platform or a
    dependency is down (after bounded retries) or another refresh did not finish in time.
    """
    conn = _load(db, user_id, platform.name)
    _require_usable(conn, connect_uri)
    assert conn is not None
    if _is_fresh(platform, conn, now):
        return _open(vault, conn, "access_token"), conn
    seen_generation = conn.generation

    def needs_refresh(latest: Connection, _current: str) -> bool:
        # Compare-and-refresh: only the stale tokens this call saw. If anyone wrote new ones
        # while we waited for the lock (a refresh, a reconnect), this call uses those: it
        # never waits on a second refresh, even for tokens that are stale on arrival.
        return latest.generation == seen_generation and not _is_fresh(platform, latest, now)

    return _refresh_single_flight(
        db, store, vault, platform, user_id=user_id, now=now, connect_uri=connect_uri,
        sleep=sleep, needs_refresh=needs_refresh,
    )


def force_refresh(db: Database, store: Store, vault: Vault, platform: Platform, *,
                  user_id: str, rejected_access_token: str, now: int, connect_uri: str,
                  sleep: Sleep = time.sleep) -> tuple[str, Connection]:
    """After the API answered 401 to `rejected_access_token`: refresh, unless someone already
    has (the stored token differs: return it) or a refresh for this (user, platform) ran less
    than FORCE_REFRESH_MIN_INTERVAL seconds ago (return the token as is; the caller must not
    retry again). Same lock, errors and guarantees as `get_access_token`.
    """
    def is_rejected_one(current: str) -> bool:
        # Compare-and-refresh: only the token that was rejected is worth replacing.
        return hmac.compare_digest(current.encode(), rejected_access_token.encode())

    def needs_refresh(_conn: Connection, current: str) -> bool:
        # Called under the lock only. The shared marker bounds forced refreshes (a platform
        # that rejects every token must not cause a refresh per call).
        return is_rejected_one(current) and store.add_if_absent(
            store_keys.force_refresh(user_id, platform.name), ttl=FORCE_REFRESH_MIN_INTERVAL)

    conn = _load(db, user_id, platform.name)
    _require_usable(conn, connect_uri)
    assert conn is not None
    current = _open(vault, conn, "access_token")
    if not is_rejected_one(current):
        return current, conn
    return _refresh_single_flight(db, store, vault, platform, user_id=user_id, now=now,
                                  connect_uri=connect_uri, sleep=sleep,
                                  needs_refresh=needs_refresh)


def _refresh_single_flight(db: Database, store: Store, vault: Vault, platform: Platform, *,
                           user_id: str, now: int, connect_uri: str, sleep: Sleep,
                           needs_refresh: Callable[[Connection, str], bool]
                           ) -> tuple[str, Connection]:
    with store.lock(store_keys.refresh_lock(user_id, platform.name), timeout=LOCK_TIMEOUT,
                    blocking_timeout=LOCK_WAIT) as fence:
        # Re-read under the lock: the previous holder may have refreshed already.
        conn = _load(db, user_id, platform.name)
        _require_usable(conn, connect_uri)
        assert conn is not None
        current = _open(vault, conn, "access_token")
        if not needs_refresh(conn, current):
            return current, conn
        if conn.refresh_token_ciphertext is None:
            # Nothing to refresh with (e.g. non-expiring tokens that the API now rejects).
            return _park_needs_reconnect(db, vault, conn, fence, now, connect_uri, None)
        refresh_token = _open(vault, conn, "refresh_token")
        # A refresh whose result the database could not store: the platform may have rotated
        # the refresh token we hold, so presenting it again would read as reuse.
        tokens = _pending_refresh(store, vault, platform, conn, now)
        if tokens is None:
            try:
                tokens = _refresh_with_retries(platform, refresh_token, sleep)
            except PlatformInvalidGrant as e:
                PLATFORM_REFRESHES.labels(platform=platform.name, outcome="invalid_grant").inc()
                return _park_needs_reconnect(db, vault, conn, fence, now, connect_uri, e)
            except PlatformUnavailable as e:
                PLATFORM_REFRESHES.labels(platform=platform.name, outcome="unavailable").inc()
                raise TemporarilyUnavailableError("The platform is temporarily unavailable",
                                                  debug=e.debug) from e
            PLATFORM_REFRESHES.labels(platform=platform.name, outcome="refreshed").inc()
        try:
            result = _store_refreshed(db, vault, platform, conn, tokens, fence, now,
                                      connect_uri)
        except TemporarilyUnavailableError:
            _keep_pending_refresh(store, vault, platform, conn, tokens, now)
            raise
        with contextlib.suppress(TemporarilyUnavailableError):
            # Left behind, it no longer matches the stored refresh token and is ignored.
            store.delete(store_keys.refresh_pending(user_id, platform.name))
        # A token this fresh is not refreshed again on a 401 (no storm if the API rejects it).
        store.set(store_keys.force_refresh(user_id, platform.name), str(now),
                  ttl=FORCE_REFRESH_MIN_INTERVAL)
        return result


#: `keep_alive` refreshes a connection this long before its refresh token would die unused.
KEEPALIVE_MARGIN = 14 * 24 * 3600


def keep_alive(db: Database, store: Store, vault: Vault, platforms: Mapping[str, Platform], *,
               issuer: str, now: int, margin: int = KEEPALIVE_MARGIN,
               sleep: Sleep = time.sleep) -> dict[str, int]:
    """Refresh every active connection whose refresh token dies after `refresh_idle_lifetime`
    unused (Microsoft, Atlassian: 90 days) and was last refreshed (or connected) more than
    that minus `margin` ago: an operator runs it from cron (`authserver connections
    keepalive`). Each refresh is the ordinary single-flight one under the per-(user,
    platform) lock, re-checked there, so a concurrent refresh or reconnect is never repeated.
    Returns how many were refreshed, skipped (not due, or refreshed meanwhile), parked as
    needing reconnect, and failed (a platform or dependency down: the next run retries)."""
    with db.session() as session:
        rows = session.execute(select(
            Connection.user_id, Connection.platform, Connection.access_obtained_at,
            Connection.updated_at).where(Connection.status == CONNECTION_ACTIVE,
                                         Connection.refresh_token_ciphertext.is_not(None))
        ).all()
    counts = {"refreshed": 0, "skipped": 0, "needs_reconnect": 0, "failed": 0}
    for user_id, name, obtained_at, updated_at in rows:
        platform = platforms.get(name)
        idle = None if platform is None else platform.profile.refresh_idle_lifetime
        if platform is None or idle is None:
            continue
        due_before = now - max(0, idle - margin)
        last = obtained_at if obtained_at is not None else updated_at
        outcome = "skipped" if last > due_before else _keep_one_alive(
            db, store, vault, platform, user_id, due_before, issuer=issuer, now=now,
            sleep=sleep)
        counts[outcome] += 1
    return counts


def _keep_one_alive(db: Database, store: Store, vault: Vault, platform: Platform, user_id: str,
                    due_before: int, *, issuer: str, now: int, sleep: Sleep) -> str:
    refreshed: list[bool] = []

    def needs_refresh(latest: Connection, _current: str) -> bool:
        # Under the lock: still last refreshed before `due_before` (no one refreshed since).
        last = latest.access_obtained_at if latest.access_obtained_at is not None \
            else latest.updated_at
        refreshed.append(last <= due_before and latest.refresh_token_ciphertext is not None)
        return refreshed[-1]

    try:
        _refresh_single_flight(db, store, vault, platform, user_id=user_id, now=now,
                               connect_uri=connect_uri(issuer, platform.name), sleep=sleep,
                               needs_refresh=needs_refresh)
    except ConnectionRequiredError:
        # Parked by this refresh (invalid_grant), or disconnected meanwhile.
        return "needs_reconnect" if refreshed else "skipped"
    except TemporarilyUnavailableError as e:
        log.warning("keepalive refresh at %s failed: %s", platform.name, e.debug)
        return "failed"
    return "refreshed" if refreshed and refreshed[-1] else "skipped"


def _pending_digest(conn: Connection) -> str:
    """Names the refresh token a pending result replaces (its ciphertext, not the token)."""
    return hashlib.sha256((conn.refresh_token_ciphertext or "").encode()).hexdigest()


def _keep_pending_refresh(store: Store, vault: Vault, platform: Platform, conn: Connection,
                          tokens: TokenSet, now: int) -> None:
    """The platform answered but the database failed: keep the new tokens, sealed as in the
    database, in the store until a later refresh (under the same lock) can store them."""
    seal = functools.partial(vault.seal, conn.user_id, platform.name)
    pending = {
        "replaces": _pending_digest(conn),
        "access_token": seal("access_token", tokens.access_token),
        "refresh_token": None if tokens.refresh_token is None
        else seal("refresh_token", tokens.refresh_token),
        "expires_at": None if tokens.expires_in is None else now + tokens.expires_in,
        "scope": tokens.scope,
        "api_base_url": tokens.api_base_url,
    }
    try:
        store.set(store_keys.refresh_pending(conn.user_id, platform.name), json.dumps(pending),
                  ttl=PENDING_REFRESH_TTL)
    except TemporarilyUnavailableError:
        log.error("refreshed tokens for platform %s could be kept neither in the database "
                  "nor in the store", platform.name)
        return
    log.warning("refreshed tokens for platform %s kept in the store until the database "
                "can store them", platform.name)


def _pending_refresh(store: Store, vault: Vault, platform: Platform, conn: Connection,
                     now: int) -> TokenSet | None:
    """The tokens `_keep_pending_refresh` kept, if they replace the refresh token in `conn`
    (after a reconnect or another writer's refresh they are stale: ignored)."""
    raw = store.get(store_keys.refresh_pending(conn.user_id, platform.name))
    if raw is None:
        return None
    try:
        pending = json.loads(raw)
        if pending["replaces"] != _pending_digest(conn):
            return None
        open_ = functools.partial(vault.open, conn.user_id, platform.name)
        expires_at = pending["expires_at"]
        return TokenSet(
            access_token=open_("access_token", pending["access_token"]),
            refresh_token=None if pending["refresh_token"] is None
            else open_("refresh_token", pending["refresh_token"]),
            expires_in=None if expires_at is None else max(0, int(expires_at) - now),
            scope=pending["scope"], api_base_url=pending["api_base_url"])
    except (ValueError, KeyError, TypeError, EnvelopeIntegrityError):
        log.warning("unusable pending refresh for platform %s ignored", platform.name)
        return None


def _refresh_with_retries(platform: Platform, refresh_token: str, sleep: Sleep) -> TokenSet:
    for attempt in range(1, REFRESH_ATTEMPTS + 1):
        try:
            return refresh(platform, refresh_token)
        except PlatformUnavailable as e:
            # With rotating refresh tokens, a request the platform may have processed (timeout
            # after sending) must not be replayed: reuse detection would revoke the grant.
            # A documented reuse leeway longer than all our retries (Atlassian: 10 minutes)
            # makes the replay safe again.
            unknown_outcome = e.request_sent and e.status is None
            replay_unsafe = platform.profile.rotates_refresh_tokens and \
                platform.profile.refresh_reuse_grace < REFRESH_RETRY_WINDOW
            if attempt == REFRESH_ATTEMPTS or (unknown_outcome and replay_unsafe):
                raise
            log.info("refresh at %s failed (%s); retry %d", platform.name, e.debug, attempt)
            sleep(min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def _store_refreshed(db: Database, vault: Vault, platform: Platform, conn: Connection,
                     tokens: TokenSet, fence: int, now: int, connect_uri: str
                     ) -> tuple[str, Connection]:
    values: dict[str, object] = {
        "access_token_ciphertext": vault.seal(conn.user_id, platform.name, "access_token",
                                              tokens.access_token),
        "access_expires_at": None if tokens.expires_in is None else now + tokens.expires_in,
        "access_obtained_at": now,
        "updated_at": now,
    }
    # RFC 6749 §6: a new refresh token replaces the old one; none means the old one stays.
    if tokens.refresh_token is not None:
        values["refresh_token_ciphertext"] = vault.seal(conn.user_id, platform.name,
                                                        "refresh_token", tokens.refresh_token)
    if tokens.api_base_url is not None:
        values["api_base_url"] = tokens.api_base_url
    if tokens.scope:
        values["scope"] = tokens.scope
    try:
        # Committed before the lock is released and before the new access token is used: a
        # rotated refresh token is never lost to a later crash.
        with db.session() as session:
            written = _fenced_update(session, conn, fence, values)
    except Exception:
        log.error("refreshed tokens for platform %s could not be stored", platform.name)
        raise
    latest = _load(db, conn.user_id, platform.name)
    if not written:
        # A newer writer (a reconnect, or a refresher after our lock expired) or a disconnect
        # got there first: theirs is the connection's current state.
        log.warning("stale refresh result for platform %s discarded", platform.name)
        _require_usable(latest, connect_uri)
        assert latest is not None
        return _open(vault, latest, "access_token"), latest
    assert latest is not None
    return tokens.access_token, latest


def _park_needs_reconnect(db: Database, vault: Vault, conn: Connection, fence: int, now: int,
                          connect_uri: str, cause: PlatformInvalidGrant | None
                          ) -> tuple[str, Connection]:
    """Mark the connection needs_reconnect (fenced: a stale refresher never logs the user out
    over a newer writer's tokens) and raise ConnectionRequiredError."""
    with db.session() as session:
        written = _fenced_update(session, conn, fence,
                                 {"status": CONNECTION_NEEDS_RECONNECT, "updated_at": now})
    if not written:
        latest = _load(db, conn.user_id, conn.platform)
        _require_usable(latest, connect_uri)
        assert latest is not None
        return _open(vault, latest, "access_token"), latest
    log.info("platform %s refused the refresh token; connection needs the user",
             conn.platform)
    raise ConnectionRequiredError(
        "The connection to this platform must be renewed by the user",
        debug="refresh: " + ((cause.debug or "invalid_grant") if cause else "no refresh token"),
        extra={"connect_uri": connect_uri},
    ) from cause


def _fenced_update(session: Session, conn: Connection, fence: int,
                   values: Mapping[str, object]) -> bool:
    """Write `values` only if no newer writer has; returns whether the row was written."""
    stmt = update(Connection).where(Connection.id == conn.id,
                                    Connection.status == CONNECTION_ACTIVE)
    if fence > conn.generation:
        stmt = stmt.where(Connection.generation < fence).values(generation=fence, **values)
    else:
        # The fencing counter is behind the row (the shared store lost it): fall back to a
        # compare-and-set on the generation read under the lock, until the counter catches up.
        log.warning("fencing counter behind connection generation; using compare-and-set")
        stmt = stmt.where(Connection.generation == conn.generation).values(
            generation=conn.generation + 1, **values)
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def _next_generation(current: int, fence: int) -> int:
    return fence if fence > current else current + 1


# --- disconnecting (RFC 7009) ------------------------------------------------------------------


def disconnect(db: Database, store: Store, vault: Vault, platform: Platform, *, user_id: str,
               now: int) -> bool:
    """Kill capability tokens minted so far, delete our copy, revoke the grant at the platform.

    Revocation failures at the platform are logged, not raised: our side is already gone.
    Returns whether a connection existed.
    """
    return _disconnect(db, store, vault, platform.name, platform, user_id=user_id, now=now)


def revoke_all_for_user(db: Database, store: Store, vault: Vault,
                        platforms: Mapping[str, Platform], user_id: str, now: int) -> int:
    """Deprovisioning: disconnect every platform the user connected; returns how many.

    A connection to a platform that is no longer configured is deleted without a call out.
    """
    with db.session() as session:
        names = list(session.scalars(
            select(Connection.platform).where(Connection.user_id == user_id)))
    count = 0
    for name in names:
        count += _disconnect(db, store, vault, name, platforms.get(name), user_id=user_id,
                             now=now)
    return count


def connection_epoch(store: Store, user_id: str, platform: str) -> int:
    """Capability tokens for (user, platform) issued at or before this time are dead (0: none).

    A capability token is valid only if its `iat` is strictly greater than the epoch.
    """
    raw = store.get(store_keys.connection_epoch(user_id, platform))
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as e:
        raise TemporarilyUnavailableError(debug="connection epoch unreadable") from e


def _disconnect(db: Database, store: Store, vault: Vault, name: str, platform: Platform | None,
                *, user_id: str, now: int) -> bool:
    # First, so that no capability token minted before now works again, whatever fails next.
    store.set(store_keys.connection_epoch(user_id, name),
              str(max(now, connection_epoch(store, user_id, name))),
              ttl=CONNECTION_EPOCH_TTL)
    tokens: dict[str, str] = {}
    with store.lock(store_keys.refresh_lock(user_id, name), timeout=LOCK_TIMEOUT,
                    blocking_timeout=LOCK_WAIT), db.session() as session:
        conn = _select(session, user_id, name)
        if conn is None:
            return False
        if platform is not None:
            tokens = _open_all(vault, conn)
        session.execute(delete(Connection).where(Connection.id == conn.id))
    log.info("disconnected user from platform %s", name)
    if platform is not None:
        _revoke_at_platform(platform, tokens)
    return True


def _open_all(vault: Vault, conn: Connection) -> dict[str, str]:
    tokens: dict[str, str] = {}
    try:
        tokens["access_token"] = _open(vault, conn, "access_token")
        if conn.refresh_token_ciphertext is not None:
            tokens["refresh_token"] = _open(vault, conn, "refresh_token")
    except EnvelopeIntegrityError:
        # Deleting must not depend on decrypting: we can still forget what we cannot read.
        log.error("connection tokens for platform %s did not decrypt; deleting anyway",
                  conn.platform)
    return tokens


def _revoke_at_platform(platform: Platform, tokens: Mapping[str, str]) -> None:
    if not platform.profile.supports_revocation:
        log.info("platform %s has no revocation endpoint; the grant ends when the user "
                 "removes the app there", platform.name)
        return
    for kind in platform.profile.revocable_tokens:
        token = tokens.get(kind)
        if token is None:
            continue
        try:
            revoke(platform, token, kind)
            return
        except (PlatformUnavailable, PlatformRejected) as e:
            log.warning("revocation of a %s at %s failed: %s", kind, platform.name, e.debug)
        except ValueError:
            log.warning("platform %s has no usable revocation endpoint", platform.name)
            return


# --- small helpers -----------------------------------------------------------------------------


def _select(session: Session, user_id: str, platform: str) -> Connection | None:
    return session.scalars(select(Connection).where(
        Connection.user_id == user_id, Connection.platform == platform)).one_or_none()


def _load(db: Database, user_id: str, platform: str) -> Connection | None:
    with db.session() as session:
        return _select(session, user_id, platform)


def _require_usable(conn: Connection | None, connect_uri: str) -> None:
    if conn is None:
        raise ConnectionRequiredError("Connect this platform first",
                                      debug="broker: no connection",
                                      extra={"connect_uri": connect_uri})
    if conn.status != CONNECTION_ACTIVE:
        raise ConnectionRequiredError("The connection to this platform must be renewed by the user",
                                      debug=f"broker: connection {conn.status}",
                                      extra={"connect_uri": connect_uri})


def refresh_margin(configured: int, obtained_at: int, expires_at: int) -> int:
    """Seconds before `expires_at` from which a token counts as stale: the platform's
    `configured` margin, but at most half the token's own lifetime (`expires_at - obtained_at`),
    so a token is always usable for the first half of its life. Never negative."""
    return max(0, min(configured, (expires_at - obtained_at) // 2))


def _is_fresh(platform: Platform, conn: Connection, now: int) -> bool:
    """Whether the stored access token is still good for use at `now`: it has more than its
    refresh margin left, or has no known expiry (then only a 401 from the API replaces it), or
    was obtained less than MIN_TOKEN_AGE ago (a platform answering with tokens that are
    already expiring costs at most one refresh per MIN_TOKEN_AGE, never one per call)."""
    if conn.access_expires_at is None:
        return True
    obtained_at = conn.access_obtained_at if conn.access_obtained_at is not None \
        else conn.updated_at
    if now - obtained_at < MIN_TOKEN_AGE:
        return True
    margin = refresh_margin(platform.refresh_margin, obtained_at, conn.access_expires_at)
    return conn.access_expires_at - now > margin


def _open(vault: Vault, conn: Connection, kind: str) -> str:
    sealed = conn.access_token_ciphertext if kind == "access_token" else \
        conn.refresh_token_ciphertext
    assert sealed is not None
    return vault.open(conn.user_id, conn.platform, kind, sealed)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


