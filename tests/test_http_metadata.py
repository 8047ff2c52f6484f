"""RFC 8414 metadata at both well-known URLs (META-01..05, MCP-03/04/07, DPOP-28)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.http_helpers import ISSUER, app, app_config, client, redis_url  # noqa: F401

WELL_KNOWN = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("path", WELL_KNOWN)
def test_metadata_is_served_at_both_well_known_urls(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = response.get_json()
    # META-01: identical to the issuer the well-known URL was built from.
    assert doc["issuer"] == ISSUER
    assert doc["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["jwks_uri"] == f"{ISSUER}/jwks.json"
    assert doc["registration_endpoint"] == f"{ISSUER}/register"
    assert doc["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"


def test_both_well_known_documents_are_identical(client: FlaskClient) -> None:
    first, second = (client.get(p).get_json() for p in WELL_KNOWN)
    assert first == second


def test_metadata_publishes_every_field_explicitly(client: FlaskClient) -> None:
    doc = client.get(WELL_KNOWN[0]).get_json()
    assert doc["response_types_supported"] == ["code"]  # BCP-03
    assert doc["response_modes_supported"] == ["query"]
    # META-04: published explicitly, so no defaults (implicit, basic-only) apply.
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        doc["grant_types_supported"])
    assert "implicit" not in doc["grant_types_supported"]
    assert "password" not in doc["grant_types_supported"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"}
    assert "none" not in doc["introspection_endpoint_auth_methods_supported"]
    assert "none" in doc["revocation_endpoint_auth_methods_supported"]
    for name in ("token_endpoint_auth_signing_alg_values_supported",
                 "introspection_endpoint_auth_signing_alg_values_supported",
                 "revocation_endpoint_auth_signing_alg_values_supported",
                 "dpop_signing_alg_values_supported"):
        assert doc[name], name
        assert "none" not in doc[name], name
        assert not any(alg.startswith("HS") for alg in doc[name]), name
    assert doc["code_challenge_methods_supported"] == ["S256"]  # META-05, MCP-04
    assert doc["authorization_response_iss_parameter_supported"] is True  # MCP-07
    assert set(doc["authorization_details_types_supported"]) == {"agent_intent", "agent_mandate"}
    assert "read" in doc["scopes_supported"]


def test_metadata_omits_empty_members(client: FlaskClient) -> None:
    # META-03: arrays that would be empty are left out (no platforms configured here).
    doc = client.get(WELL_KNOWN[0]).get_json()
    assert "protected_resources" not in doc
    assert all(value not in (None, [], "") for value in doc.values())


def test_jwks_publishes_public_signing_keys_only(client: FlaskClient) -> None:
    response = client.get("/jwks.json")
    assert response.status_code == 200
    keys = response.get_json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "EC" and key["alg"] == "ES256" and key["kid"]
        assert "d" not in key


def test_openid_configuration_is_valid_oidc_discovery(client: FlaskClient) -> None:
    """OIDC Discovery §3: the REQUIRED members, since scope=openid issues an ID token."""
    doc = client.get("/.well-known/openid-configuration").get_json()
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert "openid" in doc["scopes_supported"]
    assert {"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
            "response_types_supported"} <= set(doc)
