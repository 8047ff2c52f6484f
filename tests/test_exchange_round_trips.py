"""The agent exchange's statements (issue 18 "Speed"), counted with an engine listener on
SQLite and PostgreSQL: the user assertion's liveness (its jti, its user, the withdrawals of its
agents) is one statement that loads the user once, the caller's client and the assertion's
agent come from the registry cache (authserver.client_cache) while its generation holds, and
on PostgreSQL the audit record and its shard's head move are one statement. Whether the
checks still refuse (revoked, inactive user, withdrawn agent) is tests/test_grant_token_exchange;
here, that a client deleted while cached still stops the exchange at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from authserver.clients import OAuthClient
from authserver.errors import InvalidRequestError
from authserver.grants.token_exchange import TokenExchangeGrant
from authserver.models import Client
from authserver.services import Services
from authserver.store.memory import MemoryStore
from tests.grant_helpers import (  # noqa: F401 (fixtures)
    ISSUER,
    NOW,
    PLATFORMS,
    built_services,
    database_url,
    db,
    new_user,
    postgres_template,
    proof,
    refusal,
    sqlite_template,
    token_request,
)
from tests.test_grant_token_exchange import Agent, capability_form, connect, user_assertion

GRANT = TokenExchangeGrant()


class SharedStore(MemoryStore):
    """The embedded store standing in for Redis, so the registry cache holds snapshots (with
    the one-process store it caches nothing: authserver.client_cache)."""

    single_process = False


@pytest.fixture
def services(tmp_path: Any, database_url: str) -> Iterator[Services]:
    with built_services(tmp_path, database_url, platforms=PLATFORMS) as built:
        built.store = SharedStore()
        yield built


@pytest.fixture
def statements(services: Services) -> list[str]:
    seen: list[str] = []
    event.listen(services.db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(" ".join(statement.split())))
    return seen


def cached_client(services: Services, db: Session, client_id: str) -> OAuthClient:
    """The client as client authentication hands it over: from the registry cache."""
    record = services.registry.client(db, client_id, now=NOW)
    assert record is not None
    return OAuthClient(record)


def exchange(services: Services, db: Session, client_id: str, subject: str,
             key: Any) -> dict[str, Any]:
    form = {k: json.dumps(v) if isinstance(v, list | dict) else v
            for k, v in capability_form(subject).items()}
    request = token_request(db, form, dpop=proof(key))
    client = cached_client(services, db, client_id)  # before counting: the pipeline's step
    result = GRANT.issue(services, request, client)
    db.commit()
    return dict(result.body)


def count(statements: list[str], prefix: str) -> int:
    return sum(1 for s in statements if s.startswith(prefix))


#: How tokens.check_token_live's one statement starts: the jti, the withdrawals, the user.
LIVENESS = "SELECT EXISTS (SELECT * FROM revoked_tokens"


def users_loaded(statements: list[str]) -> int:
    """Statements that read the users table (the liveness statement outer-joins it)."""
    return sum(1 for s in statements if "FROM users" in s or "JOIN users" in s)


def test_one_exchange_loads_the_user_once_and_no_client(
        services: Services, db: Session, statements: list[str]) -> None:
    agent, user = Agent(services), new_user(services, roles=[], groups=[])
    connect(services, user)
    subject = user_assertion(services, user, agent, scope="read")
    exchange(services, db, agent.client_id, subject, agent.dpop)  # warms the caches
    statements.clear()
    body = exchange(services, db, agent.client_id, subject, agent.dpop)
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert users_loaded(statements) == 1, statements
    assert count(statements, LIVENESS) == 1, statements
    assert not [s for s in statements if "FROM agent_revocations" in s
                and not s.startswith(LIVENESS)], statements
    assert [s for s in statements if "FROM clients" in s] == []
    if services.db.engine.dialect.name == "postgresql":
        # The assertion's liveness (jti, withdrawn agents, user) in one, the connection; the
        # shard's lock; the record with its head move.
        assert [s.split(" ", 2)[:2] for s in statements] == [
            ["SELECT", "EXISTS"], ["SELECT", "connections.id,"],
            ["UPDATE", "audit_chain_head"], ["WITH", "audit_record"]], statements
        assert statements[0].startswith(LIVENESS), statements
        assert "LEFT OUTER JOIN users" in statements[0], statements
        assert count(statements, "INSERT INTO audit_events") == 0


def test_the_assertions_agent_comes_from_the_cache_and_its_deletion_stops_it(
        services: Services, db: Session, statements: list[str]) -> None:
    # A designated agent (TX-13 may_act) presents the assertion minted for another: that
    # agent's existence is asked of the registry cache, which a deletion renews at once.
    agent, user = Agent(services), new_user(services, roles=[], groups=[])
    other = Agent(services)
    connect(services, user)
    subject = user_assertion(services, user, agent, scope="read", jkt=other.dpop.jkt,
                             extra={"may_act": {"sub": other.client_id, "iss": ISSUER}})
    exchange(services, db, other.client_id, subject, other.dpop)  # caches both
    statements.clear()
    exchange(services, db, other.client_id, subject, other.dpop)
    assert [s for s in statements if "FROM clients" in s] == []
    assert users_loaded(statements) == 1, statements
    assert count(statements, LIVENESS) == 1, statements

    with services.db.session() as session:  # a watched session: the generation moves
        session.delete(session.get(Client, agent.client_id))
    error = refusal(lambda: exchange(services, db, other.client_id, subject, other.dpop))
    assert isinstance(error, InvalidRequestError)
    assert error.reason == "subject_token_client_deleted"
