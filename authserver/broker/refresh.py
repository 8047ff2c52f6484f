"""Users' access tokens at a platform, refreshed (RFC 6749 §6) single-flight under the
connection lock.

A token is stale `refresh_margin` seconds before it expires (the platform's setting, at most
half the token's own lifetime, so a 12 s token is not stale the moment it arrives). At most one
refresh runs per (user, platform) across every process and host (the lock in the shared store,
with a fencing token stored on the row so a writer whose lock expired cannot overwrite newer
tokens); a waiter that finds the tokens rewritten while it waited uses them, so no call ever
waits on, or causes, more than one refresh. A rotated refresh token is committed before the new
access token is handed out. A refresh answered `invalid_grant` parks the connection as
`needs_reconnect` (no retry storm).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping

from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver.broker.oauth_client import (
    PlatformInvalidGrant,
    PlatformUnavailable,
    TokenSet,
    refresh,
)
from authserver.broker.profiles import Platform
from authserver.broker.records import (
    LOCK_TIMEOUT,
    connection_lock,
    load_connection,
    open_token,
    require_usable,
)
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import ConnectionRequiredError, TemporarilyUnavailableError
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

#: Refresh attempts for transient platform failures, and the backoff between them.
REFRESH_ATTEMPTS = 3
BACKOFF_BASE = 0.25  # seconds; doubles per attempt
BACKOFF_MAX = 2.0
#: The longest a refresh with its retries can take (seconds): a rotated refresh token whose
#: reuse leeway exceeds it may be retried after an unknown outcome.
REFRESH_RETRY_WINDOW = LOCK_TIMEOUT
#: How long refreshed tokens the database could not store wait, sealed, in the store.
PENDING_REFRESH_TTL = 24 * 3600
#: A token is used for at least this many seconds after it was obtained, however soon the
#: platform says it expires.
MIN_TOKEN_AGE = 1
#: A 401 from the API forces a refresh at most this often per connection.
FORCE_REFRESH_MIN_INTERVAL = 30

Sleep = Callable[[float], None]


def get_access_token(db: Database, store: Store, vault: Vault, platform: Platform, *,
                     user_id: str, now: int, connect_uri: str,
                     sleep: Sleep = time.sleep, loaded: Connection | None = None
                     ) -> tuple[str, Connection]:
    """The user's live access token at `platform`, refreshed first if it is stale (it has no
    more than `refresh_margin` seconds left). `loaded`: the connection row as the caller's own
    transaction just read it (the gateway's one session); else it is read here.

    Raises ConnectionRequiredError (with `connect_uri`) when there is no usable connection or
    the platform refused the refresh token; TemporarilyUnavailableError when the platform or a
    dependency is down (after bounded retries) or another refresh did not finish in time.
    """
    conn = loaded if loaded is not None else load_connection(db, user_id, platform.name)
    require_usable(conn, connect_uri)
    assert conn is not None
    if _is_fresh(platform, conn, now):
        return open_token(vault, conn, "access_token"), conn
    seen_generation = conn.generation

    def needs_refresh(latest: Connection, _current: str) -> bool:
        # Compare-and-refresh: only the stale tokens this call saw. If anyone wrote new ones
        # while we waited for the lock (a refresh, a reconnect), this call uses those: it
        # never waits on a second refresh, even for tokens that are stale on arrival.
        return latest.generation == seen_generation and not _is_fresh(platform, latest, now)

    return refresh_single_flight(
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

    conn = load_connection(db, user_id, platform.name)
    require_usable(conn, connect_uri)
    assert conn is not None
    current = open_token(vault, conn, "access_token")
    if not is_rejected_one(current):
        return current, conn
    return refresh_single_flight(db, store, vault, platform, user_id=user_id, now=now,
                                 connect_uri=connect_uri, sleep=sleep,
                                 needs_refresh=needs_refresh)


def refresh_single_flight(db: Database, store: Store, vault: Vault, platform: Platform, *,
                          user_id: str, now: int, connect_uri: str, sleep: Sleep,
                          needs_refresh: Callable[[Connection, str], bool]
                          ) -> tuple[str, Connection]:
    """Under the connection lock, re-read the row and refresh it if `needs_refresh(row,
    current access token)` still says so; returns the access token to use and the row. Shared
    by `get_access_token`, `force_refresh` and `broker.keepalive`."""
    with connection_lock(store, user_id, platform.name) as fence:
        # Re-read under the lock: the previous holder may have refreshed already.
        conn = load_connection(db, user_id, platform.name)
        require_usable(conn, connect_uri)
        assert conn is not None
        current = open_token(vault, conn, "access_token")
        if not needs_refresh(conn, current):
            return current, conn
        if conn.refresh_token_ciphertext is None:
            # Nothing to refresh with (e.g. non-expiring tokens that the API now rejects).
            return _park_needs_reconnect(db, vault, conn, fence, now, connect_uri, None)
        refresh_token = open_token(vault, conn, "refresh_token")
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
    latest = load_connection(db, conn.user_id, platform.name)
    if not written:
        # A newer writer (a reconnect, or a refresher after our lock expired) or a disconnect
        # got there first: theirs is the connection's current state.
        log.warning("stale refresh result for platform %s discarded", platform.name)
        require_usable(latest, connect_uri)
        assert latest is not None
        return open_token(vault, latest, "access_token"), latest
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
        latest = load_connection(db, conn.user_id, conn.platform)
        require_usable(latest, connect_uri)
        assert latest is not None
        return open_token(vault, latest, "access_token"), latest
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
