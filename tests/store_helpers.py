"""A store double for the tests that count store round trips (issue 18)."""

from __future__ import annotations

from typing import Any

from authserver.store.memory import MemoryStore


class CountingStore(MemoryStore):
    """Notes the store calls a request makes (each one a Redis round trip): the replay
    entry's, with or without reads, and each lone `get`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._inside = False

    def _note(self, name: str) -> None:
        if not self._inside:
            self.calls.append(name)

    def add_if_absent(self, key: str, ttl: int) -> bool:
        self._note("add_if_absent")
        return super().add_if_absent(key, ttl)

    def add_if_absent_and_get(self, key: str, ttl: int, read: Any
                              ) -> tuple[bool, list[str | None]]:
        self._note("add_if_absent_and_get")
        self._inside = True
        try:
            return super().add_if_absent_and_get(key, ttl, read)
        finally:
            self._inside = False

    def get(self, key: str) -> str | None:
        self._note("get")
        return super().get(key)
