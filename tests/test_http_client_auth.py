"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2/§3, rfc7523bis).

Every failure is 401 `invalid_client` with a `WWW-Authenticate` challenge (GEN-02) and the same
description, whatever the reason (no oracle for which client ids exist).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import OctKey
from sqlalchemy import update

from authserver.models import Client
from authserver.testing.server import ServerThread
from tests.http_helpers import (  # noqa: F401
    ISSUER,
    STORES,
    app,
    app_config,
    assert_token_error,
    assertion_form,
    basic_auth,
    client,
    client_assertion,
    ec_key,
    public_client,
    public_jwks,
    redis_url,
    register_client,
)

CC = {"grant_type": "client_credentials", "scope": "read"}


def assert_invalid_client(response: Any) -> None:
    body = assert_token_error(response, 401, "invalid_client")
    # Client-safe text only: no exception names, URLs or stack traces.
    description = body.get("error_description", "")
    assert "Error" not in description and "http" not in description
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.fixture
def basic_client(client: FlaskClient) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"],
                           token_endpoint_auth_method="client_secret_basic")


@pytest.fixture
def post_client(client: FlaskClient) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"],
                           token_endpoint_auth_method="client_secret_post")


# --- client_secret_basic ----------------------------------------------------------------------


def test_client_secret_basic_authenticates(client: FlaskClient, basic_client: dict) -> None:
    response = client.post("/token", data=CC, headers=basic_auth(
        basic_client["client_id"], basic_client["client_secret"]))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"


def test_wrong_secret_is_invalid_client(client: FlaskClient, basic_client: dict) -> None:
    response = client.post("/token", data=CC, headers=basic_auth(
        basic_client["client_id"], basic_client["client_secret"] + "x"))
    assert_invalid_client(response)


def test_unknown_client_id_is_invalid_client(client: FlaskClient) -> None:
    response = client.post("/token", data=CC, headers=basic_auth("cli_nobody", "secret"))
    assert_invalid_client(response)


def test_unknown_and_wrong_secret_look_the_same(client: FlaskClient, basic_client: dict) -> None:
    unknown = client.post("/token", data=CC, headers=basic_auth("cli_nobody", "secret"))
    wrong = client.post("/token", data=CC,
                        headers=basic_auth(basic_client["client_id"], "secret"))
    assert unknown.get_json() == wrong.get_json()
    assert unknown.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]


def test_no_credentials_is_invalid_client(client: FlaskClient) -> None:
    assert_invalid_client(client.post("/token", data=CC))


def test_basic_client_using_client_secret_post_is_invalid_client(
        client: FlaskClient, basic_client: dict) -> None:
    # The registered method is the only accepted one.
    response = client.post("/token", data={**CC, "client_id": basic_client["client_id"],
                                           "client_secret": basic_client["client_secret"]})
    assert_invalid_client(response)


def test_confidential_client_sending_only_its_id_is_invalid_client(
        client: FlaskClient, basic_client: dict) -> None:
    response = client.post("/token", data={**CC, "client_id": basic_client["client_id"]})
    assert_invalid_client(response)


# --- client_secret_post -------------------------------------------------------------------------


def test_client_secret_post_authenticates(client: FlaskClient, post_client: dict) -> None:
    response = client.post("/token", data={**CC, "client_id": post_client["client_id"],
                                           "client_secret": post_client["client_secret"]})
    assert response.status_code == 200, response.get_json()


def test_client_secret_post_wrong_secret_is_invalid_client(client: FlaskClient,
                                                           post_client: dict) -> None:
    response = client.post("/token", data={**CC, "client_id": post_client["client_id"],
                                           "client_secret": "wrong"})
    assert_invalid_client(response)


def test_post_client_using_basic_is_invalid_client(client: FlaskClient,
                                                   post_client: dict) -> None:
    response = client.post("/token", data=CC, headers=basic_auth(
        post_client["client_id"], post_client["client_secret"]))
    assert_invalid_client(response)


# --- none (public clients) ----------------------------------------------------------------------


def test_public_client_cannot_use_client_credentials(client: FlaskClient) -> None:
    registered = public_client(client)
    response = client.post("/token", data={**CC, "client_id": registered["client_id"]})
    assert_invalid_client(response)


def test_public_client_presenting_a_secret_is_invalid_client(client: FlaskClient) -> None:
    registered = public_client(client)
    response = client.post("/token", data={
        "grant_type": "refresh_token", "refresh_token": "x",
        "client_id": registered["client_id"], "client_secret": "made-up"})
    assert_invalid_client(response)


# --- private_key_jwt with jwks --------------------------------------------------------------------


@pytest.fixture
def key() -> Any:
    return ec_key()


@pytest.fixture
def jwt_client(client: FlaskClient, key: Any) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"],
                           token_endpoint_auth_method="private_key_jwt",
                           jwks=public_jwks(key))


