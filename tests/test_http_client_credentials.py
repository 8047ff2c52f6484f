"""RFC 6749 §4.4 client credentials over HTTP, issuing RFC 9068 JWT access tokens.

`aud` comes from an RFC 8707 `resource` the server knows, else the issuer (RFC 9068 §3).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_helpers import (  # noqa: F401
    ISSUER,
    REDIRECT_URI,
    RESOURCE,
    app,
    app_config,
    assert_token_error,
    client,
    decode_access_token,
    redis_url,
    register_client,
    token_request,
)


@pytest.fixture
def cc_client(client: FlaskClient) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"], scope="read write")


def cc(client: FlaskClient, registered: dict[str, Any], **form: Any) -> Any:
    return token_request(client, registered, grant_type="client_credentials", **form)


def test_client_credentials_issues_an_rfc9068_jwt(client: FlaskClient, cc_client: dict) -> None:
    before = int(time.time())
    response = cc(client, cc_client, scope="read")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"  # GEN-03
    assert response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["scope"] == "read"
    assert "refresh_token" not in body  # RFC 6749 §4.4.3: SHOULD NOT
    header, claims = decode_access_token(client, body["access_token"])
    assert header["typ"] == "at+jwt"  # JAT-01
    assert header["alg"] == "ES256" and header["kid"]  # JAT-02
    # JAT-03: every required claim.
    assert claims["iss"] == ISSUER
    assert claims["sub"] == cc_client["client_id"]
    assert claims["client_id"] == cc_client["client_id"]
    assert claims["aud"] == ISSUER  # RFC 9068 §3: a default audience
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + body["expires_in"]
    assert claims["jti"]
    assert claims["scope"] == "read"
    assert "cnf" not in claims


def test_each_token_has_a_fresh_jti(client: FlaskClient, cc_client: dict) -> None:
    first = decode_access_token(client, cc(client, cc_client).get_json()["access_token"])[1]
    second = decode_access_token(client, cc(client, cc_client).get_json()["access_token"])[1]
    assert first["jti"] != second["jti"]


def test_resource_becomes_the_audience(client: FlaskClient, cc_client: dict) -> None:
    response = cc(client, cc_client, scope="read", resource=RESOURCE)
    assert response.status_code == 200
    claims = decode_access_token(client, response.get_json()["access_token"])[1]
    assert claims["aud"] == RESOURCE  # JAT-04, RI-03


def test_unknown_resource_is_invalid_target(client: FlaskClient, cc_client: dict) -> None:
    response = cc(client, cc_client, resource="https://unknown.example.com/api")
    assert_token_error(response, 400, "invalid_target")


def test_resource_with_fragment_is_invalid_target(client: FlaskClient, cc_client: dict) -> None:
    response = cc(client, cc_client, resource=RESOURCE + "#frag")
    assert_token_error(response, 400, "invalid_target")


def test_relative_resource_is_invalid_target(client: FlaskClient, cc_client: dict) -> None:
    response = cc(client, cc_client, resource="/api")
    assert_token_error(response, 400, "invalid_target")


def test_one_unknown_resource_among_known_ones_is_invalid_target(client: FlaskClient,
                                                                 cc_client: dict) -> None:
    response = client.post("/token", data={
        "grant_type": "client_credentials", "resource": [RESOURCE, "https://evil.example/"]},
        headers=token_auth(cc_client))
    assert_token_error(response, 400, "invalid_target")


def token_auth(registered: dict[str, Any]) -> dict[str, str]:
    from tests.http_helpers import basic_auth

    return basic_auth(registered["client_id"], registered["client_secret"])


def test_unsupported_scope_is_invalid_scope(client: FlaskClient, cc_client: dict) -> None:
    assert_token_error(cc(client, cc_client, scope="admin"), 400, "invalid_scope")


def test_scope_not_registered_for_the_client_is_invalid_scope(client: FlaskClient,
                                                              cc_client: dict) -> None:
    # The client registered "read write"; "email" is supported but not the client's.
    assert_token_error(cc(client, cc_client, scope="read email"), 400, "invalid_scope")


def test_client_not_registered_for_the_grant_is_unauthorized_client(client: FlaskClient
                                                                    ) -> None:
    registered = register_client(client, redirect_uris=[REDIRECT_URI],
                                 grant_types=["authorization_code"])
    assert_token_error(cc(client, registered), 400, "unauthorized_client")


def test_password_grant_is_unsupported_grant_type(client: FlaskClient, cc_client: dict) -> None:
    # BCP-04: never implemented.
    response = token_request(client, cc_client, grant_type="password", username="alice",
                             password="x")
    assert_token_error(response, 400, "unsupported_grant_type")


def test_unknown_grant_type_is_unsupported_grant_type(client: FlaskClient,
                                                      cc_client: dict) -> None:
    response = token_request(client, cc_client, grant_type="urn:example:magic")
    assert_token_error(response, 400, "unsupported_grant_type")


def test_get_on_the_token_endpoint_is_rejected(client: FlaskClient) -> None:
    response = client.get("/token?grant_type=client_credentials")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("name,values", [("grant_type", ["client_credentials"] * 2),
                                         ("scope", ["read", "write"])])
def test_repeated_parameter_is_invalid_request(client: FlaskClient, cc_client: dict, name: str,
                                               values: list[str]) -> None:
    # RFC 6749 §3.2: parameters MUST NOT be included more than once.
    form: dict[str, Any] = {"grant_type": "client_credentials", name: values}
    response = client.post("/token", data=form, headers=token_auth(cc_client))
    assert_token_error(response, 400, "invalid_request")


def test_parameters_in_the_query_string_are_invalid_request(client: FlaskClient,
                                                            cc_client: dict) -> None:
    # A query parameter must not shadow the body (Authlib reads some from either).
    response = client.post("/token?scope=write", data={"grant_type": "client_credentials",
                                                       "scope": "read"},
                           headers=token_auth(cc_client))
    assert_token_error(response, 400, "invalid_request")
    response = client.post("/token?grant_type=client_credentials",
                           headers=token_auth(cc_client))
    assert_token_error(response, 400, "invalid_request")


def test_repeated_resource_is_allowed(client: FlaskClient, cc_client: dict) -> None:
    # RFC 8707 §2: resource may repeat; the token is audience-restricted to both.
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           "resource": [RESOURCE, ISSUER]},
                           headers=token_auth(cc_client))
    assert response.status_code == 200, response.get_json()
    claims = decode_access_token(client, response.get_json()["access_token"])[1]
    assert claims["aud"] == [RESOURCE, ISSUER]


@pytest.mark.parametrize("spelling", [
    RESOURCE.replace("https://api.example.com", "HTTPS://API.EXAMPLE.COM"),  # scheme, host
    RESOURCE + "/",  # one trailing slash
    RESOURCE.replace("api.example.com", "api.example.com:443"),  # the default port
])
def test_resource_matches_after_rfc3986_normalisation(client: FlaskClient, cc_client: dict,
                                                      spelling: str) -> None:
    response = cc(client, cc_client, scope="read", resource=spelling)
    assert response.status_code == 200, response.get_json()
    claims = decode_access_token(client, response.get_json()["access_token"])[1]
    assert claims["aud"] == RESOURCE  # the registered form, whatever the spelling


def test_a_different_path_is_still_invalid_target(client: FlaskClient, cc_client: dict) -> None:
    assert_token_error(cc(client, cc_client, resource=RESOURCE + "/tools"), 400,
                       "invalid_target")
    assert_token_error(cc(client, cc_client, resource=RESOURCE.upper()), 400,
                       "invalid_target")  # the path is case-sensitive
