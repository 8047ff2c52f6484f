"""Resource servers as first-class (issue 14): the admin API registers, lists and removes them;
a change takes effect on every instance at once (the database, no restart); a resource's
token kinds (`dpop`, `bearer`) and scopes bound the tokens issued for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import running_app
from tests.dpop_helpers import TOKEN_ENDPOINT, ProofKey
from tests.http_helpers import (  # noqa: F401
    ISSUER,
    app_config,
    assert_refusal,
    assert_token_error,
    code_flow,
    confidential_client,
    decode_access_token,
    introspect,
    redis_url,
    register_client,
    signed_in,
    token_request,
    user_id,
)

ADMIN = {"Authorization": "Bearer " + "a" * 32}
NEW = "https://tools.example.net/mcp"
URI_RULE = "uri must be an absolute https URI (http only on loopback) without userinfo or fragment"
SHAPES = "scopes and token_types must be arrays, introspection a boolean"
NOT_AN_OBJECT = ("The body must be a JSON object with uri, name and optionally scopes, "
                 "token_types, introspection")
#: The refusal of each malformed registration, by the word the test looks for in it.
MALFORMED = {
    "https": URI_RULE, "fragment": URI_RULE, "userinfo": URI_RULE, "absolute": URI_RULE,
    "this server": "uri is this server or its gateway, which are not registrable",
    "name": "name must be 1 to 255 printable characters",
    "token_types": "token_types must be one or both of dpop, bearer",
    "arrays": SHAPES, "boolean": SHAPES,
    "scopes": "scopes must be supported by this server (openid, profile, email, "
              "offline_access, read, write); not admin",
    "JSON object": NOT_AN_OBJECT,
}


@pytest.fixture
def admin_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "admin_token": "a" * 32}


@pytest.fixture
def app(admin_config: dict[str, Any], clock: Any) -> Iterator[Flask]:
    with running_app(admin_config, clock) as application:
        yield application


@pytest.fixture
def other(admin_config: dict[str, Any], clock: Any) -> Iterator[FlaskClient]:
    """A second instance on the same database and store, started before any change."""
    with running_app(admin_config, clock) as application:
        yield application.test_client()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def cc_client(client: FlaskClient) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"], scope="read write")


def add(client: FlaskClient, **body: Any) -> Any:
    return client.post("/admin/resources", json={"uri": NEW, "name": "Tools", **body},
                       headers=ADMIN)


def cc(client: FlaskClient, registered: dict[str, Any], proof: str | None = None,
       **form: Any) -> Any:
    headers = {"DPoP": proof} if proof else {}
    from tests.http_helpers import auth_for

    auth, fields = auth_for(registered)
    return client.post("/token", data={**fields, "grant_type": "client_credentials", **form},
                       headers={**auth, **headers})


# --- the admin API ----------------------------------------------------------------------------


def test_add_list_remove(client: FlaskClient) -> None:
    response = add(client, uri="HTTPS://Tools.Example.NET:443/mcp/", scopes=["read"],
                   token_types=["bearer", "dpop"])
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["uri"] == NEW  # stored normalised: scheme, host, default port, trailing /
    assert body["name"] == "Tools" and body["scopes"] == ["read"]
    assert body["token_types"] == ["dpop", "bearer"]
    assert body["introspection_client_id"] is None and "client_secret" not in body
    listed = client.get("/admin/resources", headers=ADMIN)
    assert listed.status_code == 200 and listed.get_json() == [body]
    removed = client.delete("/admin/resources", query_string={"uri": NEW + "/"}, headers=ADMIN)
    assert removed.status_code == 200 and removed.get_json() == {"removed": NEW}
    assert client.get("/admin/resources", headers=ADMIN).get_json() == []


def test_add_defaults_to_both_token_kinds_and_any_scope(client: FlaskClient) -> None:
    body = add(client).get_json()
    assert body["token_types"] == ["dpop", "bearer"] and body["scopes"] == []


def test_duplicate_under_another_spelling_is_409(client: FlaskClient) -> None:
    assert add(client).status_code == 201
    body = assert_refusal(add(client, uri="https://TOOLS.example.net/mcp/"), 409,
                          "resource_exists", f"resource {NEW} is already registered")
    assert NEW in body["error_description"]
    assert len(client.get("/admin/resources", headers=ADMIN).get_json()) == 1


@pytest.mark.parametrize(("body", "why"), [
    ({"uri": "http://tools.example.net/mcp"}, "https"),  # plain http off loopback
    ({"uri": "https://tools.example.net/mcp#x"}, "fragment"),
    ({"uri": "https://user@tools.example.net/mcp"}, "userinfo"),
    ({"uri": "tools.example.net/mcp"}, "absolute"),
    ({"uri": 7}, "absolute"),
    ({"uri": ISSUER}, "this server"),
    ({"uri": ISSUER + "/gateway/crm"}, "this server"),
    ({"name": ""}, "name"),
    ({"name": "a\nb"}, "name"),
    ({"token_types": []}, "token_types"),
    ({"token_types": ["mtls"]}, "token_types"),
    ({"token_types": "dpop"}, "arrays"),
    ({"scopes": ["admin"]}, "scopes"),
    ({"introspection": "yes"}, "boolean"),
    ({"extra": 1}, "JSON object"),
], ids=lambda v: v if isinstance(v, str) else next(iter(v)))
def test_malformed_registration_is_invalid_request(client: FlaskClient, body: dict[str, Any],
                                                   why: str) -> None:
    body = assert_refusal(add(client, **body), 400, "invalid_request", MALFORMED[why])
    assert why in body["error_description"]
    assert client.get("/admin/resources", headers=ADMIN).get_json() == []


def test_body_not_json_is_invalid_request(client: FlaskClient) -> None:
    response = client.post("/admin/resources", data="uri=x", headers=ADMIN)
    assert_refusal(response, 400, "invalid_request", NOT_AN_OBJECT)


def test_remove_unknown_is_404(client: FlaskClient) -> None:
    response = client.delete("/admin/resources", query_string={"uri": NEW}, headers=ADMIN)
    assert response.status_code == 404


def test_remove_without_uri_is_invalid_request(client: FlaskClient) -> None:
    assert_refusal(client.delete("/admin/resources", headers=ADMIN), 400, "invalid_request",
                   "uri is required")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer " + "b" * 32}],
                         ids=["none", "wrong"])
def test_the_admin_token_is_required(client: FlaskClient, headers: dict[str, str]) -> None:
    for response in (client.post("/admin/resources", json={"uri": NEW, "name": "x"},
                                 headers=headers),
                     client.get("/admin/resources", headers=headers),
                     client.delete("/admin/resources", query_string={"uri": NEW},
                                   headers=headers)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_introspection_credentials_are_shown_once_and_may_introspect(
        client: FlaskClient, cc_client: dict[str, Any]) -> None:
    body = add(client, introspection=True).get_json()
    rs = {"client_id": body["introspection_client_id"], "client_secret": body["client_secret"],
          "token_endpoint_auth_method": "client_secret_basic"}
    assert "client_secret" not in client.get("/admin/resources", headers=ADMIN).get_json()[0]
    token = cc(client, cc_client, scope="read", resource=NEW).get_json()["access_token"]
    assert introspect(client, rs, token)["active"] is True
    other_token = cc(client, cc_client, scope="read").get_json()["access_token"]
    assert introspect(client, rs, other_token) == {"active": False}  # not its audience
    client.delete("/admin/resources", query_string={"uri": NEW}, headers=ADMIN)
    # Its client goes with it.
    response = client.post("/introspect", data={"token": token},
                           headers={"Authorization": _basic(rs)})
    assert_token_error(response, 401, "invalid_client")


def _basic(registered: dict[str, Any]) -> str:
    from tests.http_helpers import basic_auth

    return basic_auth(registered["client_id"], registered["client_secret"])["Authorization"]


# --- every instance, at once ------------------------------------------------------------------


def test_a_new_resource_works_on_another_instance_and_a_removed_one_stops_at_once(
        client: FlaskClient, other: FlaskClient, cc_client: dict[str, Any]) -> None:
    assert_token_error(cc(other, cc_client, resource=NEW), 400, "invalid_target")
    assert add(client).status_code == 201
    response = cc(other, cc_client, scope="read", resource="https://tools.example.net/mcp/")
    assert response.status_code == 200, response.get_json()
    assert decode_access_token(other, response.get_json()["access_token"])[1]["aud"] == NEW
    assert other.delete("/admin/resources", query_string={"uri": NEW},
                        headers=ADMIN).status_code == 200
    body = assert_token_error(cc(client, cc_client, resource=NEW), 400, "invalid_target")
    assert "access_token" not in body


def test_a_refresh_for_a_removed_resource_is_invalid_target(
        client: FlaskClient, signed_in: str) -> None:
    assert add(client).status_code == 201
    registered = confidential_client(client)
    tokens = code_flow(client, registered, resource=NEW)
    client.delete("/admin/resources", query_string={"uri": NEW}, headers=ADMIN)
    response = token_request(client, registered, grant_type="refresh_token",
                             refresh_token=tokens["refresh_token"])
    assert_token_error(response, 400, "invalid_target")


# --- Bearer, DPoP or both ---------------------------------------------------------------------


def test_dpop_only_resource_without_proof_is_invalid_dpop_proof(
        client: FlaskClient, cc_client: dict[str, Any]) -> None:
    add(client, token_types=["dpop"])
    response = cc(client, cc_client, resource=NEW)
    body = assert_token_error(response, 400, "invalid_dpop_proof")
    assert "accepts only DPoP-bound tokens" in body["error_description"]
    assert "access_token" not in body and "DPoP-Nonce" not in response.headers


def test_dpop_only_resource_with_proof_gets_a_bound_token(
        client: FlaskClient, cc_client: dict[str, Any]) -> None:
    add(client, token_types=["dpop"])
    key = ProofKey()
    response = cc(client, cc_client, key.proof(TOKEN_ENDPOINT), resource=NEW)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    claims = decode_access_token(client, response.get_json()["access_token"])[1]
    assert claims["cnf"] == {"jkt": key.jkt} and claims["aud"] == NEW


def test_bearer_only_resource_with_proof_is_invalid_request(
        client: FlaskClient, cc_client: dict[str, Any]) -> None:
    add(client, token_types=["bearer"])
    response = cc(client, cc_client, ProofKey().proof(TOKEN_ENDPOINT), resource=NEW)
    body = assert_token_error(response, 400, "invalid_request")
    assert "accepts only Bearer tokens" in body["error_description"]
    assert "WWW-Authenticate" not in response.headers


def test_bearer_only_resource_without_proof_gets_a_bearer_token(
        client: FlaskClient, cc_client: dict[str, Any]) -> None:
    add(client, token_types=["bearer"])
    response = cc(client, cc_client, resource=NEW)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "Bearer"
    assert "cnf" not in decode_access_token(client, response.get_json()["access_token"])[1]


def test_a_resource_accepting_both_takes_either(client: FlaskClient,
                                                cc_client: dict[str, Any]) -> None:
    add(client, token_types=["dpop", "bearer"])
    assert cc(client, cc_client, resource=NEW).get_json()["token_type"] == "Bearer"
    bound = cc(client, cc_client, ProofKey().proof(TOKEN_ENDPOINT), resource=NEW)
    assert bound.get_json()["token_type"] == "DPoP"


def test_dpop_only_applies_to_the_code_flow_too(client: FlaskClient, signed_in: str) -> None:
    add(client, token_types=["dpop"])
    registered = confidential_client(client)
    from tests.http_helpers import authorization_params, authorize, pkce_pair

    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge, resource=NEW)
    code = authorize(client, params)
    response = token_request(client, registered, grant_type="authorization_code", code=code,
                             redirect_uri=params["redirect_uri"], code_verifier=verifier)
    assert_token_error(response, 400, "invalid_dpop_proof")


# --- scopes -----------------------------------------------------------------------------------


def test_a_scope_the_resource_does_not_serve_is_invalid_scope(
        client: FlaskClient, cc_client: dict[str, Any]) -> None:
    add(client, scopes=["read"])
    assert cc(client, cc_client, scope="read", resource=NEW).status_code == 200
    body = assert_token_error(cc(client, cc_client, scope="read write", resource=NEW), 400,
                              "invalid_scope")
    assert NEW in body["error_description"]
