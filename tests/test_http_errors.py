"""The one error handler (RFC 6749 §5.2 shape): anything unexpected is a generic
`server_error` with no internals; routing errors are plain JSON."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.http_helpers import app_config, redis_url  # noqa: F401

SECRET_DETAIL = "db password hunter2 at /srv/authserver/secret.key"


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    from tests.conftest import running_app

    with running_app(app_config) as application:
        # Routes must exist before the first request: add the failing ones right after the
        # factory.
        @application.get("/boom")
        def boom() -> Any:
            raise RuntimeError(SECRET_DETAIL)

        @application.post("/boom-key")
        def boom_key() -> Any:
            return {}[SECRET_DETAIL]

        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_unexpected_exception_is_server_error_without_internals(client: FlaskClient) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "server_error"}
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "RuntimeError" not in text and "Traceback" not in text


def test_unexpected_key_error_on_post_is_server_error(client: FlaskClient) -> None:
    response = client.post("/boom-key", data={"x": "1"})
    assert response.status_code == 500
    assert response.get_json() == {"error": "server_error"}
    assert "hunter2" not in response.get_data(as_text=True)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_unexpected_exception_is_logged_with_its_detail(client: FlaskClient) -> None:
    # Operators get the exception (with the correlation id), the client does not.
    handler = _Records()
    logger = logging.getLogger("authserver.errors")
    logger.addHandler(handler)
    try:
        client.get("/boom")
    finally:
        logger.removeHandler(handler)
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in handler.records)


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/no-such-endpoint")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found"}


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.get("/revoke")
    assert response.status_code == 405
    assert response.get_json() == {"error": "method_not_allowed"}
    assert "POST" in response.headers["Allow"]


def test_oversized_body_is_rejected_before_parsing(client: FlaskClient) -> None:
    response = client.post("/register", data=b"x" * (300 * 1024),
                           content_type="application/json")
    assert response.status_code == 413
    assert "error" in response.get_json()
