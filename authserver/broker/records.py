"""The stored connection rows (`models.broker.Connection`, one per user and platform): reading
them, opening their sealed tokens, the per-(user, platform) lock every writer takes, and the
queries the pages make. No platform is called here.

Every writer of a row (connecting, refreshing, disconnecting) holds `connection_lock`; its
fencing token is stored on the row as `generation`, so a writer whose lock expired cannot
overwrite newer tokens.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import ConnectionRequiredError
from authserver.kms import EnvelopeIntegrityError
from authserver.models.broker import CONNECTION_ACTIVE, Connection
from authserver.store import Store
from authserver.store import keys as store_keys

log = logging.getLogger(__name__)

#: The per-(user, platform) lock auto-expires after this long. It must exceed the worst
#: refresh: REFRESH_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + backoffs, about 40 s.
LOCK_TIMEOUT = 60
#: How long a caller waits for another process's refresh before answering 503.
LOCK_WAIT = 30
CONNECT_PATH = "/connections/{platform}/connect"


def connect_uri(issuer: str, platform_name: str) -> str:
    """Where a user (re)connects a platform; sent with `connection_required`."""
    return issuer.rstrip("/") + CONNECT_PATH.format(platform=platform_name)


def connection_lock(store: Store, user_id: str, platform: str) -> AbstractContextManager[int]:
    """The lock every writer of (user, platform)'s row holds; entering yields the fencing token
    (raises `LockTimeoutError` after LOCK_WAIT seconds)."""
    return store.lock(store_keys.refresh_lock(user_id, platform), timeout=LOCK_TIMEOUT,
                      blocking_timeout=LOCK_WAIT)


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


def select_connection(session: Session, user_id: str, platform: str) -> Connection | None:
    return session.scalars(select(Connection).where(
        Connection.user_id == user_id, Connection.platform == platform)).one_or_none()


def load_connection(db: Database, user_id: str, platform: str) -> Connection | None:
    with db.session() as session:
        return select_connection(session, user_id, platform)


def require_usable(conn: Connection | None, connect_uri: str) -> None:
    """Raise ConnectionRequiredError (with `connect_uri`) unless `conn` exists and is active."""
    if conn is None:
        raise ConnectionRequiredError("Connect this platform first",
                                      debug="broker: no connection",
                                      extra={"connect_uri": connect_uri})
    if conn.status != CONNECTION_ACTIVE:
        raise ConnectionRequiredError("The connection to this platform must be renewed by the user",
                                      debug=f"broker: connection {conn.status}",
                                      extra={"connect_uri": connect_uri})


def open_token(vault: Vault, conn: Connection, kind: str) -> str:
    """The stored `kind` ("access_token" or "refresh_token"), decrypted."""
    sealed = conn.access_token_ciphertext if kind == "access_token" else \
        conn.refresh_token_ciphertext
    assert sealed is not None
    return vault.open(conn.user_id, conn.platform, kind, sealed)


def open_all_tokens(vault: Vault, conn: Connection) -> dict[str, str]:
    """The tokens stored on `conn` by kind, for revoking them (what does not decrypt is left
    out: the row is deleted anyway)."""
    tokens: dict[str, str] = {}
    try:
        tokens["access_token"] = open_token(vault, conn, "access_token")
        if conn.refresh_token_ciphertext is not None:
            tokens["refresh_token"] = open_token(vault, conn, "refresh_token")
    except EnvelopeIntegrityError:
        # Deleting must not depend on decrypting: we can still forget what we cannot read.
        log.error("connection tokens for platform %s did not decrypt; deleting anyway",
                  conn.platform)
    return tokens
