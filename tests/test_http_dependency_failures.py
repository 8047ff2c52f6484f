"""A failing dependency (database, store, KMS) is `503 temporarily_unavailable` with
`Retry-After` on every route, never a 500 and never a traceback per request (issue 13, item 1).

The database "goes down" by pointing the app's per-request sessions at a dead engine (a closed
port for PostgreSQL, an unopenable file for SQLite): the shared services are never stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import sessionmaker

from authserver.errors import RETRY_AFTER_SECONDS, TemporarilyUnavailableError
from tests.http_helpers import (  # noqa: F401
    app,
    app_config,
    auth_for,
    basic_auth,
    client,
    confidential_client,
    form_with,
    redis_url,
)


def _dead_url(database_url: str, tmp_path: Any) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/no-such-dir/x/db.sqlite"
    # Port 1 on loopback: nothing listens there, so connecting is refused at once.
    return "postgresql+psycopg://postgres:pw-hunter2@127.0.0.1:1/down?connect_timeout=2"


def take_database_down(app: Flask, database_url: str, tmp_path: Any) -> None:
    db = app.extensions["authserver"].db
    db.engine.dispose()
    db.engine = sa.create_engine(_dead_url(database_url, tmp_path), hide_parameters=True)
    db.sessionmaker = sessionmaker(db.engine, expire_on_commit=False)
    app.extensions["authserver"].keyring._active = None  # no cached signing key either


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


#: User routes answer with an HTML page (same status and headers), API routes with JSON.
PAGE_ROUTES = ("/authorize", "/login")


def assert_unavailable(response: Any, *, page: bool = False) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    if page:
        assert response.mimetype == "text/html"
        assert "temporarily_unavailable" in response.get_data(as_text=True)
    else:
        assert response.mimetype == "application/json"
        assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "OperationalError" not in text


ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/token", {"data": {"grant_type": "client_credentials"}, "basic": True}),
    ("POST", "/token", {"data": {"grant_type": "client_credentials", "client_id": "c1",
                                 "client_secret": "s"}}),
    ("POST", "/introspect", {"data": {"token": "x"}, "basic": True}),
    ("POST", "/revoke", {"data": {"token": "x", "client_id": "c1"}}),
    ("POST", "/register", {"json": {"redirect_uris": ["https://client.example.com/cb"]}}),
    ("GET", "/jwks.json", {}),
    ("GET", "/authorize", {"query": {"client_id": "c1", "response_type": "code"}}),
    ("POST", "/login", {"data": {"username": "alice", "password": "pw"}}),
]


@pytest.mark.parametrize(("method", "path", "request_args"), ROUTES,
                         ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(ROUTES)])
def test_database_down_is_503_with_retry_after(
    app: Flask, client: FlaskClient, database_url: str, tmp_path: Any,
    method: str, path: str, request_args: dict[str, Any],
) -> None:
    registered = confidential_client(client)
    if path == "/login":  # a real sign-in form (its CSRF token) fetched while the DB is up
        form = form_with(client.get("/login").get_data(as_text=True), "username", "/login")
        request_args = {"data": {**request_args["data"],
                                 "csrf_token": form["fields"]["csrf_token"]}}
    take_database_down(app, database_url, tmp_path)
    kwargs: dict[str, Any] = {}
    if request_args.get("basic"):
        kwargs["headers"] = basic_auth(registered["client_id"], registered["client_secret"])
    if "data" in request_args:
        kwargs["data"] = request_args["data"]
    if "json" in request_args:
        kwargs["json"] = request_args["json"]
    if "query" in request_args:
        kwargs["query_string"] = request_args["query"]
    handler = _Records()
    logging.getLogger().addHandler(handler)
    try:
        response = client.open(path, method=method, **kwargs)
    finally:
        logging.getLogger().removeHandler(handler)
    assert_unavailable(response, page=path in PAGE_ROUTES)
    # One line per request, no traceback at ERROR, nothing that could carry SQL parameters.
    assert not [r for r in handler.records if r.levelno >= logging.ERROR]
    assert not [r for r in handler.records if r.exc_info]
    for record in handler.records:
        assert "hunter2" not in record.getMessage()


def test_database_down_at_readyz_is_503_with_retry_after(
    app: Flask, client: FlaskClient, database_url: str, tmp_path: Any,
) -> None:
    take_database_down(app, database_url, tmp_path)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "fail"
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_commit_failure_is_503_with_retry_after(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A handler that writes commits its unit of work explicitly (authserver.http.unit_of_work).
    @app.get("/admin/commit-probe")  # an API path: JSON errors
    def commit_probe() -> Any:
        from flask import g

        from authserver.http.unit_of_work import commit

        g.db.execute(sa.select(1))  # work begun: commit() has a transaction to commit
        commit()
        return {}

    def fail_commit(self: Any) -> None:
        raise sa.exc.OperationalError("COMMIT", {"secret": "hunter2"}, Exception("gone"))

    monkeypatch.setattr(sa.orm.Session, "commit", fail_commit)
    handler = _Records()
    logging.getLogger().addHandler(handler)
    try:
        response = client.get("/admin/commit-probe")
    finally:
        logging.getLogger().removeHandler(handler)
    assert_unavailable(response)
    assert not [r for r in handler.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not [r for r in handler.records if "hunter2" in r.getMessage()]


def test_kms_failure_is_503_with_retry_after(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from authserver.kms import KMSUnavailableError

    registered = confidential_client(client)
    services = app.extensions["authserver"]
    services.keyring._active = None

    def unavailable(*_args: Any) -> bytes:
        raise KMSUnavailableError(debug="kms down")

    monkeypatch.setattr(services.kms, "unwrap", unavailable)
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers=auth_for(registered)[0])
    assert_unavailable(response)


def test_store_failure_is_503_with_retry_after(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from authserver.store import StoreUnavailableError

    @app.get("/admin/store-down")  # an API path (JSON errors); store failures are typed
    def store_down() -> Any:
        raise StoreUnavailableError(debug="redis: ConnectionError")

    assert_unavailable(client.get("/admin/store-down"))


def test_every_temporarily_unavailable_error_carries_retry_after() -> None:
    from authserver.broker.oauth_client import PlatformUnavailable
    from authserver.db import DatabaseUnavailableError
    from authserver.kms import KMSUnavailableError
    from authserver.store import LockTimeoutError, StoreUnavailableError

    for error in (TemporarilyUnavailableError(), DatabaseUnavailableError(),
                  KMSUnavailableError(), StoreUnavailableError(), LockTimeoutError(),
                  PlatformUnavailable(debug="platform: 503", request_sent=True)):
        assert error.headers()["Retry-After"] == str(RETRY_AFTER_SECONDS), error
