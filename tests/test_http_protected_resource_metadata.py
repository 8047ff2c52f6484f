"""RFC 9728 Protected Resource Metadata for the gateway (issue 14, item 3).

The gateway's resource for a platform is `<issuer>/gateway/<platform>`; its document is at the
path-ful well-known URL (RFC 9728 §3.1: `/.well-known/oauth-protected-resource` inserted
between the host and the path), and every 401 from the gateway names it in
`resource_metadata` (§5.1).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from authserver.dpop import DPOP_SIGNING_ALGS
from authserver.resource import protected_resource_metadata_url
from authserver.testing.settings import crm_platform
from tests.conftest import base_settings
from tests.http_helpers import ISSUER, RESOURCE, app, client, redis_url  # noqa: F401

PRM_PATH = "/.well-known/oauth-protected-resource/gateway/crm"


@pytest.fixture
def app_config(tmp_path: Any, database_url: str, redis_url: str) -> dict[str, Any]:
    return {
        **base_settings(tmp_path, database_url, redis_url, issuer=ISSUER),
        "resources": (RESOURCE,),
        "platforms": {"crm": crm_platform("https://crm.example.com", "s3cret")},
    }


@pytest.mark.parametrize(("resource", "url"), [
    ("https://as.example.com/gateway/crm",
     "https://as.example.com/.well-known/oauth-protected-resource/gateway/crm"),
    ("https://mcp.example.com", "https://mcp.example.com/.well-known/oauth-protected-resource"),
    ("https://mcp.example.com/", "https://mcp.example.com/.well-known/oauth-protected-resource"),
    ("http://127.0.0.1:8080/mcp",
     "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"),
    ("https://mcp.example.com/mcp?t=1",
     "https://mcp.example.com/.well-known/oauth-protected-resource/mcp?t=1"),
])
def test_metadata_url_inserts_the_well_known_segment(resource: str, url: str) -> None:
    assert protected_resource_metadata_url(resource) == url


def test_gateway_publishes_protected_resource_metadata(client: FlaskClient) -> None:
    response = client.get(PRM_PATH)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "max-age" in response.headers["Cache-Control"]
    doc = response.get_json()
    # RFC 9728 §3.3: `resource` is exactly the identifier the document was fetched for.
    assert doc["resource"] == f"{ISSUER}/gateway/crm"
    assert doc["authorization_servers"] == [ISSUER]
    assert doc["bearer_methods_supported"] == ["header"]
    assert doc["dpop_bound_access_tokens_required"] is True
    assert doc["dpop_signing_alg_values_supported"] == list(DPOP_SIGNING_ALGS)
    assert doc["resource_name"] == "Acme CRM"
    assert doc["authorization_details_types_supported"] == ["agent_intent"]


def test_unknown_platform_has_no_metadata(client: FlaskClient) -> None:
    response = client.get("/.well-known/oauth-protected-resource/gateway/nope")
    assert response.status_code == 404


def test_gateway_401_names_the_metadata(client: FlaskClient) -> None:
    response = client.get("/gateway/crm/deals/acme-123")
    assert response.status_code == 401
    www = response.headers["WWW-Authenticate"]
    assert www.startswith("DPoP ") and "error=" not in www
    assert f'resource_metadata="{ISSUER}{PRM_PATH}"' in www


def test_gateway_invalid_token_names_the_metadata(client: FlaskClient) -> None:
    response = client.get("/gateway/crm/deals/acme-123",
                          headers={"Authorization": "DPoP not.a.token"})
    assert response.status_code == 401
    www = response.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in www
    assert f'resource_metadata="{ISSUER}{PRM_PATH}"' in www
    assert response.get_json()["error"] == "invalid_token"
