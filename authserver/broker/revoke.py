"""Ending a user's grant at a platform (RFC 7009): disconnecting (one platform, or all of a
user's at deprovisioning), the connection epoch that kills capability tokens minted before a
disconnect, and revoking a grant a reconnect superseded.

Disconnecting kills capability tokens first (an epoch in the shared store), then our copy,
then the grant at the platform. Failures at the platform are logged, not raised: our side is
already gone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import delete, select

from authserver.broker.oauth_client import (
    PlatformRejected,
    PlatformUnavailable,
    TokenSet,
    revoke,
    send_revocation,
)
from authserver.broker.profiles import Platform
from authserver.broker.records import connection_lock, open_all_tokens, select_connection
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import TemporarilyUnavailableError
from authserver.models.broker import Connection
from authserver.store import Store
from authserver.store import keys as store_keys

log = logging.getLogger(__name__)

#: Connection epochs outlive every capability token minted before them many times over.
CONNECTION_EPOCH_TTL = 30 * 24 * 3600


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
    return epoch_value(store.get(store_keys.connection_epoch(user_id, platform)))


def epoch_value(raw: str | None) -> int:
    """The epoch stored at `authserver.store.keys.connection_epoch` (read by the caller, e.g.
    with a DPoP proof's replay entry): 0 when absent; unreadable fails closed (503)."""
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
    with connection_lock(store, user_id, name), db.session() as session:
        conn = select_connection(session, user_id, name)
        if conn is None:
            return False
        if platform is not None:
            tokens = open_all_tokens(vault, conn)
        session.execute(delete(Connection).where(Connection.id == conn.id))
    log.info("disconnected user from platform %s", name)
    if platform is not None:
        _revoke_at_platform(platform, tokens)
    return True


def revoke_superseded(platform: Platform, old: Mapping[str, str], new: TokenSet) -> None:
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


def _revoke_at_platform(platform: Platform, tokens: Mapping[str, str]) -> None:
    """Revoke the grant `tokens` belong to at the platform (the first revocable kind that
    works); logged, never raised."""
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
