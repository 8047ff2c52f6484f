"""A client_credentials (+ DPoP) request runs no SQL statement once its client and the
registered resource servers are cached (authserver.client_cache), on PostgreSQL with Redis;
and a client or resource changed on one instance takes effect on another at once.

Two app instances in this process share one PostgreSQL database and one Redis namespace, as
two hosts would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, update

from authserver.app import create_app
from authserver.models import Client
from tests.conftest import REDIS_URL, delete_prefixed, fresh_postgres_database
from tests.dpop_helpers import ProofKey
from tests.http_helpers import ISSUER, RESOURCE, assert_token_error, basic_auth

NEW = "https://tools.example.net/mcp"
ADMIN_TOKEN = "a" * 32


@pytest.fixture
def config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    prefix = f"test:{uuid.uuid4().hex}:"
    with fresh_postgres_database() as url:
        yield {"data_dir": str(tmp_path / "data"), "testing": True, "issuer": ISSUER,
               "database_url": url, "redis_url": REDIS_URL, "redis_key_prefix": prefix,
               "resources": (RESOURCE,), "admin_token": ADMIN_TOKEN}
    delete_prefixed(REDIS_URL, prefix)


@pytest.fixture
def apps(config: dict[str, Any], clock: Any) -> Iterator[tuple[Flask, Flask]]:
    first = create_app(config, clock=clock)
    second = create_app(config, clock=clock)
    yield first, second
    for application in (first, second):
        application.extensions["authserver"].db.engine.dispose()


@pytest.fixture
def registered(apps: tuple[Flask, Flask]) -> dict[str, Any]:
    response = apps[0].test_client().post("/register", json={
        "grant_types": ["client_credentials"], "scope": "read write"})
    assert response.status_code == 201
    return response.get_json()  # type: ignore[no-any-return]


class Counter:
    """Statements and transaction events on one engine."""

    def __init__(self, app: Flask) -> None:
        self.events: list[str] = []
        engine = app.extensions["authserver"].db.engine
        event.listen(engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_a: self.events.append(statement))
        for name in ("begin", "commit", "rollback"):
            event.listen(engine, name, lambda *_a, name=name: self.events.append(name.upper()))


def cc(client: FlaskClient, registered: dict[str, Any], key: ProofKey | None = None,
       **form: Any) -> Any:
    headers = basic_auth(registered["client_id"], registered["client_secret"])
    if key is not None:
        headers["DPoP"] = key.proof(f"{ISSUER}/token")
    return client.post("/token", data={"grant_type": "client_credentials", "scope": "read",
                                       **form}, headers=headers)


@pytest.mark.parametrize("form", [{}, {"resource": RESOURCE}], ids=["no-resource", "resource"])
def test_a_warm_client_credentials_request_runs_no_sql(
        apps: tuple[Flask, Flask], registered: dict[str, Any], form: dict[str, str]) -> None:
    client, key = apps[0].test_client(), ProofKey()
    assert cc(client, registered, key, **form).status_code == 200  # warms the caches
    counter = Counter(apps[0])
    for _ in range(3):
        response = cc(client, registered, key, **form)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["token_type"] == "DPoP"
    assert counter.events == []  # no statement, so no BEGIN, COMMIT or ROLLBACK either


def test_a_client_deleted_on_one_instance_stops_on_the_other_at_once(
        apps: tuple[Flask, Flask], registered: dict[str, Any]) -> None:
    first = apps[0].test_client()
    assert cc(first, registered).status_code == 200
    with apps[1].extensions["authserver"].db.session() as session:
        session.delete(session.get(Client, registered["client_id"]))
    assert_token_error(cc(first, registered), 401, "invalid_client")


def test_a_client_changed_on_one_instance_takes_effect_on_the_other_at_once(
        apps: tuple[Flask, Flask], registered: dict[str, Any]) -> None:
    first = apps[0].test_client()
    assert cc(first, registered, scope="write").status_code == 200
    with apps[1].extensions["authserver"].db.session() as session:
        session.execute(update(Client).where(Client.client_id == registered["client_id"])
                        .values(client_metadata={"grant_types": ["client_credentials"],
                                                 "scope": "read"}))
    assert_token_error(cc(first, registered, scope="write"), 400, "invalid_scope")
    assert cc(first, registered, scope="read").status_code == 200


def test_a_resource_added_or_removed_on_one_instance_holds_on_the_other_at_once(
        apps: tuple[Flask, Flask], registered: dict[str, Any]) -> None:
    first, second = apps[0].test_client(), apps[1].test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert_token_error(cc(first, registered, resource=NEW), 400, "invalid_target")
    assert second.post("/admin/resources", json={"uri": NEW, "name": "Tools"},
                       headers=admin).status_code == 201
    assert cc(first, registered, ProofKey(), resource=NEW).status_code == 200
    assert second.delete("/admin/resources", query_string={"uri": NEW},
                         headers=admin).status_code == 200
    assert_token_error(cc(first, registered, resource=NEW), 400, "invalid_target")
