"""Interoperability: a standard client library (requests-oauth2client) against a real server.

The app runs on a loopback port (real HTTP); the library discovers it from RFC 8414 metadata,
gets client_credentials and authorization_code + PKCE tokens (validating `state` and the RFC
9207 `iss`), refreshes, introspects and revokes. The browser leg is driven with `requests`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from requests_oauth2client import ClientSecretBasic, MismatchingIssuer, OAuth2Client

from authserver.testing.server import ServerThread, free_port
from tests.conftest import base_settings, running_app
from tests.http_helpers import PASSWORD, USERNAME, create_local_user, form_with


@pytest.fixture
def server(tmp_path: Any, database_url: str) -> Iterator[tuple[Flask, str]]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with running_app(base_settings(tmp_path, database_url, "", issuer=issuer)) as app:
        thread = ServerThread(app, port=port)
        base = thread.start()
        assert base == issuer
        yield app, issuer
        thread.stop()


def register(issuer: str, **metadata: Any) -> dict[str, Any]:
    """RFC 7591 with plain requests (the library does not do DCR)."""
    discovery = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=5).json()
    response = requests.post(discovery["registration_endpoint"], json=metadata, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def oauth_client(issuer: str, registered: dict[str, Any]) -> OAuth2Client:
    return OAuth2Client.from_discovery_endpoint(
        f"{issuer}/.well-known/oauth-authorization-server", issuer=issuer,
        auth=ClientSecretBasic(registered["client_id"], registered["client_secret"]),
        redirect_uri=(registered.get("redirect_uris") or [None])[0], testing=True,
    )


def browser_authorize(issuer: str, authorization_uri: str) -> str:
    """Sign in and allow; return the redirect (callback) URI the browser would load."""
    browser = requests.Session()
    page = browser.get(f"{issuer}/login", timeout=5)
    form = form_with(page.text, "username", action="/login")
    signed_in = browser.post(f"{issuer}/login", data={
        "csrf_token": form["fields"]["csrf_token"], "next": "/",
        "username": USERNAME, "password": PASSWORD}, allow_redirects=False, timeout=5)
    assert signed_in.status_code == 302
    consent = browser.get(authorization_uri, allow_redirects=False, timeout=5)
    assert consent.status_code == 200, consent.text
    fields = form_with(consent.text, "csrf_token", action="/authorize")["multi"]
    decision = browser.post(f"{issuer}/authorize", data={**fields, "decision": "allow"},
                            allow_redirects=False, timeout=5)
    assert decision.status_code == 303
    return decision.headers["Location"]  # type: ignore[no-any-return]


def test_client_credentials_introspect_and_revoke(server: tuple[Flask, str]) -> None:
    _, issuer = server
    registered = register(issuer, grant_types=["client_credentials"])
    client = oauth_client(issuer, registered)
    assert client.token_endpoint == f"{issuer}/token"

    token = client.client_credentials(scope="read")
    assert token.token_type.lower() == "bearer"
    assert token.scope == "read"
    assert client.introspect_token(token.access_token)["active"] is True

    assert client.revoke_access_token(token.access_token) is True
    assert client.introspect_token(token.access_token) == {"active": False}


def test_authorization_code_with_pkce_refresh_introspect_and_revoke(
        server: tuple[Flask, str]) -> None:
    app, issuer = server
    create_local_user(app, USERNAME, PASSWORD)
    registered = register(issuer, redirect_uris=["https://client.example.com/cb"],
                          grant_types=["authorization_code", "refresh_token"], scope="read")
    client = oauth_client(issuer, registered)

    request = client.authorization_request(scope="read", nonce=None)
    assert request.code_challenge_method == "S256"
    callback = browser_authorize(issuer, str(request.uri))
    # The library checks state and, as the metadata advertises it, the RFC 9207 iss.
    response = request.validate_callback(callback)
    token = client.authorization_code(response)
    assert token.refresh_token
    info = client.introspect_token(token.access_token)
    assert info["active"] is True and info["client_id"] == registered["client_id"]

    refreshed = client.refresh_token(token)
    assert refreshed.refresh_token != token.refresh_token
    assert client.introspect_token(token.refresh_token) == {"active": False}

    assert client.revoke_refresh_token(refreshed.refresh_token) is True
    for value in (refreshed.access_token, refreshed.refresh_token, token.access_token):
        assert client.introspect_token(value) == {"active": False}


def test_callback_with_a_foreign_iss_is_refused_by_the_client(server: tuple[Flask, str]) -> None:
    # Mix-up defence end to end: our iss is what the library compares against.
    app, issuer = server
    create_local_user(app, USERNAME, PASSWORD)
    registered = register(issuer, redirect_uris=["https://client.example.com/cb"],
                          grant_types=["authorization_code"])
    client = oauth_client(issuer, registered)
    request = client.authorization_request(scope="read", nonce=None)
    callback = browser_authorize(issuer, str(request.uri))
    forged = callback.replace("iss=http", "iss=https%3A%2F%2Fevil.example.com&x=http")
    with pytest.raises(MismatchingIssuer):
        request.validate_callback(forged)
