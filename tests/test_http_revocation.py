"""RFC 7009 revocation over HTTP (REV-01..05).

REV-04 pinned: a token of another client is answered 200 and NOT revoked (no oracle).
Revoking a refresh token revokes its family and the family's access tokens (REV-05).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_helpers import (  # noqa: F401
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
    revoke,
    signed_in,
    token_request,
    user_id,
)

INACTIVE = {"active": False}


@pytest.fixture
def rp(client: FlaskClient) -> dict[str, Any]:
    return confidential_client(client)


def cc_token(client: FlaskClient, registered: dict[str, Any]) -> str:
    return token_request(client, registered,  # type: ignore[no-any-return]
                         grant_type="client_credentials").get_json()["access_token"]


def assert_revocation_ok(response: Any) -> None:
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_token_is_200(client: FlaskClient, rp: dict) -> None:
    assert_revocation_ok(revoke(client, rp, "never-issued"))


def test_malformed_jwt_is_200(client: FlaskClient, rp: dict) -> None:
    assert_revocation_ok(revoke(client, rp, "a.b.c"))


def test_revoked_access_token_becomes_inactive(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    assert_revocation_ok(revoke(client, rp, token, token_type_hint="access_token"))
    assert introspect(client, rp, token) == INACTIVE


def test_revoking_twice_is_200(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    assert_revocation_ok(revoke(client, rp, token))
    assert_revocation_ok(revoke(client, rp, token))


def test_revoking_a_refresh_token_revokes_its_family(client: FlaskClient, rp: dict,
                                                     signed_in: str) -> None:
    first = code_flow(client, rp)
    second = token_request(client, rp, grant_type="refresh_token",
                           refresh_token=first["refresh_token"]).get_json()
    assert_revocation_ok(revoke(client, rp, second["refresh_token"],
                                token_type_hint="refresh_token"))
    for token in (second["refresh_token"], first["access_token"], second["access_token"]):
        assert introspect(client, rp, token) == INACTIVE
    response = token_request(client, rp, grant_type="refresh_token",
                             refresh_token=second["refresh_token"])
    assert_token_error(response, 400, "invalid_grant")


def test_revoking_an_access_token_leaves_its_refresh_token(client: FlaskClient, rp: dict,
                                                           signed_in: str) -> None:
    tokens = code_flow(client, rp)
    assert_revocation_ok(revoke(client, rp, tokens["access_token"]))
    assert introspect(client, rp, tokens["refresh_token"])["active"] is True


def test_wrong_token_type_hint_is_ignored(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    assert_revocation_ok(revoke(client, rp, token, token_type_hint="refresh_token"))
    assert introspect(client, rp, token) == INACTIVE


def test_unknown_token_type_hint_is_ignored(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    assert_revocation_ok(revoke(client, rp, token, token_type_hint="urn:example:weird"))
    assert introspect(client, rp, token) == INACTIVE


def test_another_clients_access_token_is_200_and_not_revoked(client: FlaskClient,
                                                            rp: dict) -> None:
    # REV-04 pinned: 200 without revoking, so the answer reveals nothing.
    token = cc_token(client, rp)
    other = confidential_client(client)
    assert_revocation_ok(revoke(client, other, token))
    assert introspect(client, rp, token)["active"] is True


def test_another_clients_refresh_token_is_200_and_not_revoked(client: FlaskClient, rp: dict,
                                                             signed_in: str) -> None:
    tokens = code_flow(client, rp)
    other = confidential_client(client)
    assert_revocation_ok(revoke(client, other, tokens["refresh_token"]))
    assert introspect(client, rp, tokens["refresh_token"])["active"] is True
    assert introspect(client, rp, tokens["access_token"])["active"] is True


def test_public_client_revokes_its_refresh_token(client: FlaskClient, signed_in: str) -> None:
    registered = public_client(client)
    tokens = code_flow(client, registered)
    assert_revocation_ok(revoke(client, registered, tokens["refresh_token"]))
    response = token_request(client, registered, grant_type="refresh_token",
                             refresh_token=tokens["refresh_token"])
    assert_token_error(response, 400, "invalid_grant")


def test_unauthenticated_revocation_is_invalid_client(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    response = client.post("/revoke", data={"token": token})
    assert_token_error(response, 401, "invalid_client")
    assert introspect(client, rp, token)["active"] is True


def test_wrong_secret_at_revocation_is_invalid_client(client: FlaskClient, rp: dict) -> None:
    token = cc_token(client, rp)
    response = client.post("/revoke", data={"token": token},
                           headers=basic_auth(rp["client_id"], "wrong"))
    assert_token_error(response, 401, "invalid_client")
    assert introspect(client, rp, token)["active"] is True


def test_missing_token_parameter_is_invalid_request(client: FlaskClient, rp: dict) -> None:
    response = client.post("/revoke", data={},
                           headers=basic_auth(rp["client_id"], rp["client_secret"]))
    assert_token_error(response, 400, "invalid_request")
