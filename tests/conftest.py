"""Shared fixtures. Time is fixed (`now`); stores and databases are real.

`store` is parametrised over the embedded store and Redis on 127.0.0.1:6379, `database_url`
over SQLite and PostgreSQL on 127.0.0.1:5432, so every test that uses them runs on both.
`scripts/test` makes sure those services are up; if they are not, the services tests fail
loudly (never skip).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

NOW = 1_800_000_000
REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "AUTHSERVER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Remove a test's keys (each test has its own prefix; never FLUSHDB a shared database)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


class TestClock:
    """The app's clock in a test: real time plus an offset the test moves (`advance`).
    Passed to `create_app(..., clock=...)`; nothing patches the `time` module."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        return (time.time() if self.frozen is None else self.frozen) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def freeze(self) -> None:
        """Stop at the current instant: a test at an exact boundary (`advance(TTL)`) must not
        depend on how long the machine took between two requests."""
        self.frozen = time.time()


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def now() -> int:
    return NOW


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[object]:
    if request.param == "memory":
        from authserver.store.memory import MemoryStore

        yield MemoryStore()
        return
    import redis

    from authserver.store.redis import RedisStore

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.ping()  # services are required: a dead Redis fails the test, it never skips
    # A key prefix per test, not FLUSHDB: other processes (gunicorn in slow tests, a second
    # pytest) may share this database.
    prefix = f"test:{uuid.uuid4().hex}:"
    yield RedisStore(client, prefix=prefix)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the shared server; dropped afterwards."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.db"  # type: ignore[str-bytes-safe]
        return
    with fresh_postgres_database() as url:
        yield url
