"""Embedded store: correct for ONE process only (the demo and single-process development).

Replay caches, locks and rate limits kept here are invisible to other workers or hosts; run
more than one process only with `AUTHSERVER_REDIS_URL` set. The server (`create_app`) warns
once at start-up when it runs on this store; admin commands and the demo do not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from authserver.store import LockTimeoutError


class MemoryStore:
    single_process = True

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._data: dict[str, tuple[str, float | None]] = {}
        self._mutex = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._fences: dict[str, int] = {}

    def _live(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            del self._data[key]
            return None
        return value

    def add_if_absent(self, key: str, ttl: int) -> bool:
        with self._mutex:
            if self._live(key) is not None:
                return False
            self._data[key] = ("1", self._clock() + ttl)
            return True

    def add_if_absent_and_get(self, key: str, ttl: int, read: Sequence[str]
                              ) -> tuple[bool, list[str | None]]:
        return self.add_if_absent(key, ttl), [self.get(k) for k in read]

    def incr(self, key: str, ttl: int) -> int:
        with self._mutex:
            return self._incr(key, ttl)

    def incr_with_previous(self, key: str, previous: str, ttl: int) -> tuple[int, int]:
        with self._mutex:
            return self._incr(key, ttl), int(self._live(previous) or 0)

    def incr_windows(self, windows: Sequence[tuple[str, str, int]], read: Sequence[str] = ()
                     ) -> tuple[list[tuple[int, int]], list[str | None]]:
        return ([self.incr_with_previous(key, previous, ttl) for key, previous, ttl in windows],
                [self.get(key) for key in read])

    def _incr(self, key: str, ttl: int) -> int:
        """`incr` under the held mutex."""
        current = self._live(key)
        if current is None:
            self._data[key] = ("1", self._clock() + ttl)
            return 1
        value = int(current) + 1
        self._data[key] = (str(value), self._data[key][1])
        return value

    def get(self, key: str) -> str | None:
        with self._mutex:
            return self._live(key)

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        with self._mutex:
            self._data[key] = (value, None if ttl is None else self._clock() + ttl)

    def delete(self, key: str) -> None:
        with self._mutex:
            self._data.pop(key, None)

    @contextmanager
    def lock(self, name: str, *, timeout: float, blocking_timeout: float) -> Iterator[int]:
        # `timeout` (auto-release) only matters across processes; one process releases in finally.
        with self._mutex:
            lock = self._locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=blocking_timeout):
            raise LockTimeoutError(debug=f"lock {name} not acquired in {blocking_timeout}s")
        try:
            with self._mutex:
                fence = self._fences.get(name, 0) + 1
                self._fences[name] = fence
            yield fence
        finally:
            lock.release()

    def ping(self) -> None:
        return None
