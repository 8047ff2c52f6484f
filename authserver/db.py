"""SQLAlchemy 2.0 engine and sessions; Alembic upgrades.

The core receives a `Session` as a parameter; only the HTTP layer opens one per request.

Disconnects (PostgreSQL): no `pool_pre_ping`, which cost a round trip on every checkout.
Instead (SQLAlchemy's "Dealing with Disconnects"): a pooled connection whose socket the server
has closed or written to while idle (a restart sends FATAL 57P01, then EOF) is found at checkout
by a zero-timeout poll, with no round trip, and replaced (DisconnectionError: the pool retries
with a fresh connection and invalidates the older ones); `pool_recycle` retires connections an
idle-timeout on the path might have cut silently; and a disconnect that still happens mid-request
invalidates the pool (optimistic handling), so that request is 503 and the next one reconnects.

Behind PgBouncer in transaction mode (before 1.21's `max_prepared_statements`), add
`?prepare_threshold=none` to the URL: psycopg then never prepares a statement server-side (it
does after 5 runs of one statement by default), as a prepared statement would outlive the
transaction on a server connection the next client gets. The app holds no other session state:
the only advisory lock (migrations) is taken and released inside one transaction.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidatePoolError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from authserver.config import PACKAGE_DIR
from authserver.errors import TemporarilyUnavailableError

MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
#: pg_advisory_lock key serialising `upgrade` across processes ("authsrv" as an integer).
MIGRATION_LOCK_KEY = 0x61757468737276
#: Seconds after which a pooled PostgreSQL connection is replaced at its next checkout.
POOL_RECYCLE_SECONDS = 1800


class DatabaseUnavailableError(TemporarilyUnavailableError):
    """The database failed; callers fail closed (503)."""


def _normalise_url(url: str) -> str:
    # psycopg 3 is the driver we ship; accept the plain scheme operators usually write.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        # hide_parameters: a driver error never carries parameter values (client ids, token
        # hashes) into a log line or an exception message.
        kwargs: dict[str, Any] = {"future": True, "hide_parameters": True}
        engine_url, connect_args = _driver_options(self.url)
        if self.url.startswith("sqlite"):
            path = self.url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # One process serves every thread from this pool (threaded dev server, demo).
            kwargs.update(pool_size=10, max_overflow=40)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_recycle=POOL_RECYCLE_SECONDS,
                          connect_args=connect_args)
        self.engine: Engine = create_engine(engine_url, **kwargs)
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine, "checkout", _drop_if_closed_by_server)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise DatabaseUnavailableError(debug=f"database: {type(e).__name__}") from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def upgrade(self) -> None:
        """Apply every Alembic migration (`authserver db upgrade`).

        Serialised across processes (workers starting together on a fresh database): a
        PostgreSQL advisory lock, or an exclusive lock file next to the SQLite file.
        """
        from alembic import command

        with self._migration_lock():
            command.upgrade(alembic_config(self.url), "head")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"),
                                 {"key": MIGRATION_LOCK_KEY})
            return
        path = self.url.split("sqlite:///", 1)[-1] if self.url.startswith("sqlite") else ""
        if not path or path == ":memory:":
            yield
            return
        import fcntl

        with open(path + ".migrate.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ping(self) -> None:
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            raise DatabaseUnavailableError(debug=f"database: {type(e).__name__}") from e


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine_url, connect_args = _driver_options(_normalise_url(url))
    cfg.set_main_option("sqlalchemy.url", engine_url.replace("%", "%%"))
    cfg.attributes["connect_args"] = connect_args  # migrations/env.py passes them on
    return cfg


def _driver_options(url: str) -> tuple[str, dict[str, Any]]:
    """The URL without its `prepare_threshold` parameter, and the psycopg connect argument it
    asks for (`none`: never prepare server-side; an integer: after that many runs)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    value = parsed.query.get("prepare_threshold")
    if parsed.get_backend_name() != "postgresql" or value is None:
        return url, {}
    value = value[-1] if isinstance(value, tuple) else value
    if value.lower() in ("none", "off"):
        threshold = None
    elif value.isdigit():
        threshold = int(value)
    else:
        raise ValueError("database URL: prepare_threshold must be `none` or a whole number")
    stripped = parsed.difference_update_query(["prepare_threshold"])
    return stripped.render_as_string(hide_password=False), {"prepare_threshold": threshold}


def _drop_if_closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: refuse a connection the server has dropped while it sat idle.

    An idle connection has nothing to read; a readable (or hung-up) socket means the server
    closed it or said it is terminating it. InvalidatePoolError (a DisconnectionError) makes the
    pool discard it, invalidate every connection opened before now, and check out a fresh one.
    """
    if getattr(dbapi_conn, "closed", False) or getattr(dbapi_conn, "broken", False):
        raise InvalidatePoolError("connection closed")
    try:
        fd = dbapi_conn.fileno()
    except Exception as e:  # a connection without a usable socket is not usable either
        raise InvalidatePoolError("connection has no socket") from e
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise InvalidatePoolError("server closed or wrote to an idle connection")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
