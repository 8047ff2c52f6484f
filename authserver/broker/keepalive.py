"""Keeping idle connections alive: a refresh token that dies after some time unused
(Microsoft, Atlassian: 90 days) is refreshed before then, by an operator's cron job
(`authserver connections keepalive`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from sqlalchemy import select

from authserver.broker.profiles import Platform
from authserver.broker.records import connect_uri
from authserver.broker.refresh import Sleep, refresh_single_flight
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import ConnectionRequiredError, TemporarilyUnavailableError
from authserver.models.broker import CONNECTION_ACTIVE, Connection
from authserver.store import Store

log = logging.getLogger(__name__)

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
        refresh_single_flight(db, store, vault, platform, user_id=user_id, now=now,
                              connect_uri=connect_uri(issuer, platform.name), sleep=sleep,
                              needs_refresh=needs_refresh)
    except ConnectionRequiredError:
        # Parked by this refresh (invalid_grant), or disconnected meanwhile.
        return "needs_reconnect" if refreshed else "skipped"
    except TemporarilyUnavailableError as e:
        log.warning("keepalive refresh at %s failed: %s", platform.name, e.debug)
        return "failed"
    return "refreshed" if refreshed and refreshed[-1] else "skipped"
