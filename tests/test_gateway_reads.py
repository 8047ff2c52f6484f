"""The gateway's read unit (issue 18): fewer round trips, the same checks.

On SQLite and on PostgreSQL + Redis: one gateway GET reads in one statement
(`gateway._load_rows`) everything `check_token_live` needs (whether the jti is revoked, the
latest withdrawal of the token's agents, the user, the client) and the connection, and nothing
else before the audit record; on PostgreSQL that read runs in autocommit and the audit record
in an ordinary transaction. Each liveness refusal still refuses, with its error, in that one
read, and is audited under its principal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import delete, event, select, update

from authserver.agents import withdraw_agent
from authserver.models import Client, User
from authserver.models.audit import AuditEvent
from authserver.models.broker import Connection
from authserver.tokens import revoke_access_token
from tests.conftest import REDIS_URL, fresh_postgres_database
from tests.stack import Stack, correlation, intent, make_stack

READ = intent("read", "deal:acme-123")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway-reads")
    if request.param == "sqlite":
        s = make_stack(tmp)
        try:
            yield s
        finally:
            s.close()
        return
    with fresh_postgres_database() as url:
        s = make_stack(tmp, database_url=url, redis_url=REDIS_URL)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture(scope="module", autouse=True)
def connected(stack: Stack) -> None:
    for username in ("alice", "bob"):
        stack.signed_in_and_connected(username, ("crm",))


def _capability(stack: Stack, username: str, agent: Any = None) -> tuple[str, Any]:
    assertion, key = stack.edge_mint(username, agent=agent)
    resp = stack.agent_exchange(assertion, key, intent=READ, agent=agent)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"], key


def _call(stack: Stack, token: str, key: Any) -> tuple[requests.Response, str]:
    cid = correlation()
    resp = stack.gateway(token, key, "GET", "crm/deals/acme-123",
                         headers={"X-Request-ID": cid})
    return resp, cid


def _record(stack: Stack, cid: str) -> AuditEvent:
    with stack.services.db.session() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.correlation_id == cid)).all()
    assert len(rows) == 1, rows
    return rows[0]


def _user_id(stack: Stack, username: str) -> str:
    with stack.services.db.session() as session:
        users = session.scalars(select(User)).all()
    return next(u.id for u in users if (u.email or "").startswith(username + "@"))


def _statements(stack: Stack, send: Any) -> tuple[Any, list[tuple[str, bool | None]],
                                                  list[tuple[str, bool | None]]]:
    """`send()`'s result, and the statements it ran as (SQL, autocommit on PostgreSQL): those
    of the read unit, then those of the audit record's unit (which may read the chain too)."""
    engine = stack.services.db.engine
    postgres = engine.dialect.name == "postgresql"
    seen: list[tuple[str, bool | None]] = []

    def statement(conn: Any, _cursor: Any, text: str, *_a: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        seen.append((" ".join(text.split()), dbapi.autocommit if postgres else None))

    event.listen(engine, "before_cursor_execute", statement)
    try:
        result = send()
    finally:
        event.remove(engine, "before_cursor_execute", statement)
    return (result, [(s, a) for s, a in seen if "audit_" not in s],
            [(s, a) for s, a in seen if "audit_" in s])


def _is_the_one_read(statement: str) -> bool:
    """`gateway._ROWS_STATEMENT`: the jti and the withdrawals as subqueries, the user, the
    client and the connection outer-joined onto one row."""
    return (statement.startswith("SELECT EXISTS (SELECT * FROM revoked_tokens WHERE")
            and "(SELECT max(agent_revocations.revoked_before)" in statement
            and "LEFT OUTER JOIN users" in statement and "LEFT OUTER JOIN clients" in statement
            and "LEFT OUTER JOIN connections" in statement)


def test_a_call_reads_its_liveness_and_connection_in_one_statement(stack: Stack) -> None:
    token, key = _capability(stack, "alice")
    assert _call(stack, token, key)[0].status_code == 200  # warm: key ring, pools
    postgres = stack.services.db.engine.dialect.name == "postgresql"
    (resp, cid), reads, writes = _statements(stack, lambda: _call(stack, token, key))
    assert resp.status_code == 200, resp.text
    assert len(reads) == 1, reads
    assert _is_the_one_read(reads[0][0]), reads
    assert writes, "the audit record is written"
    if postgres:
        assert all(autocommit for _, autocommit in reads)
        assert not any(autocommit for _, autocommit in writes)
    assert _record(stack, cid).outcome == "allowed"


def _refused(stack: Stack, token: str, key: Any, status: int, error: str) -> AuditEvent:
    """A refused call, whose liveness refusal came from the one read (no other statement
    before the audit record's)."""
    (resp, cid), reads, _writes = _statements(stack, lambda: _call(stack, token, key))
    assert len(reads) == 1 and _is_the_one_read(reads[0][0]), reads
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error
    record = _record(stack, cid)
    assert (record.event, record.outcome, record.reason) == ("gateway_call", "denied", error)
    return record


def test_a_withdrawn_agent_is_refused_and_audited(stack: Stack) -> None:
    agent = stack.register_agent(attributes={"allowed_platforms": ["crm"],
                                             "allowed_actions": ["read"]})
    token, key = _capability(stack, "alice", agent)
    user_id = _user_id(stack, "alice")
    with stack.services.db.session() as session:
        withdraw_agent(session, user_id, agent.client_id, now=int(stack.clock()))
    record = _refused(stack, token, key, 401, "invalid_token")
    assert (record.user_id, record.agent_id) == (user_id, agent.client_id)


def test_a_revoked_token_is_refused_and_audited(stack: Stack) -> None:
    token, key = _capability(stack, "alice")
    claims = stack.services.keyring.verify(token, typ="at+jwt", now=int(stack.clock()))
    with stack.services.db.session() as session:
        revoke_access_token(session, claims)
    record = _refused(stack, token, key, 401, "invalid_token")
    assert (record.user_id, record.token_jti) == (_user_id(stack, "alice"), claims["jti"])


def test_a_deleted_client_is_refused_and_audited(stack: Stack) -> None:
    agent = stack.register_agent(attributes={"allowed_platforms": ["crm"],
                                             "allowed_actions": ["read"]})
    token, key = _capability(stack, "alice", agent)
    with stack.services.db.session() as session:
        session.execute(delete(Client).where(Client.client_id == agent.client_id))
    record = _refused(stack, token, key, 401, "invalid_token")
    assert record.agent_id == agent.client_id


def test_an_inactive_user_is_refused_and_audited(stack: Stack) -> None:
    token, key = _capability(stack, "bob")
    user_id = _user_id(stack, "bob")
    with stack.services.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(active=False))
    try:
        record = _refused(stack, token, key, 401, "invalid_token")
        assert record.user_id == user_id
    finally:
        with stack.services.db.session() as session:
            session.execute(update(User).where(User.id == user_id).values(active=True))


