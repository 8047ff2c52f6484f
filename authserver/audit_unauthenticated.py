"""Refusals before anyone is authenticated: counted and logged, never appended to the chain.

A gateway request without a valid token or a failed client authentication would otherwise let
an anonymous client take an audit shard's lock at will (issue 13, item 8), so
`refused_unauthenticated` counts it (`authserver_unauthenticated_rejections_total`) and logs it
at most once per `UNAUTHENTICATED_LOG_INTERVAL` per event and reason and process, with how many
it stands for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from authserver.audit_records import _bounded

#: At most one log line per (event, reason) per this many seconds for unauthenticated refusals.
UNAUTHENTICATED_LOG_INTERVAL = 60.0

log = logging.getLogger("authserver.audit")

class RateLimitedLog:
    """One WARNING line per key per `interval` seconds (of `clock`, monotonic by default),
    saying how many events it stands for. Per process; the lock is this process's, held for
    a dictionary update, never the database's."""

    def __init__(self, interval: float = UNAUTHENTICATED_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def __call__(self, event: str, reason: str) -> bool:
        """Log this refusal unless one like it was logged within the interval; True if it was
        logged."""
        key = (event, reason)
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            count = self._suppressed.pop(key, 0) + 1
        log.warning("unauthenticated request refused (not audited)",
                    extra={"event": event, "reason": reason, "count": count,
                           "interval_seconds": self.interval})
        return True


_UNAUTHENTICATED_LOG = RateLimitedLog()
UNAUTHENTICATED_EVENTS = frozenset({"gateway_call", "token_exchange", "id_jag"})


def refused_unauthenticated(event: str, reason: str) -> None:
    """Account for a refusal before any principal was authenticated, without an audit record
    (and so without the chain's lock): a metric, and a rate-limited log line."""
    from authserver.observability import UNAUTHENTICATED_REJECTIONS

    event = event if event in UNAUTHENTICATED_EVENTS else "other"  # closed label sets
    reason = _bounded("reason", reason) or "unknown"
    UNAUTHENTICATED_REJECTIONS.labels(event=event, reason=reason).inc()
    _UNAUTHENTICATED_LOG(event, reason)
