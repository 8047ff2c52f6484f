"""Plain regression tests for what tests/test_http_fuzz.py found (issue 13): each reproduces
one failing example as the fuzzer reported it, so the fix stays even if the fuzzer's examples
change."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authserver.app import MAX_BODY_BYTES
from tests.http_helpers import (  # noqa: F401
    app,
    app_config,
    basic_auth,
    client,
    confidential_client,
    redis_url,
)


def test_body_over_the_limit_at_the_token_endpoint_is_not_cacheable(
        client: FlaskClient) -> None:
    # Found by the fuzzer: a routing-level error (413 here) on an API route came without
    # Cache-Control: no-store, unlike every other error the token endpoint sends.
    response = client.post("/token", data=b"grant_type=" + b"a" * MAX_BODY_BYTES,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_api_path_is_not_cacheable(client: FlaskClient) -> None:
    response = client.get("/gateway")
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("authorization", [" ", "Bearer ", " DPoP"],
                         ids=["space", "bearer-space", "leading-space"])
def test_authorization_header_with_a_space_but_no_credentials_is_invalid_client(
        client: FlaskClient, path: str, authorization: str) -> None:
    # Found by the fuzzer (the long profile): Authlib splits any Authorization header that
    # holds a space into a scheme and credentials, and raised (500) when there were not two.
    form = {"grant_type": "authorization_code"} if path == "/token" else {"token": "x"}
    response = client.post(path, data=form, headers={"Authorization": authorization})
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def _jws_with_crit_null() -> str:
    import base64
    import json

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'typ': 'at+jwt', 'alg': 'ES256', 'crit': None})}.{part({})}.c2ln"


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_token_with_a_crit_header_that_is_not_a_list(client: FlaskClient, path: str) -> None:
    # Found by the fuzzer (the long profile, PostgreSQL): joserfc raised TypeError on
    # `"crit": null` and our key ring let it through (500); it is a token we did not sign.
    registered = confidential_client(client)
    response = client.post(path, data={"token": _jws_with_crit_null()},
                           headers=basic_auth(registered["client_id"],
                                              registered["client_secret"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    if path == "/introspect":
        assert response.get_json() == {"active": False}


def test_keyring_refuses_a_crit_header_that_is_not_a_list(app: Flask) -> None:
    from authserver.keys import InvalidSignatureError

    with pytest.raises(InvalidSignatureError):
        app.extensions["authserver"].keyring.verify(_jws_with_crit_null(), typ="at+jwt",
                                                    now=int(time.time()))