def test_a_missing_connection_asks_for_one_and_is_audited(stack: Stack) -> None:
    token, key = _capability(stack, "bob")
    user_id = _user_id(stack, "bob")
    with stack.services.db.session() as session:
        session.execute(delete(Connection).where(Connection.user_id == user_id))
    try:
        resp, cid = _call(stack, token, key)
        assert resp.status_code >= 400, resp.text
        record = _record(stack, cid)
        assert (record.outcome, record.user_id) == ("denied", user_id)
        assert record.reason == resp.json()["error"]
    finally:
        stack.signed_in_and_connected("bob", ("crm",))


def test_a_refusal_after_the_reads_is_audited_in_a_transaction(stack: Stack) -> None:
    token, key = _capability(stack, "alice")
    cid = correlation()
    resp, reads, writes = _statements(stack, lambda: stack.gateway(
        token, key, "POST", "crm/deals/acme-123", headers={"X-Request-ID": cid}))
    assert resp.status_code == 403, resp.text
    assert reads and writes
    if stack.services.db.engine.dialect.name == "postgresql":
        assert all(autocommit for _, autocommit in reads)
        assert not any(autocommit for _, autocommit in writes)
    record = _record(stack, cid)
    assert (record.outcome, record.reason) == ("denied", resp.json()["error"])
