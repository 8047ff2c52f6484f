"""RFC 7662 introspection over HTTP (INT-01..05).

Client-authenticated; anything not live and visible to the caller is `{"active": false}` and
nothing else: unknown, expired, revoked, or issued to another client.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from authserver.models import Client
from tests.conftest import TestClock
from tests.http_helpers import (  # noqa: F401
    ISSUER,
    RESOURCE,
    app,
    app_config,
    assert_token_error,
    basic_auth,
    client,
    code_flow,
    confidential_client,
    introspect,
    public_client,
    redis_url,
    register_client,
    revoke,
    signed_in,
    token_request,
    user_id,
)

INACTIVE = {"active": False}


@pytest.fixture
def rp(client: FlaskClient) -> dict[str, Any]:
    return confidential_client(client)


def cc_token(client: FlaskClient, registered: dict[str, Any], **form: Any) -> str:
    response = token_request(client, registered, grant_type="client_credentials", scope="read",
                             **form)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]  # type: ignore[no-any-return]


def test_active_access_token_introspects_with_its_claims(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    response = client.post("/introspect", data={"token": token},
                           headers=basic_auth(rp["client_id"], rp["client_secret"]))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["active"] is True
    assert body["client_id"] == rp["client_id"] and body["sub"] == rp["client_id"]
    assert body["scope"] == "read"
    assert body["iss"] == ISSUER and body["aud"] == ISSUER
    assert body["token_type"] == "Bearer"
    assert body["exp"] > body["iat"] and body["jti"]


def test_user_access_and_refresh_tokens_introspect_active(client: FlaskClient, rp: dict,
                                                          signed_in: str) -> None:
    tokens = code_flow(client, rp)
    body = introspect(client, rp, tokens["access_token"])
    assert body["active"] is True and body["sub"] == signed_in
    refresh = introspect(client, rp, tokens["refresh_token"])
    assert refresh["active"] is True
    assert refresh["client_id"] == rp["client_id"] and refresh["sub"] == signed_in
    assert refresh["token_type"] == "refresh_token"


def test_unknown_token_is_inactive(client: FlaskClient, rp: dict) -> None:
    assert introspect(client, rp, "not-a-token") == INACTIVE


def test_token_with_forged_signature_is_inactive(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    assert introspect(client, rp, forged) == INACTIVE


def test_expired_access_token_is_inactive(client: FlaskClient, rp: dict,
                                          clock: TestClock) -> None:
    token = cc_token(client, rp)
    clock.advance(3600)
    assert introspect(client, rp, token) == INACTIVE


def test_revoked_access_token_is_inactive(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    assert revoke(client, rp, token).status_code == 200
    assert introspect(client, rp, token) == INACTIVE


def test_another_clients_access_token_is_inactive(client: FlaskClient, rp: dict) -> None:
    # INT-04/05: a token the caller neither owns nor is an audience of.
    token = cc_token(client, rp)
    other = confidential_client(client)
    assert introspect(client, other, token) == INACTIVE


def test_another_clients_refresh_token_is_inactive(client: FlaskClient, rp: dict,
                                                   signed_in: str) -> None:
    tokens = code_flow(client, rp)
    other = confidential_client(client)
    assert introspect(client, other, tokens["refresh_token"]) == INACTIVE


def test_resource_server_in_the_audience_may_introspect(app: Flask, client: FlaskClient,
                                                        rp: dict) -> None:
    token = cc_token(client, rp, resource=RESOURCE)
    rs = register_client(client, grant_types=["client_credentials"])
    with app.extensions["authserver"].db.session() as session:
        session.execute(update(Client).where(Client.client_id == rs["client_id"])
                        .values(attributes={"resources": [RESOURCE]}))
    body = introspect(client, rs, token)
    assert body["active"] is True and body["aud"] == RESOURCE


def test_resource_server_outside_the_audience_sees_inactive(app: Flask, client: FlaskClient,
                                                            rp: dict) -> None:
    token = cc_token(client, rp)  # aud = the issuer
    rs = register_client(client, grant_types=["client_credentials"])
    with app.extensions["authserver"].db.session() as session:
        session.execute(update(Client).where(Client.client_id == rs["client_id"])
                        .values(attributes={"resources": [RESOURCE]}))
    assert introspect(client, rs, token) == INACTIVE


def test_rotated_refresh_token_is_inactive(client: FlaskClient, rp: dict,
                                           signed_in: str) -> None:
    tokens = code_flow(client, rp)
    token_request(client, rp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert introspect(client, rp, tokens["refresh_token"]) == INACTIVE


def test_tokens_of_a_deactivated_user_are_inactive(app: Flask, client: FlaskClient, rp: dict,
                                                   signed_in: str) -> None:
    from authserver.models import User

    tokens = code_flow(client, rp)
    with app.extensions["authserver"].db.session() as session:
        session.get(User, signed_in).active = False
    assert introspect(client, rp, tokens["access_token"]) == INACTIVE


def test_unauthenticated_introspection_is_invalid_client(client: FlaskClient, rp: dict) -> None:
    # INT-01: no scanning without credentials.
    token = cc_token(client, rp)
    response = client.post("/introspect", data={"token": token})
    assert_token_error(response, 401, "invalid_client")
    assert "active" not in response.get_json()


def test_wrong_secret_at_introspection_is_invalid_client(client: FlaskClient, rp: dict) -> None:
    response = client.post("/introspect", data={"token": "x"},
                           headers=basic_auth(rp["client_id"], "wrong"))
    assert_token_error(response, 401, "invalid_client")


def test_public_client_cannot_introspect(client: FlaskClient, signed_in: str) -> None:
    registered = public_client(client)
    tokens = code_flow(client, registered)
    response = client.post("/introspect", data={"token": tokens["access_token"],
                                                "client_id": registered["client_id"]})
    assert_token_error(response, 401, "invalid_client")


def test_missing_token_parameter_is_invalid_request(client: FlaskClient, rp: dict) -> None:
    response = client.post("/introspect", data={},
                           headers=basic_auth(rp["client_id"], rp["client_secret"]))
    assert_token_error(response, 400, "invalid_request")


def test_an_admin_registered_resource_server_needs_no_config_change(
        app: Flask, client: FlaskClient, rp: dict) -> None:
    """Issue 14: a resource server registered with `--resource` (the admin-only `resources`
    attribute) is a known resource at once, without AUTHSERVER_RESOURCES or a restart, and
    may introspect the tokens issued for it (under any RFC 3986 spelling of its URI)."""
    new = "https://tools.example.net/mcp"
    assert token_request(client, rp, grant_type="client_credentials",
                         resource=new).get_json()["error"] == "invalid_target"
    rs = register_client(client, grant_types=["client_credentials"])
    with app.extensions["authserver"].db.session() as session:
        session.execute(update(Client).where(Client.client_id == rs["client_id"])
                        .values(attributes={"resources": [new]}))
    token = cc_token(client, rp, resource="HTTPS://Tools.Example.NET/mcp/")
    body = introspect(client, rs, token)
    assert body["active"] is True and body["aud"] == new
    assert introspect(client, confidential_client(client), token) == INACTIVE
