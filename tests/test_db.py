"""authserver.db disconnect handling on PostgreSQL (issue 18): no pre-ping round trip, yet a
pooled connection the server has dropped is replaced at checkout, and one that drops
mid-request costs that request only (503), not the next."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from authserver.db import Database, DatabaseUnavailableError
from tests.conftest import POSTGRES_URL


def _backend_pid(db: Database) -> int:
    with db.session() as session:
        return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()
    time.sleep(0.2)  # the FATAL message and the EOF reach our socket


@pytest.fixture
def db() -> Iterator[Database]:
    database = Database(POSTGRES_URL)
    yield database
    database.engine.dispose()


def test_no_pre_ping_round_trip(db: Database) -> None:
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: statements.append(statement))
    pings: list[object] = []
    original = db.engine.dialect.do_ping

    def counting_ping(conn: object) -> bool:
        pings.append(conn)
        return original(conn)  # type: ignore[arg-type]

    db.engine.dialect.do_ping = counting_ping  # type: ignore[method-assign,assignment]
    _backend_pid(db)
    _backend_pid(db)  # the second checkout reuses the pooled connection
    assert pings == []
    assert statements == ["SELECT pg_backend_pid()"] * 2


def test_connection_dropped_while_idle_is_replaced_at_checkout(db: Database) -> None:
    pid = _backend_pid(db)
    assert _backend_pid(db) == pid  # pooled
    _terminate(pid)
    assert _backend_pid(db) != pid  # no error: the dead connection never reached the caller


def test_connection_dropped_mid_request_is_503_then_recovers(db: Database) -> None:
    with pytest.raises(DatabaseUnavailableError), db.session() as session:
        pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        _terminate(int(pid))
        session.execute(sa.text("SELECT 1"))
    assert _backend_pid(db) != pid
