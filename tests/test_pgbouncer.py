"""PostgreSQL behind PgBouncer in transaction mode (docs/operating.md, "Scaling out").

Transaction pooling gives a client a server connection for one transaction only, so nothing may
outlive a transaction on the server: no session settings, no LISTEN, no temporary tables, no
session advisory lock held across transactions, and no server-side prepared statement (psycopg
prepares one after 5 runs of a statement; PgBouncer before 1.21 does not track them). The URL's
`?prepare_threshold=none` (authserver/db.py) turns psycopg's preparation off.

The test starts its own PgBouncer on a spare port in front of the shared PostgreSQL (trust, its
own config in a temporary directory). Through a one-server-connection pool it shows the failure
without the parameter; through the app database's pool (2: each instance's start-up migration
needs two at once) it runs the migrations and two app instances' requests, alternating, past the
threshold. Skipped only if `pgbouncer` is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError

from authserver import create_app
from authserver.db import Database
from authserver.models import AuditEvent
from tests.conftest import POSTGRES_URL, fresh_postgres_database
from tests.http_helpers import (
    ISSUER,
    RESOURCE,
    code_flow,
    confidential_client,
    create_local_user,
    introspect,
    login,
    revoke,
    token_request,
)
from tests.pgbouncer_helpers import PGBOUNCER, running_pgbouncer

needs_pgbouncer = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer not installed")
#: psycopg's default: a statement run this many times on one connection is prepared.
PSYCOPG_PREPARE_THRESHOLD = 5
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: Server connections per app database: an instance's start-up migration holds one (the
#: advisory lock's transaction) while Alembic runs on a second.
APP_POOL_SIZE = 2


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[int]:
    """A PgBouncer in transaction mode on a spare port; returns the port."""
    with running_pgbouncer(f"* = host=127.0.0.1 port=5432 pool_size={APP_POOL_SIZE}\n"
                           "shared = host=127.0.0.1 port=5432 dbname=test pool_size=1") as port:
        yield port


@pytest.fixture
def bounced_url(pgbouncer: int) -> Iterator[str]:
    """A fresh database, addressed through PgBouncer with preparation off."""
    with fresh_postgres_database() as direct:
        name = direct.rsplit("/", 1)[1]
        yield f"postgresql://postgres@127.0.0.1:{pgbouncer}/{name}?prepare_threshold=none"


def _alternate(url: str, runs: int) -> None:
    """Two pooled connections run one statement in turns, one transaction each: under
    transaction pooling they share PgBouncer's one server connection (database `shared`)."""
    db = Database(url)
    try:
        with db.engine.connect() as a, db.engine.connect() as b:
            for i in range(runs):
                for conn in (a, b):
                    conn.execute(sa.text("SELECT CAST(:n AS integer) + 1"), {"n": i})
                    conn.commit()
    finally:
        db.engine.dispose()


@needs_pgbouncer
def test_server_side_prepared_statements_break_and_the_url_turns_them_off(pgbouncer: int):
    shared = f"postgresql://postgres@127.0.0.1:{pgbouncer}/shared"
    with pytest.raises(ProgrammingError, match=r"prepared statement .* already exists"):
        _alternate(shared, PSYCOPG_PREPARE_THRESHOLD + 1)
    _alternate(shared + "?prepare_threshold=none", 3 * PSYCOPG_PREPARE_THRESHOLD)


@needs_pgbouncer
def test_migrations_and_two_instances_run_through_transaction_pooling(
        bounced_url: str, tmp_path: Path, clock: Any):
    Database(bounced_url).upgrade()  # the advisory lock: taken and released in one transaction
    config = {"data_dir": str(tmp_path / "data"), "testing": True, "issuer": ISSUER,
              "database_url": bounced_url, "redis_url": "", "resources": (RESOURCE,)}
    apps = [create_app(config, clock=clock), create_app(config, clock=clock)]
    try:
        clients = [a.test_client() for a in apps]
        registered = confidential_client(clients[0], scope="read write", grant_types=[
            "authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE])
        create_local_user(apps[0], "alice", "correct horse battery staple")
        for c in clients:
            login(c, "alice", "correct horse battery staple")
        # Past the threshold on each instance, in turns: every statement of registration,
        # client authentication, issuance, introspection, the audit append, code, refresh and
        # revocation.
        for _ in range(PSYCOPG_PREPARE_THRESHOLD + 2):
            for c in clients:
                response = token_request(c, registered, grant_type="client_credentials",
                                         scope="read")
                assert response.status_code == 200, response.get_json()
                assert introspect(c, registered, response.get_json()["access_token"])["active"]
            # A refused token exchange by an authenticated client: an audit append (the
            # shard's head row locked, SKIP LOCKED on PostgreSQL) in the request's transaction.
            for c in clients:
                response = token_request(c, registered, grant_type=TOKEN_EXCHANGE,
                                         subject_token="not-a-token",
                                         subject_token_type=ACCESS_TOKEN_TYPE)
                assert response.status_code == 400, response.get_json()
        with apps[1].extensions["authserver"].db.session() as session:
            audited = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
        assert audited == 2 * (PSYCOPG_PREPARE_THRESHOLD + 2)
        for c in clients:
            tokens = code_flow(c, registered, scope="read")
            for _ in range(PSYCOPG_PREPARE_THRESHOLD + 1):
                response = token_request(c, registered, grant_type="refresh_token",
                                         refresh_token=tokens["refresh_token"])
                assert response.status_code == 200, response.get_json()
                tokens = response.get_json()
            assert revoke(c, registered, tokens["refresh_token"]).status_code == 200
    finally:
        for a in apps:
            a.extensions["authserver"].db.engine.dispose()


def test_the_url_parameter_becomes_a_connect_argument_and_leaves_the_url():
    from authserver.db import alembic_config

    db = Database("postgresql://u:p%40ss@db:6432/auth?sslmode=require&prepare_threshold=none")
    assert db.engine.url.query == {"sslmode": "require"}
    assert db.engine.url.password == "p@ss"
    db = Database(POSTGRES_URL + "?prepare_threshold=none")
    try:
        with db.engine.connect() as conn:
            assert conn.connection.driver_connection.prepare_threshold is None  # type: ignore
    finally:
        db.engine.dispose()
    cfg = alembic_config("postgresql://u@db/auth?prepare_threshold=0")
    assert "prepare_threshold" not in cfg.get_main_option("sqlalchemy.url")
    assert cfg.attributes["connect_args"] == {"prepare_threshold": 0}
    with pytest.raises(ValueError, match="prepare_threshold"):
        Database("postgresql://u@db/auth?prepare_threshold=never")
