"""RFC 6749 §6 refresh with rotation and reuse detection (RFC 9700 §4.14.2, BCP-06).

Every refresh returns a new refresh token and retires the old one; presenting a retired one
revokes the whole family: the newest refresh token and every access token of the grant.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import TestClock
from tests.http_helpers import (  # noqa: F401
    RESOURCE,
    STORES,
    app,
    app_config,
    assert_token_error,
    client,
    code_flow,
    confidential_client,
    decode_access_token,
    introspect,
    public_client,
    redis_url,
    signed_in,
    token_request,
    user_id,
)


@pytest.fixture
def rp(client: FlaskClient) -> dict[str, Any]:
    return confidential_client(client, scope="read write")


def refresh(client: FlaskClient, registered: dict[str, Any], token: str, **form: Any) -> Any:
    return token_request(client, registered, grant_type="refresh_token", refresh_token=token,
                         **form)


def test_refresh_rotates_the_refresh_token(client: FlaskClient, rp: dict,
                                           signed_in: str) -> None:
    first = code_flow(client, rp, scope="read write")
    response = refresh(client, rp, first["refresh_token"])
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    second = response.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == "read write"
    claims = decode_access_token(client, second["access_token"])[1]
    assert claims["sub"] == signed_in
    # The old one is retired, the new one and the first access token are live.
    assert introspect(client, rp, first["refresh_token"]) == {"active": False}
    assert introspect(client, rp, second["refresh_token"])["active"] is True
    assert introspect(client, rp, first["access_token"])["active"] is True


def test_refresh_may_narrow_the_scope(client: FlaskClient, rp: dict, signed_in: str) -> None:
    first = code_flow(client, rp, scope="read write")
    response = refresh(client, rp, first["refresh_token"], scope="read")
    assert response.status_code == 200
    assert response.get_json()["scope"] == "read"


def test_public_client_refreshes_without_a_secret(client: FlaskClient, signed_in: str) -> None:
    registered = public_client(client)
    first = code_flow(client, registered)
    response = refresh(client, registered, first["refresh_token"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["refresh_token"] != first["refresh_token"]


@STORES
def test_reused_refresh_token_is_invalid_grant_and_revokes_the_family(
        client: FlaskClient, rp: dict, signed_in: str) -> None:
    first = code_flow(client, rp)
    second = refresh(client, rp, first["refresh_token"]).get_json()
    third = refresh(client, rp, second["refresh_token"]).get_json()

    assert_token_error(refresh(client, rp, first["refresh_token"]), 400, "invalid_grant")

    # The newest refresh token and every access token of the grant are dead.
    for token in (third["refresh_token"], first["access_token"], second["access_token"],
                  third["access_token"]):
        assert introspect(client, rp, token) == {"active": False}
    assert_token_error(refresh(client, rp, third["refresh_token"]), 400, "invalid_grant")


def test_reuse_does_not_touch_other_grants_of_the_same_user(client: FlaskClient, rp: dict,
                                                            signed_in: str) -> None:
    stolen = code_flow(client, rp)
    other = code_flow(client, rp)
    refresh(client, rp, stolen["refresh_token"])
    refresh(client, rp, stolen["refresh_token"])
    assert introspect(client, rp, other["refresh_token"])["active"] is True


def test_other_clients_refresh_token_is_invalid_grant(client: FlaskClient, rp: dict,
                                                      signed_in: str) -> None:
    first = code_flow(client, rp)
    thief = confidential_client(client)
    assert_token_error(refresh(client, thief, first["refresh_token"]), 400, "invalid_grant")
    # A failed theft neither rotates nor revokes the rightful client's token.
    assert refresh(client, rp, first["refresh_token"]).status_code == 200


def test_scope_widening_is_invalid_scope(client: FlaskClient, rp: dict, signed_in: str) -> None:
    first = code_flow(client, rp, scope="read")
    assert_token_error(refresh(client, rp, first["refresh_token"], scope="read write"), 400,
                       "invalid_scope")
    # The rejected request did not consume the token.
    assert refresh(client, rp, first["refresh_token"]).status_code == 200


def test_resource_outside_the_grant_is_invalid_target(client: FlaskClient, rp: dict,
                                                      signed_in: str) -> None:
    first = code_flow(client, rp)
    assert_token_error(refresh(client, rp, first["refresh_token"], resource=RESOURCE), 400,
                       "invalid_target")


def test_resource_within_the_grant_sets_the_audience(client: FlaskClient, rp: dict,
                                                     signed_in: str) -> None:
    first = code_flow(client, rp, resource=RESOURCE)
    response = refresh(client, rp, first["refresh_token"], resource=RESOURCE)
    assert response.status_code == 200, response.get_json()
    assert decode_access_token(client, response.get_json()["access_token"])[1]["aud"] == RESOURCE


def test_unknown_refresh_token_is_invalid_grant(client: FlaskClient, rp: dict) -> None:
    assert_token_error(refresh(client, rp, "not-a-refresh-token"), 400, "invalid_grant")


def test_missing_refresh_token_is_invalid_request(client: FlaskClient, rp: dict) -> None:
    response = token_request(client, rp, grant_type="refresh_token")
    assert_token_error(response, 400, "invalid_request")


def test_expired_refresh_token_is_invalid_grant(client: FlaskClient, rp: dict, signed_in: str,
                                                clock: TestClock) -> None:
    from authserver.config import REFRESH_TOKEN_TTL

    first = code_flow(client, rp)
    clock.advance(REFRESH_TOKEN_TTL + 1)
    assert_token_error(refresh(client, rp, first["refresh_token"]), 400, "invalid_grant")


def test_client_without_the_refresh_grant_is_unauthorized_client(client: FlaskClient,
                                                                 signed_in: str) -> None:
    registered = confidential_client(client, grant_types=["authorization_code"])
    assert_token_error(refresh(client, registered, "anything"), 400, "unauthorized_client")


def test_refresh_token_of_a_deactivated_user_is_invalid_grant(app: Any, client: FlaskClient,
                                                              rp: dict, signed_in: str) -> None:
    from authserver.models import User

    first = code_flow(client, rp)
    with app.extensions["authserver"].db.session() as session:
        session.get(User, signed_in).active = False
    assert_token_error(refresh(client, rp, first["refresh_token"]), 400, "invalid_grant")
