"""RFC 7591 dynamic client registration over HTTP (DCR-01..04, DCR-06, DCR-07).

Open registration by default; with `registration_token` set, an initial access token (RFC 7591
§3, Bearer) is required. Secrets are returned once and stored only as digests.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authserver.models import Client
from tests.http_helpers import (  # noqa: F401
    REDIRECT_URI,
    app,
    app_config,
    assert_refusal,
    client,
    ec_key,
    public_jwks,
    redis_url,
)

INITIAL_ACCESS_TOKEN = "iat-" + "x" * 40


def assert_registration_error(response: Any, error: str, description: str) -> None:
    """RFC 7591 §3.2.2: a 400 refusal (http_helpers.assert_refusal) that registered nothing."""
    body = assert_refusal(response, 400, error, description)
    assert "client_id" not in body


# --- success ----------------------------------------------------------------------------------


def test_confidential_client_gets_201_with_id_secret_and_issued_at(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "redirect_uris": [REDIRECT_URI], "client_name": "Agent",
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
    })
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"  # the body carries a secret
    body = response.get_json()
    assert body["client_id"].startswith("cli_")
    assert len(body["client_secret"]) >= 43  # 256 bits, base64url
    assert body["client_secret_expires_at"] == 0  # DCR-06: required with a secret
    assert isinstance(body["client_id_issued_at"], int)
    # DCR-06: all registered metadata, including defaults the server filled in.
    assert body["redirect_uris"] == [REDIRECT_URI]
    assert body["client_name"] == "Agent"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["response_types"] == ["code"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"


def test_default_auth_method_is_client_secret_basic(client: FlaskClient) -> None:
    body = client.post("/register", json={"redirect_uris": [REDIRECT_URI]}).get_json()
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["grant_types"] == ["authorization_code"]
    assert "client_secret" in body


def test_client_secret_post_client_gets_a_secret(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post"})
    assert response.status_code == 201
    assert response.get_json()["client_secret"]


def test_public_client_gets_no_secret(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "redirect_uris": ["http://127.0.0.1:8765/cb"], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]})
    assert response.status_code == 201
    body = response.get_json()
    assert "client_secret" not in body
    assert "client_secret_expires_at" not in body


def test_private_key_jwt_client_gets_no_secret(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": public_jwks(ec_key())})
    assert response.status_code == 201
    body = response.get_json()
    assert "client_secret" not in body
    assert body["jwks"]["keys"][0]["kty"] == "EC"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:4000/cb", "http://[::1]:4000/cb",
                                 "http://localhost:4000/cb", "com.example.app:/cb"])
def test_loopback_http_and_private_use_redirect_uris_are_accepted(client: FlaskClient,
                                                                  uri: str) -> None:
    response = client.post("/register", json={"redirect_uris": [uri],
                                              "token_endpoint_auth_method": "none"})
    assert response.status_code == 201, response.get_json()


def test_registrant_cannot_choose_its_client_id(client: FlaskClient) -> None:
    # DCR-07: an id that could pass for a user's `sub` is never accepted from the registrant.
    body = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                          "client_id": "usr_alice"}).get_json()
    assert body["client_id"] != "usr_alice"
    assert body["client_id"].startswith("cli_")


def test_unknown_metadata_members_are_dropped(client: FlaskClient) -> None:
    body = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                          "trusted_edge": True, "x-extra": 1}).get_json()
    assert "trusted_edge" not in body and "x-extra" not in body


def test_secret_is_stored_only_as_its_sha256_digest(app: Flask, client: FlaskClient) -> None:
    body = client.post("/register", json={"redirect_uris": [REDIRECT_URI]}).get_json()
    with app.extensions["authserver"].db.session() as session:
        row = session.get(Client, body["client_id"])
        assert row is not None
        assert row.secret_hash == hashlib.sha256(body["client_secret"].encode()).hexdigest()
        assert body["client_secret"] not in str(row.client_metadata)


# --- invalid_redirect_uri ---------------------------------------------------------------------


@pytest.mark.parametrize("uri", [
    "http://client.example.com/cb",          # plain http off loopback
    "https://client.example.com/cb#frag",    # fragment
    "https:///cb",                           # no host
    "/relative/cb",                          # not absolute
    "javascript:alert(1)",                   # not a private-use (reverse-DNS) scheme
])
def test_bad_redirect_uri_is_invalid_redirect_uri(client: FlaskClient, uri: str) -> None:
    response = client.post("/register", json={"redirect_uris": [uri]})
    assert_registration_error(response, "invalid_redirect_uri",
                              "Redirect URIs must be https, loopback http or a private-use "
                              "scheme, without a fragment")


def test_authorization_code_client_without_redirect_uris_is_invalid_redirect_uri(
        client: FlaskClient) -> None:
    response = client.post("/register", json={"grant_types": ["authorization_code"]})
    assert_registration_error(response, "invalid_redirect_uri",
                              "authorization_code clients need redirect_uris")


def test_redirect_uris_not_a_list_is_invalid_redirect_uri(client: FlaskClient) -> None:
    response = client.post("/register", json={"redirect_uris": REDIRECT_URI})
    assert_registration_error(response, "invalid_redirect_uri",
                              "redirect_uris must be a list of URIs")


# --- invalid_client_metadata ------------------------------------------------------------------


@pytest.mark.parametrize("grant_type", ["password", "implicit", "urn:example:unknown"])
def test_unsupported_grant_type_is_invalid_client_metadata(client: FlaskClient,
                                                           grant_type: str) -> None:
    response = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                              "grant_types": [grant_type]})
    assert_registration_error(response, "invalid_client_metadata", "Unsupported grant_types")


def test_unsupported_auth_method_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                              "token_endpoint_auth_method": "client_secret_jwt"})
    assert_registration_error(response, "invalid_client_metadata",
                              "Unsupported token_endpoint_auth_method")


def test_public_client_asking_for_client_credentials_is_invalid_client_metadata(
        client: FlaskClient) -> None:
    response = client.post("/register", json={"grant_types": ["client_credentials"],
                                              "token_endpoint_auth_method": "none"})
    assert_registration_error(response, "invalid_client_metadata",
                              "Public clients cannot use this grant type")


def test_token_response_type_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                              "response_types": ["token"]})
    assert_registration_error(response, "invalid_client_metadata",
                              "Only response_type code is supported")


def test_inconsistent_grant_and_response_types_are_invalid_client_metadata(
        client: FlaskClient) -> None:
    # DCR-03: response_type code without the authorization_code grant.
    response = client.post("/register", json={"grant_types": ["client_credentials"],
                                              "response_types": ["code"]})
    assert_registration_error(response, "invalid_client_metadata",
                              "grant_types and response_types are inconsistent")


def test_jwks_and_jwks_uri_together_are_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": public_jwks(ec_key()), "jwks_uri": "https://client.example.com/jwks"})
    assert_registration_error(response, "invalid_client_metadata",
                              "jwks and jwks_uri are mutually exclusive")


def test_private_key_in_jwks_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [ec_key().as_dict(private=True)]}})
    assert_registration_error(response, "invalid_client_metadata",
                              "jwks must hold public keys only")


def test_symmetric_key_in_jwks_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}})
    assert_registration_error(response, "invalid_client_metadata",
                              "jwks must hold public keys only")


def test_private_key_jwt_without_keys_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={"grant_types": ["client_credentials"],
                                              "token_endpoint_auth_method": "private_key_jwt"})
    assert_registration_error(response, "invalid_client_metadata",
                              "private_key_jwt needs jwks or jwks_uri")


def test_plain_http_jwks_uri_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={
        "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": "http://client.example.com/jwks"})
    assert_registration_error(response, "invalid_client_metadata", "jwks_uri must be an https URL")


def test_unsupported_scope_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                              "scope": "read admin"})
    assert_registration_error(response, "invalid_client_metadata",
                              "scope lists an unsupported scope")


def test_non_boolean_dpop_bound_access_tokens_is_invalid_client_metadata(
        client: FlaskClient) -> None:
    response = client.post("/register", json={"redirect_uris": [REDIRECT_URI],
                                              "dpop_bound_access_tokens": "yes"})
    assert_registration_error(response, "invalid_client_metadata",
                              "dpop_bound_access_tokens must be a boolean")


def test_body_that_is_not_a_json_object_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/register", data="redirect_uris=x",
                           content_type="application/x-www-form-urlencoded")
    assert_registration_error(response, "invalid_client_metadata",
                              "The request body must be a JSON object")
    response = client.post("/register", json=[REDIRECT_URI])
    assert_registration_error(response, "invalid_client_metadata",
                              "The request body must be a JSON object")


# --- DCR-01: registration protected by an initial access token ---------------------------------


@pytest.fixture
def protected_app(app_config: dict[str, Any]) -> Any:
    from tests.conftest import running_app

    with running_app({**app_config, "registration_token": INITIAL_ACCESS_TOKEN}) as application:
        yield application


def test_protected_registration_without_token_is_401_with_bearer_challenge(
        protected_app: Flask) -> None:
    response = protected_app.test_client().post("/register",
                                                json={"redirect_uris": [REDIRECT_URI]})
    assert response.status_code == 401
    # RFC 6750 §3.1: no credentials → a challenge without an error code.
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "client_id" not in (response.get_json(silent=True) or {})


def test_protected_registration_with_wrong_token_is_401_invalid_token(
        protected_app: Flask) -> None:
    response = protected_app.test_client().post(
        "/register", json={"redirect_uris": [REDIRECT_URI]},
        headers={"Authorization": "Bearer wrong-token"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_protected_registration_with_basic_credentials_is_401(protected_app: Flask) -> None:
    response = protected_app.test_client().post(
        "/register", json={"redirect_uris": [REDIRECT_URI]},
        headers={"Authorization": "Basic " + INITIAL_ACCESS_TOKEN})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_protected_registration_with_the_initial_access_token_is_201(
        protected_app: Flask) -> None:
    response = protected_app.test_client().post(
        "/register", json={"redirect_uris": [REDIRECT_URI]},
        headers={"Authorization": "Bearer " + INITIAL_ACCESS_TOKEN})
    assert response.status_code == 201
    assert response.get_json()["client_id"]
