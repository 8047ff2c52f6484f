"""Malformed input gets the documented 4xx, never a 500 (issue 13, items 3, 4, 5 and 7):
malformed HTTP Basic credentials, control characters in `client_id`, a missing `grant_type`,
and request bodies over the limit whatever their framing (Content-Length or chunked).

Every test runs on SQLite and PostgreSQL (psycopg refuses a NUL byte in text parameters).
"""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.http_helpers import (  # noqa: F401
    app,
    app_config,
    assert_refusal,
    basic_auth,
    client,
    confidential_client,
    redis_url,
)

CLIENT_AUTH_ENDPOINTS = [
    ("/token", {"grant_type": "client_credentials"}),
    ("/introspect", {"token": "x"}),
    ("/revoke", {"token": "x"}),
]
ENDPOINT_IDS = [path for path, _ in CLIENT_AUTH_ENDPOINTS]


def assert_invalid_client(response: Any) -> None:
    assert_refusal(response, 401, "invalid_client", "Client authentication failed")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


# --- item 3: malformed HTTP Basic -------------------------------------------------------------


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
def test_basic_credentials_not_utf8_after_decoding(client: FlaskClient, path: str,
                                                   form: dict[str, str]) -> None:
    # "/w==" is the single byte 0xFF.
    assert_invalid_client(client.post(path, data=form, headers={"Authorization": "Basic /w=="}))


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
def test_basic_credentials_invalid_utf8_with_a_colon(client: FlaskClient, path: str,
                                                     form: dict[str, str]) -> None:
    assert_invalid_client(client.post(path, data=form, headers=_basic(b"\xc3(:secret")))


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
def test_basic_header_with_non_ascii_bytes(client: FlaskClient, path: str,
                                           form: dict[str, str]) -> None:
    # WSGI hands header bytes over as latin-1 code points.
    assert_invalid_client(client.post(path, data=form,
                                      headers={"Authorization": "Basic \xe9\xe9\xe9\xe9"}))


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
def test_basic_credentials_not_base64(client: FlaskClient, path: str,
                                      form: dict[str, str]) -> None:
    assert_invalid_client(client.post(path, data=form, headers={"Authorization": "Basic a*b?"}))


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
def test_basic_credentials_without_a_colon(client: FlaskClient, path: str,
                                           form: dict[str, str]) -> None:
    assert_invalid_client(client.post(path, data=form, headers=_basic(b"just-a-client-id")))


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("username", ["a\x00b", "a%00b", "a%0Ab", "a\x7fb"],
                         ids=["nul", "encoded-nul", "encoded-newline", "del"])
def test_basic_username_with_a_control_character(client: FlaskClient, path: str,
                                                 form: dict[str, str], username: str) -> None:
    assert_invalid_client(client.post(path, data=form,
                                      headers=_basic(username.encode() + b":secret")))


def test_well_formed_basic_credentials_still_work(client: FlaskClient) -> None:
    registered = confidential_client(client)
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers=basic_auth(registered["client_id"],
                                              registered["client_secret"]))
    assert response.status_code == 200, response.get_json()


# --- item 4: control characters in client_id --------------------------------------------------


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("client_id", ["a\x00b", "a\nb", "a\x1bb", "a\x7fb"],
                         ids=["nul", "newline", "escape", "del"])
def test_control_character_in_form_client_id(client: FlaskClient, path: str,
                                             form: dict[str, str], client_id: str) -> None:
    response = client.post(path, data={**form, "client_id": client_id, "client_secret": "s"})
    # A NUL is refused first, in any parameter (the next test).
    assert_refusal(response, 400, "invalid_request",
                   "A parameter contains a NUL character" if "\x00" in client_id
                   else "client_id contains a control character")


@pytest.mark.parametrize("client_id", ["a\x00b", "a\nb", "a\x7fb"], ids=["nul", "newline", "del"])
def test_control_character_in_query_client_id(client: FlaskClient, client_id: str) -> None:
    response = client.get("/authorize", query_string={"client_id": client_id,
                                                      "response_type": "code"})
    assert response.status_code == 400
    assert "invalid_request" in response.get_data(as_text=True)