def jwt_token_request(client: FlaskClient, assertion: str) -> Any:
    return client.post("/token", data={**CC, **assertion_form(assertion)})


def test_private_key_jwt_with_jwks_authenticates(client: FlaskClient, jwt_client: dict,
                                                 key: Any) -> None:
    response = jwt_token_request(client, client_assertion(key, jwt_client["client_id"]))
    assert response.status_code == 200, response.get_json()


def test_private_key_jwt_aud_as_one_element_array_is_accepted(client: FlaskClient,
                                                              jwt_client: dict,
                                                              key: Any) -> None:
    response = jwt_token_request(client, client_assertion(key, jwt_client["client_id"],
                                                          aud=[ISSUER]))
    assert response.status_code == 200, response.get_json()


@STORES
def test_replayed_client_assertion_jti_is_invalid_client(client: FlaskClient, jwt_client: dict,
                                                         key: Any) -> None:
    # JWTB-05: the (client, jti) replay cache lives in the shared store.
    assertion = client_assertion(key, jwt_client["client_id"])
    assert jwt_token_request(client, assertion).status_code == 200
    assert_invalid_client(jwt_token_request(client, assertion))


@STORES
def test_reused_jti_in_a_fresh_assertion_is_invalid_client(client: FlaskClient,
                                                           jwt_client: dict, key: Any) -> None:
    first = client_assertion(key, jwt_client["client_id"], jti="same-jti")
    assert jwt_token_request(client, first).status_code == 200
    second = client_assertion(key, jwt_client["client_id"], jti="same-jti",
                              iat=int(time.time()) + 1)
    assert_invalid_client(jwt_token_request(client, second))


def test_client_assertion_with_wrong_aud_is_invalid_client(client: FlaskClient,
                                                           jwt_client: dict, key: Any) -> None:
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], aud="https://other-as.example.com"))
    assert_invalid_client(response)


def test_client_assertion_with_two_audiences_is_invalid_client(client: FlaskClient,
                                                               jwt_client: dict,
                                                               key: Any) -> None:
    # rfc7523bis: the issuer as a single value, not one of several (audience injection).
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], aud=[ISSUER, "https://other-as.example.com"]))
    assert_invalid_client(response)


def test_token_endpoint_aud_is_invalid_client_for_new_clients(client: FlaskClient,
                                                              jwt_client: dict,
                                                              key: Any) -> None:
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], aud=f"{ISSUER}/token"))
    assert_invalid_client(response)


def test_token_endpoint_aud_is_accepted_for_legacy_clients(app: Flask, client: FlaskClient,
                                                           jwt_client: dict, key: Any) -> None:
    with app.extensions["authserver"].db.session() as session:
        session.execute(update(Client).where(Client.client_id == jwt_client["client_id"])
                        .values(attributes={"legacy_token_endpoint_aud": True}))
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], aud=f"{ISSUER}/token"))
    assert response.status_code == 200, response.get_json()


def test_expired_client_assertion_is_invalid_client(client: FlaskClient, jwt_client: dict,
                                                    key: Any) -> None:
    now = int(time.time())
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], now=now - 600, exp=now - 120))
    assert_invalid_client(response)


def test_client_assertion_without_exp_is_invalid_client(client: FlaskClient, jwt_client: dict,
                                                        key: Any) -> None:
    # joserfc accepts a JWT without exp; RFC 7523 §3 requires it.
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], exp=None))
    assert_invalid_client(response)


def test_long_lived_client_assertion_is_invalid_client(client: FlaskClient, jwt_client: dict,
                                                       key: Any) -> None:
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], exp=int(time.time()) + 3600))
    assert_invalid_client(response)


def test_client_assertion_iat_in_the_future_is_invalid_client(client: FlaskClient,
                                                              jwt_client: dict,
                                                              key: Any) -> None:
    response = jwt_token_request(client, client_assertion(
        key, jwt_client["client_id"], iat=int(time.time()) + 600))
    assert_invalid_client(response)


def test_client_assertion_without_jti_is_invalid_client(client: FlaskClient, jwt_client: dict,
                                                        key: Any) -> None:
    response = jwt_token_request(client, client_assertion(key, jwt_client["client_id"],
                                                          jti=None))
    assert_invalid_client(response)


def test_client_assertion_iss_not_client_id_is_invalid_client(client: FlaskClient,
                                                              jwt_client: dict,
                                                              key: Any) -> None:
    response = jwt_token_request(client, client_assertion(key, jwt_client["client_id"],
                                                          iss="cli_someone_else"))
    assert_invalid_client(response)


