"""Users' downstream platform grants ("connections"), in one import: connecting
(`broker.connect`), the stored rows and the pages' queries (`broker.records`), access tokens
refreshed single-flight (`broker.refresh`, `broker.keepalive`) and disconnecting
(`broker.revoke`). Each job lives in its own module; this one only names the public ones for
callers that use several (the connections pages, token exchange, the tests).
"""

from __future__ import annotations

from authserver.broker.connect import CONNECT_STATE_TTL, finish_connect, start_connect
from authserver.broker.keepalive import KEEPALIVE_MARGIN, keep_alive
from authserver.broker.records import connect_uri, connection_sites, user_connections
from authserver.broker.refresh import (
    FORCE_REFRESH_MIN_INTERVAL,
    REFRESH_ATTEMPTS,
    REFRESH_RETRY_WINDOW,
    force_refresh,
    get_access_token,
    refresh_margin,
)
from authserver.broker.revoke import connection_epoch, disconnect, revoke_all_for_user

__all__ = [
    "CONNECT_STATE_TTL",
    "FORCE_REFRESH_MIN_INTERVAL",
    "KEEPALIVE_MARGIN",
    "REFRESH_ATTEMPTS",
    "REFRESH_RETRY_WINDOW",
    "connect_uri",
    "connection_epoch",
    "connection_sites",
    "disconnect",
    "finish_connect",
    "force_refresh",
    "get_access_token",
    "keep_alive",
    "refresh_margin",
    "revoke_all_for_user",
    "start_connect",
    "user_connections",
]
