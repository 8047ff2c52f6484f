"""One unit of work per request (issue 17 item 2): the handler decides what commits.

No hook commits after the response: a handler that writes and forgets to commit persists
nothing, and a write whose commit fails answers 503 with nothing stored. A refusal's audit
record persists alone (`AuditLog.append_refusal`); a pending approval is a unit of its own
(`approvals.request_approval`), so exactly one persists although its request is refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from authserver.approvals import PENDING, request_approval
from authserver.audit import AuditLog, AuditRecord
from authserver.db import Database, DatabaseUnavailableError
from authserver.models import Client
from authserver.models.approvals import Approval
from authserver.models.audit import AuditEvent
from authserver.models.base import Base
from authserver.models.oauth import User
from authserver.store.memory import MemoryStore
from tests.http_helpers import REDIRECT_URI, app_config, redis_url  # noqa: F401

INTENT = {"action": "delete", "resource": "deal:acme-123", "count": 1}


def _user(user_id: str, now: int) -> User:
    return User(id=user_id, idp_issuer="https://idp.example", idp_subject=user_id,
                created_at=now)


def _users(database: Database) -> set[str]:
    with database.session() as s:
        return set(s.scalars(select(User.id)))


# --- the request lifecycle ---------------------------------------------------------------------


@pytest.fixture
def app(app_config: dict[str, Any], clock: Any) -> Iterator[Flask]:
    """The app with two test routes that add a user: one commits, one forgets to."""
    from tests.conftest import running_app

    with running_app(app_config, clock) as application:

        def add(commit: bool) -> str:
            user_id = "usr_" + secrets.token_urlsafe(8)
            g.db.add(_user(user_id, g.now))
            g.db.flush()
            if commit:
                from authserver.http.unit_of_work import commit as commit_unit

                commit_unit()
            return user_id

        application.add_url_rule("/_test/forgets", "forgets", lambda: add(False),
                                 methods=["POST"])
        application.add_url_rule("/_test/commits", "commits", lambda: add(True),
                                 methods=["POST"])
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_no_hook_commits_a_write_the_handler_did_not_commit(app, client):
    database = app.extensions["authserver"].db
    response = client.post("/_test/forgets")
    assert response.status_code == 200
    assert response.text not in _users(database)
    committed = client.post("/_test/commits")
    assert committed.status_code == 200
    assert committed.text in _users(database)


def test_a_write_whose_commit_fails_answers_503_and_persists_nothing(app, client,
                                                                      monkeypatch):
    """The registration endpoint: no client id or secret for a client that was not stored."""
    database = app.extensions["authserver"].db
    with database.session() as s:
        before = s.scalar(select(func.count()).select_from(Client))

    def fail_commit(*_args: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("connection lost"))

    from sqlalchemy.orm import Session

    original = Session.commit

    def commit(self: Session) -> None:
        if self is g.get("db"):
            fail_commit()
        original(self)

    monkeypatch.setattr(Session, "commit", commit)
    response = client.post("/register", json={
        "redirect_uris": [REDIRECT_URI], "client_name": "Agent",
        "token_endpoint_auth_method": "client_secret_basic"})
    monkeypatch.undo()
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers.get("Retry-After")
    assert "client_secret" not in response.text
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Client)) == before


def test_a_request_that_runs_no_statement_costs_no_round_trip(app, client):
    engine = app.extensions["authserver"].db.engine
    seen: list[str] = []
    listeners = {name: (lambda n: lambda *_a, **_k: seen.append(n))(name)
                 for name in ("begin", "commit", "rollback", "before_cursor_execute")}
    for name, fn in listeners.items():
        event.listen(engine, name, fn)
    try:
        assert client.get("/.well-known/oauth-authorization-server").status_code == 200
    finally:
        for name, fn in listeners.items():
            event.remove(engine, name, fn)
    assert seen == []


def test_commit_with_nothing_begun_or_pending_sends_nothing(app, client, monkeypatch):
    """commit() and teardown skip SQLAlchemy's empty autobegin-and-commit (issue 18): a
    token request that ran no statement spends no time on a transaction it never had."""
    from sqlalchemy.orm import Session

    from authserver.http.unit_of_work import commit as commit_unit

    calls: list[str] = []

    def counted(name: str) -> Any:
        original = getattr(Session, name)

        def call(self: Session) -> None:
            calls.append(name)
            original(self)
        return call

    for name in ("commit", "rollback"):
        monkeypatch.setattr(Session, name, counted(name))

    def nothing() -> str:
        commit_unit()
        return "ok"

    app.add_url_rule("/_test/nothing", "nothing", nothing, methods=["POST"])
    assert client.post("/_test/nothing").status_code == 200
    assert calls == []


def test_commit_of_an_unflushed_add_still_commits(app, client):
    """A pending object with no statement sent yet is work: commit() flushes and commits it."""
    from authserver.http.unit_of_work import commit as commit_unit

    def add_unflushed() -> str:
        user_id = "usr_" + secrets.token_urlsafe(8)
        g.db.add(_user(user_id, g.now))
        commit_unit()
        return user_id

    app.add_url_rule("/_test/unflushed", "unflushed", add_unflushed, methods=["POST"])
    response = client.post("/_test/unflushed")
    assert response.status_code == 200
    assert response.text in _users(app.extensions["authserver"].db)


# --- a refusal's record, a pending approval ----------------------------------------------------


@pytest.fixture
def db(database_url: str, now: int) -> Iterator[Database]:
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    with database.session() as s:
        s.add(_user("alice", now))
    yield database
    database.engine.dispose()


def test_a_refusals_record_persists_and_nothing_else_of_its_request(db, now):
    session = db.sessionmaker()
    try:
        session.add(_user("provisioned-then-refused", now))  # e.g. a JIT user
        session.flush()
        AuditLog().append_refusal(session, AuditRecord(
            event="token_exchange", outcome="denied", reason="intent_mismatch",
            user_id="alice"), now=now)
    finally:
        session.rollback()  # what teardown does: nothing is left to roll back
        session.close()
    assert _users(db) == {"alice"}
    with db.session() as s:
        events = list(s.scalars(select(AuditEvent)))
    assert [(e.event, e.outcome, e.reason) for e in events] == [
        ("token_exchange", "denied", "intent_mismatch")]
    with db.session() as s:
        assert AuditLog().verify(s).ok


def test_a_refusal_whose_record_cannot_commit_is_503(db, now, monkeypatch):
    session = db.sessionmaker()
    monkeypatch.setattr(session, "commit", lambda: (_ for _ in ()).throw(
        OperationalError("COMMIT", {}, Exception("gone"))))
    with pytest.raises(DatabaseUnavailableError):
        AuditLog().append_refusal(session, AuditRecord(
            event="gateway_call", outcome="denied", user_id="alice"), now=now)
    session.close()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_approval_required_leaves_exactly_one_pending_approval(db, now):
    """The request that asks is refused (its session rolls back), the card stays; asking
    again with the same intent finds it rather than making a second one."""
    store = MemoryStore(clock=lambda: float(now))
    ids = []
    for _ in range(2):
        request_session = db.sessionmaker()
        try:
            request_session.get(User, "alice")  # the request read the user
            if db.engine.dialect.name == "postgresql":
                # (SQLite has one writer: a request that wrote first would wait on itself.)
                request_session.add(_user(f"written-by-the-refused-request-{len(ids)}", now))
                request_session.flush()
            approval = request_approval(
                request_session, store, user_id="alice", agent_id="agent-1", platform="crm",
                intent=INTENT, intent_hash="c" * 64, mandate=None, now=now)
            ids.append(approval.id)
        finally:
            request_session.rollback()
            request_session.close()
    assert ids[0] == ids[1]
    with db.session() as s:
        pending = list(s.scalars(select(Approval)))
    assert [(a.id, a.status, a.user_id) for a in pending] == [(ids[0], PENDING, "alice")]
    assert _users(db) == {"alice"}  # request_approval committed nothing of the request
