"""authserver.cimd at unit level: each refusal of a URL or a document, for its own reason
(the HTTP tests in tests/test_http_cimd.py see only the shared description)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authserver.cimd import check_client_id_url, is_url_client_id, parse_document
from authserver.errors import InvalidClientError

URL = "https://client.example/oauth/client.json"
SCOPES = ("openid", "read")


def _doc(**members: Any) -> bytes:
    doc: dict[str, Any] = {"client_id": URL, "redirect_uris": ["https://client.example/cb"],
                           "token_endpoint_auth_method": "none"}
    doc.update(members)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_a_public_client_document_is_accepted() -> None:
    md = parse_document(_doc(client_name="Example"), URL, scopes=SCOPES)
    assert md["token_endpoint_auth_method"] == "none"
    assert md["redirect_uris"] == ["https://client.example/cb"]
    assert "client_id" not in md


def test_auth_method_defaults_to_none() -> None:
    md = parse_document(_doc(token_endpoint_auth_method=None), URL, scopes=SCOPES)
    assert md["token_endpoint_auth_method"] == "none"


@pytest.mark.parametrize(("url", "why"), [
    ("http://client.example/c.json", "not https"),
    ("HTTPS://client.example/c.json", "not https"),
    ("https://client.example/c.json#x", "fragment"),
    ("https://client.example/c.json?x=1", "query"),
    ("https://client.example", "no path"),
    ("https://client.example/", "no path"),
    ("https://client.example/a/../c.json", "dot segment"),
    ("https://client.example/a/%2E/c.json", "dot segment"),
    ("https://user@client.example/c.json", "userinfo"),
    ("https://client.example:0/c.json", "port 0"),
    ("https://client.example/c json", "printable"),
    ("https://client.example/" + "a" * 250, "too long"),
])
def test_client_id_url_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidClientError) as e:
        check_client_id_url(url)
    assert why in (e.value.debug or "")


def test_client_id_url_with_a_port_is_accepted() -> None:
    check_client_id_url("https://client.example:8443/c.json")


@pytest.mark.parametrize(("body", "why"), [
    (b"{", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"client_id": "x", "client_id": "y"}', "repeated JSON member"),
    (_doc(client_id="https://client.example/other.json"), "client_id is not the document URL"),
    (_doc(client_id=None), "client_id is not the document URL"),
    (_doc(client_secret="s"), "client_secret"),
    (_doc(client_secret_expires_at=0), "client_secret"),
    (_doc(token_endpoint_auth_method="client_secret_basic"), "token_endpoint_auth_method"),
    (_doc(token_endpoint_auth_method="client_secret_jwt"), "token_endpoint_auth_method"),
    (_doc(token_endpoint_auth_method="private_key_jwt"), "private_key_jwt needs jwks"),
    (_doc(grant_types=["client_credentials"]), "grant_types"),
    (_doc(redirect_uris=["https://client.example/cb#f"]), "Redirect URIs"),
    (_doc(redirect_uris=[]), "redirect_uris"),
])
def test_document_refused(body: bytes, why: str) -> None:
    with pytest.raises(InvalidClientError) as e:
        parse_document(body, URL, scopes=SCOPES)
    assert why in (e.value.debug or "")


@pytest.mark.parametrize(("client_id", "is_url"), [
    ("https://a.example/c.json", True), ("HTTP://a.example/c", True), ("cli_abc", False),
    ("httpsfoo", False),
])
def test_url_client_ids(client_id: str, is_url: bool) -> None:
    assert is_url_client_id(client_id) is is_url