def test_nul_in_any_form_parameter(client: FlaskClient) -> None:
    registered = confidential_client(client)
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           "scope": "a\x00b"},
                           headers=basic_auth(registered["client_id"],
                                              registered["client_secret"]))
    assert_refusal(response, 400, "invalid_request", "A parameter contains a NUL character")


def test_nul_in_a_sign_in_form_is_refused(client: FlaskClient) -> None:
    response = client.post("/login", data={"username": "alice\x00", "password": "pw"})
    assert response.status_code == 400
    assert "invalid_request" in response.get_data(as_text=True)


def test_engine_hides_sql_parameters(app: Flask) -> None:
    # Driver errors then never carry parameter values (client ids, hashes) into logs.
    assert app.extensions["authserver"].db.engine.hide_parameters is True


# --- item 5: a missing grant_type -------------------------------------------------------------


def test_missing_grant_type_is_invalid_request(client: FlaskClient) -> None:
    registered = confidential_client(client)
    response = client.post("/token", data={"scope": "openid"},
                           headers=basic_auth(registered["client_id"],
                                              registered["client_secret"]))
    assert_refusal(response, 400, "invalid_request", "Missing grant_type")


def test_empty_grant_type_is_invalid_request(client: FlaskClient) -> None:
    response = client.post("/token", data={"grant_type": ""})
    assert_refusal(response, 400, "invalid_request", "Missing grant_type")


def test_unknown_grant_type_is_still_unsupported(client: FlaskClient) -> None:
    registered = confidential_client(client)
    response = client.post("/token", data={"grant_type": "urn:example:nope"},
                           headers=basic_auth(registered["client_id"],
                                              registered["client_secret"]))
    assert_refusal(response, 400, "unsupported_grant_type", None)


# --- item 7: the body limit holds on the stream, not on Content-Length -------------------------


class _CountingInput(io.BytesIO):
    """A request body as a WSGI server hands over a chunked one: no Content-Length."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.consumed += n
        return n

    def readline(self, size: int | None = -1) -> bytes:
        data = super().readline(size)
        self.consumed += len(data)
        return data


def _chunked_post(app: Flask, path: str, body: bytes) -> tuple[str, bytes, _CountingInput]:
    stream = _CountingInput(body)
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.input": stream, "wsgi.input_terminated": True,  # what gunicorn sets
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_TRANSFER_ENCODING": "chunked",
    }
    status: list[str] = []

    def start_response(s: str, _headers: Any, _exc: Any = None) -> Any:
        status.append(s)

    body_out = b"".join(app(environ, start_response))
    return status[0], body_out, stream


def test_chunked_body_over_the_limit_is_413(app: Flask) -> None:
    from authserver.app import MAX_BODY_BYTES

    body = b"grant_type=client_credentials&pad=" + b"a" * (10 * 1024 * 1024)
    status, out, stream = _chunked_post(app, "/token", body)
    assert status.startswith("413"), (status, out)
    assert b'"error"' in out
    assert stream.consumed <= MAX_BODY_BYTES + 64 * 1024  # never read the 10 MB


def test_chunked_body_just_over_the_limit_is_413(app: Flask) -> None:
    from authserver.app import MAX_BODY_BYTES

    body = b"grant_type=client_credentials&pad="
    body += b"a" * (MAX_BODY_BYTES + 1 - len(body))
    status, _out, _stream = _chunked_post(app, "/token", body)
    assert status.startswith("413")


def test_chunked_body_under_the_limit_is_parsed(app: Flask, client: FlaskClient) -> None:
    registered = confidential_client(client)
    body = (f"grant_type=client_credentials&client_id={registered['client_id']}"
            f"&client_secret={registered['client_secret']}").encode()
    # client_secret_post is not this client's method: the form was read (not 413, not empty).
    status, out, _stream = _chunked_post(app, "/token", body)
    assert status.startswith("401"), (status, out)
    assert b"invalid_client" in out


def test_content_length_over_the_limit_is_413(client: FlaskClient) -> None:
    from authserver.app import MAX_BODY_BYTES

    response = client.post("/token", data=b"a" * (MAX_BODY_BYTES + 1),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert "error" in response.get_json()
