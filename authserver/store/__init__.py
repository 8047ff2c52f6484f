"""Shared short-lived state: replay entries, nonces, locks, rate windows, revocation epochs.

`Store` is the only way to state that must hold across processes and hosts. Production uses
`RedisStore`; with no Redis URL configured, `MemoryStore` serves one process only (and says so
at start-up). Every backend error is raised as `StoreUnavailableError` (503
`temporarily_unavailable`): a failing store never reads as "not seen before".
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from authserver.errors import TemporarilyUnavailableError


class StoreUnavailableError(TemporarilyUnavailableError):
    """The shared store could not answer; callers fail closed."""


class LockTimeoutError(TemporarilyUnavailableError):
    """A lock was not acquired within its blocking timeout."""


class Store(Protocol):
    #: True for the embedded store: nothing it holds is seen by another process.
    single_process: bool

    def add_if_absent(self, key: str, ttl: int) -> bool:
        """Record `key` for `ttl` seconds. True if it was new, False if already present."""
        ...

    def add_if_absent_and_get(self, key: str, ttl: int, read: Sequence[str]
                              ) -> tuple[bool, list[str | None]]:
        """`add_if_absent(key, ttl)` and `get` for each key of `read`, sent together: one
        round trip where a request records a one-use entry and needs other state (issue 18:
        the gateway's DPoP replay entry and its revocation epoch). Not a transaction: each
        read sees the store as it is when it runs. An error in any of them raises
        `StoreUnavailableError`.
        """
        ...

    def incr(self, key: str, ttl: int) -> int:
        """Increment a counter that expires `ttl` seconds after its first increment."""
        ...

    def incr_with_previous(self, key: str, previous: str, ttl: int) -> tuple[int, int]:
        """`incr(key, ttl)` and the counter `previous` (0 if absent), in one atomic step.

        A sliding window's spend (authserver.ratelimit): this window's count and the last
        one's in one round trip. Both keys must share a Redis Cluster hash slot (one `{…}`
        hash tag, authserver/store/keys.py).
        """
        ...

    def incr_windows(self, windows: Sequence[tuple[str, str, int]], read: Sequence[str] = ()
                     ) -> tuple[list[tuple[int, int]], list[str | None]]:
        """`incr_with_previous(key, previous, ttl)` for each of `windows` and `get` for each key
        of `read`, sent together: one round trip where a request needs several (issue 18).
        Each spend is atomic on its own; together they are not a transaction. An error in
        any of them raises `StoreUnavailableError`.
        """
        ...

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, ttl: int | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def lock(
        self, name: str, *, timeout: float, blocking_timeout: float
    ) -> AbstractContextManager[int]:
        """A mutual-exclusion lock held at most `timeout` seconds.

        Entering yields a fencing token (strictly increasing per name); raises
        `LockTimeoutError` if not acquired within `blocking_timeout` seconds.
        """
        ...

    def ping(self) -> None:
        """Raise `StoreUnavailableError` unless the store answers."""
        ...


def create_store(redis_url: str | None, prefix: str = "authserver:") -> Store:
    if redis_url:
        from authserver.store.redis import RedisStore

        return RedisStore.from_url(redis_url, prefix)
    from authserver.store.memory import MemoryStore

    return MemoryStore()


__all__ = ["LockTimeoutError", "Store", "StoreUnavailableError", "create_store"]
