"""Shared fixtures. Time is fixed (`now`); stores and databases are real.

`store` is parametrised over the embedded store and Redis on 127.0.0.1:6379, `database_url`
over SQLite and PostgreSQL on 127.0.0.1:5432, so every test that uses them runs on both.
`scripts/test` makes sure those services are up; if they are not, the services tests fail
loudly (never skip).

What both ways of serving the app share lives here, once: the clock (`TestClock`, read in
whole seconds through `WholeSeconds`), the settings (`base_settings`) and an app's lifecycle
(`running_app`). The Flask test client (tests/http_helpers.py: `app`, `client`) and the
loopback stack (tests/stack.py: `make_stack`, the module-scoped `stack` fixture below,
configured by `pytest.mark.stack(...)`) are built on them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from tests.stack import Stack

NOW = 1_800_000_000
REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "AUTHSERVER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Remove a test's keys (each test has its own prefix; never FLUSHDB a shared database)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class TestClock:
    """The app's clock in a test: real time plus an offset the test moves (`advance`).
    Passed to `create_app(..., clock=...)`; nothing patches the `time` module."""

    __test__ = False  # a helper, not a test class

    def __init__(self) -> None:
        self.offset: float = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        return (_real_time() if self.frozen is None else self.frozen) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def freeze(self) -> None:
        """Stop at the current instant: a test at an exact boundary (`advance(TTL)`) must not
        depend on how long the machine took between two requests."""
        self.frozen = _real_time()

    def whole_seconds(self) -> WholeSeconds:
        return WholeSeconds(self)


#: Read once: a test that patches `time.time` does not move the test clock.
_real_time = time.time


class WholeSeconds:
    """The same `TestClock` read in whole seconds, as JWT `iat`/`exp` and the database's
    columns are (the test IdP, the agents' assertions and DPoP proofs of tests/stack.py).
    Calling it gives an int, `time()` the float; `offset` and `frozen` are the clock's own, so
    moving either view moves both (`monkeypatch.setattr(view, "offset", ...)` too)."""

    def __init__(self, clock: TestClock | None = None) -> None:
        self.clock = clock or TestClock()

    def __call__(self) -> int:
        return int(self.clock())

    def time(self) -> float:
        return self.clock()

    @property
    def offset(self) -> float:
        return self.clock.offset

    @offset.setter
    def offset(self, value: float) -> None:
        self.clock.offset = value

    @property
    def frozen(self) -> float | None:
        return self.clock.frozen

    @frozen.setter
    def frozen(self, value: float | None) -> None:
        self.clock.frozen = value


def base_settings(tmp_path: Path | str, database_url: str | None, redis_url: str, *,
                  issuer: str) -> dict[str, Any]:
    """The settings every test app starts from: a data dir under `tmp_path`, testing mode,
    `issuer`, the database (None: the data dir's SQLite file), the store ("" = embedded) and a
    Redis key prefix of its own (never FLUSHDB a shared database; `running_app` deletes it)."""
    settings: dict[str, Any] = {
        "data_dir": str(Path(tmp_path) / "data"),
        "testing": True,
        "issuer": issuer,
        "redis_url": redis_url,
        "redis_key_prefix": f"test:{uuid.uuid4().hex}:",
    }
    if database_url:
        settings["database_url"] = database_url
    return settings


@contextmanager
def running_app(settings: dict[str, Any], clock: Any = time.time) -> Iterator[Flask]:
    """`create_app(settings, clock=clock)` (a `TestClock`; the wall clock if none); afterwards
    its engine is disposed and, on Redis, the settings' key prefix deleted (instances sharing
    the settings may each do it)."""
    from authserver import create_app

    application = create_app(settings, clock=clock)
    try:
        yield application
    finally:
        application.extensions["authserver"].db.engine.dispose()
        if settings.get("redis_url"):
            delete_prefixed(settings["redis_url"], settings["redis_key_prefix"])


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
    delete_prefixed(REDIS_URL, prefix)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands of each write to Redis (one round trip each: a command, or a pipeline)."""
    import redis

    sent: list[list[str]] = []
    send = redis.connection.Connection.send_packed_command

    def counting(self: redis.connection.Connection, command: object, *args: object,
                 **kw: object) -> None:
        chunks = command if isinstance(command, list) else [command]
        lines = b"".join(c if isinstance(c, bytes) else bytes(c)  # type: ignore[arg-type]
                         for c in chunks).split(b"\r\n")
        # Each command is an array header `*N`, then its name's length `$n`, then its name.
        sent.append([lines[i + 2].decode() for i, line in enumerate(lines)
                     if line.startswith(b"*")])
        send(self, command, *args, **kw)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    return sent


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stack(**options): the module's loopback stack (the `stack` fixture): "
        "make_stack's keyword arguments, and `connected=(username, ...)` to sign those users "
        "in and connect them to the CRM first (their sessions: `stack.browsers`)")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    """One loopback stack (tests/stack.py) for the module, on SQLite and the embedded store
    unless its `pytestmark = pytest.mark.stack(...)` says otherwise. A module that must do more
    to it first overrides this fixture with one that requests `stack`."""
    from tests.stack import make_stack

    marker = request.node.get_closest_marker("stack")
    options = dict(marker.kwargs) if marker is not None else {}
    connected = tuple(options.pop("connected", ()))
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    s = make_stack(tmp_path_factory.mktemp(name), **options)
    try:
        for username in connected:
            s.browsers[username] = s.signed_in_and_connected(username, ("crm",))
        yield s
    finally:
        s.close()