def test_hs256_client_assertion_is_invalid_client(client: FlaskClient,
                                                  jwt_client: dict) -> None:
    # A MAC keyed with something public (e.g. the JWK's x) must never pass.
    mac_key = OctKey.import_key(b"0" * 32)
    response = jwt_token_request(client, client_assertion(mac_key, jwt_client["client_id"],
                                                          alg="HS256"))
    assert_invalid_client(response)


def test_assertion_signed_by_another_key_is_invalid_client(client: FlaskClient,
                                                           jwt_client: dict) -> None:
    response = jwt_token_request(client, client_assertion(ec_key(), jwt_client["client_id"]))
    assert_invalid_client(response)


def test_unsigned_client_assertion_is_invalid_client(client: FlaskClient,
                                                     jwt_client: dict) -> None:
    import base64

    def b64(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    cid = jwt_client["client_id"]
    token = b64({"alg": "none"}) + "." + b64({"iss": cid, "sub": cid, "aud": ISSUER,
                                              "exp": now + 60, "jti": "j1"}) + "."
    assert_invalid_client(jwt_token_request(client, token))


def test_malformed_client_assertion_is_invalid_client(client: FlaskClient,
                                                      jwt_client: dict) -> None:
    assert_invalid_client(jwt_token_request(client, "not-a-jwt"))


def test_client_id_disagreeing_with_assertion_sub_is_invalid_client(client: FlaskClient,
                                                                    jwt_client: dict,
                                                                    key: Any) -> None:
    response = client.post("/token", data={
        **CC, **assertion_form(client_assertion(key, jwt_client["client_id"])),
        "client_id": "cli_other"})
    assert_invalid_client(response)


def test_secret_client_presenting_an_assertion_is_invalid_client(client: FlaskClient,
                                                                 key: Any) -> None:
    # A client registered for client_secret_basic cannot switch to private_key_jwt.
    registered = register_client(client, grant_types=["client_credentials"])
    response = jwt_token_request(client, client_assertion(key, registered["client_id"]))
    assert_invalid_client(response)


def test_jwt_client_without_assertion_is_invalid_client(client: FlaskClient,
                                                        jwt_client: dict) -> None:
    response = client.post("/token", data={**CC, "client_id": jwt_client["client_id"]})
    assert_invalid_client(response)


# --- private_key_jwt with jwks_uri ----------------------------------------------------------------


class JwksServer:
    """A client's jwks_uri on a loopback port; its key set can be swapped (rotation)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.hits = 0
        self.thread = ServerThread(self.wsgi)

    def wsgi(self, environ: dict, start_response: Any) -> list[bytes]:
        self.hits += 1
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(self.jwks).encode()]


@pytest.fixture
def jwks_server(key: Any) -> Iterator[JwksServer]:
    server = JwksServer(public_jwks(key))
    server.thread.start()
    yield server
    server.thread.stop()


@pytest.fixture
def uri_client(client: FlaskClient, jwks_server: JwksServer) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"],
                           token_endpoint_auth_method="private_key_jwt",
                           jwks_uri=jwks_server.thread.base_url + "/jwks")


def test_private_key_jwt_with_jwks_uri_authenticates(client: FlaskClient, uri_client: dict,
                                                     key: Any, jwks_server: JwksServer) -> None:
    response = jwt_token_request(client, client_assertion(key, uri_client["client_id"]))
    assert response.status_code == 200, response.get_json()
    assert jwks_server.hits == 1


def test_jwks_uri_key_rotation_is_picked_up(client: FlaskClient, uri_client: dict, key: Any,
                                            jwks_server: JwksServer) -> None:
    assert jwt_token_request(client, client_assertion(key, uri_client["client_id"])
                             ).status_code == 200
    new_key = ec_key()
    jwks_server.jwks = public_jwks(new_key)
    response = jwt_token_request(client, client_assertion(new_key, uri_client["client_id"]))
    assert response.status_code == 200, response.get_json()


def test_jwks_uri_assertion_signed_by_unknown_key_is_invalid_client(
        client: FlaskClient, uri_client: dict) -> None:
    response = jwt_token_request(client, client_assertion(ec_key(), uri_client["client_id"]))
    assert_invalid_client(response)


@STORES
def test_jwks_uri_replayed_jti_is_invalid_client(client: FlaskClient, uri_client: dict,
                                                 key: Any) -> None:
    assertion = client_assertion(key, uri_client["client_id"])
    assert jwt_token_request(client, assertion).status_code == 200
    assert_invalid_client(jwt_token_request(client, assertion))


def test_unreachable_jwks_uri_is_invalid_client(client: FlaskClient, key: Any) -> None:
    from authserver.testing.server import free_port

    registered = register_client(
        client, grant_types=["client_credentials"], token_endpoint_auth_method="private_key_jwt",
        jwks_uri=f"http://127.0.0.1:{free_port()}/jwks")
    assert_invalid_client(jwt_token_request(client, client_assertion(key,
                                                                     registered["client_id"])))
