"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document) over HTTP.

A `client_id` that is an https URL names the client's own metadata document, fetched by the
one outbound fetcher (authserver.outbound). Each document is served over https on loopback
by the test, with a throwaway CA the server is told to trust. One test per rejection: at the
authorization endpoint a refused client is a 400 page with `invalid_client` and never a
redirect (GEN-04, CIMD-02..05); at the token endpoint it is 401 `invalid_client`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authserver.cimd import CIMD_MAX_BYTES, CimdResolver
from authserver.outbound import CACHE_CEILING, Outbound
from tests.conftest import TestClock
from tests.http_helpers import (  # noqa: F401
    ISSUER,
    app,
    app_config,
    assert_token_error,
    assertion_form,
    authorization_params,
    authorize,
    client,
    client_assertion,
    code_flow,
    decode_access_token,
    ec_key,
    pkce_pair,
    public_jwks,
    redis_url,
    signed_in,
    token_request,
    user_id,
)
from tests.tls_helpers import Route, TLSServer, tls_server  # noqa: F401

REDIRECT = "http://127.0.0.1:8765/callback"
PATH = "/oauth/client.json"


def _trust(app: Flask, server: TLSServer, clock: Any, *, allow_internal: bool = True) -> None:
    """The app fetches documents through a fetcher that trusts the test's CA."""
    services = app.extensions["authserver"]
    services.cimd = CimdResolver(
        Outbound(allow_internal=allow_internal, ca_file=str(server.ca_file), clock=clock),
        scopes=services.settings.scopes)


@pytest.fixture
def cimd(app: Flask, tls_server: TLSServer, clock: TestClock) -> TLSServer:
    _trust(app, tls_server, clock)
    return tls_server


def _serve(server: TLSServer, path: str = PATH, *, status: int = 200,
           headers: dict[str, str] | None = None, body: bytes | None = None,
           **document: Any) -> dict[str, Any]:
    url = server.url(path)
    doc: dict[str, Any] = {"client_id": url, "client_name": "Example MCP client",
                           "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                           "grant_types": ["authorization_code", "refresh_token"]}
    doc.update(document)
    doc = {k: v for k, v in doc.items() if v is not None}
    server.routes[path] = Route(
        body=json.dumps(doc).encode() if body is None else body, status=status,
        headers={"Content-Type": "application/json", **(headers or {})})
    return {**doc, "client_id": url}


URL = "client_id is not a valid client metadata document URL"
DOCUMENT = "The client metadata document is not acceptable"
FETCH = "The client metadata document could not be retrieved"


def _refused(response: Any, description: str, error: str = "invalid_client") -> str:
    """GEN-04: a 400 page, never a redirect, naming the error and why."""
    page = response.get_data(as_text=True)
    assert response.status_code == 400, page
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert f"<code>{error}</code>" in page
    assert description in page
    return page


def _authorize_page(client: FlaskClient, client_id: str, redirect_uri: str = REDIRECT) -> Any:
    _verifier, challenge = pkce_pair()
    params = authorization_params({"client_id": client_id, "redirect_uris": [redirect_uri]},
                                  challenge)
    return client.get("/authorize", query_string=params)


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_advertises_cimd(client: FlaskClient) -> None:
    doc = client.get("/.well-known/oauth-authorization-server").get_json()
    assert doc["client_id_metadata_document_supported"] is True


# --- the whole flow -----------------------------------------------------------------------------


def test_code_flow_with_pkce_for_a_cimd_client(client: FlaskClient, cimd: TLSServer,
                                               signed_in: str) -> None:
    registered = _serve(cimd)
    page = _authorize_page(client, registered["client_id"])
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "localhost" in html and "Unverified" in html  # CIMD-06: its host, unverified
    body = code_flow(client, registered)
    _header, claims = decode_access_token(client, body["access_token"])
    assert claims["client_id"] == registered["client_id"]
    assert claims["sub"] == signed_in
    refreshed = token_request(client, registered, grant_type="refresh_token",
                              refresh_token=body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()


def test_loopback_redirect_port_may_vary(client: FlaskClient, cimd: TLSServer,
                                         signed_in: str) -> None:
    """RFC 8252 §7.3, as for registered clients: only the port of a loopback URI varies."""
    registered = _serve(cimd)
    assert _authorize_page(client, registered["client_id"],
                           "http://127.0.0.1:50001/callback").status_code == 200


def test_private_key_jwt_cimd_client(client: FlaskClient, cimd: TLSServer,
                                     signed_in: str) -> None:
    key = ec_key()
    registered = _serve(cimd, token_endpoint_auth_method="private_key_jwt",
                        jwks=public_jwks(key))
    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge)
    code = authorize(client, params)
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": registered["client_id"],
        **assertion_form(client_assertion(key, registered["client_id"]))})
    assert response.status_code == 200, response.get_json()
    without = token_request(client, {**registered, "token_endpoint_auth_method": "none"},
                            grant_type="client_credentials")
    assert_token_error(without, 401, "invalid_client")


def test_document_gone_at_the_token_endpoint_is_invalid_client(
        client: FlaskClient, cimd: TLSServer, signed_in: str, clock: TestClock) -> None:
    """Fail closed: once the cached document expires, a client whose document is no longer
    served cannot redeem its code."""
    registered = _serve(cimd)
    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge)
    code = authorize(client, params)
    cimd.routes[PATH] = Route(status=404, body=b"")
    clock.advance(CACHE_CEILING + 1)
    response = token_request(client, registered, grant_type="authorization_code", code=code,
                             redirect_uri=REDIRECT, code_verifier=verifier)
    assert_token_error(response, 401, "invalid_client")


# --- one test per rejection -------------------------------------------------------------------


def test_http_url_refused(client: FlaskClient, cimd: TLSServer, signed_in: str) -> None:
    registered = _serve(cimd)
    url = registered["client_id"].replace("https://", "http://")
    _refused(_authorize_page(client, url), URL)
    assert cimd.requests == []


def test_fragment_refused(client: FlaskClient, cimd: TLSServer, signed_in: str) -> None:
    registered = _serve(cimd)
    _refused(_authorize_page(client, registered["client_id"] + "#frag"), URL)
    assert cimd.requests == []


@pytest.mark.parametrize("path", ["/", "/a/../client.json", "/a/./client.json",
                                  "/a/%2e%2e/client.json", "/client.json?v=1"])
def test_malformed_client_id_url_refused(client: FlaskClient, cimd: TLSServer, signed_in: str,
                                         path: str) -> None:
    """No path, dot segments (also percent-encoded), a query (SHOULD NOT: refused here)."""
    _refused(_authorize_page(client, cimd.url(path)), URL)
    assert cimd.requests == []


def test_mismatched_client_id_refused(client: FlaskClient, cimd: TLSServer,
                                      signed_in: str) -> None:
    registered = _serve(cimd, client_id=cimd.url("/other.json"))
    _refused(_authorize_page(client, registered["client_id"]), DOCUMENT)


def test_client_id_differing_only_in_case_refused(client: FlaskClient, cimd: TLSServer,
                                                  signed_in: str) -> None:
    """Simple string comparison (RFC 3986 §6.2.1), not normalisation."""
    registered = _serve(cimd, client_id=cimd.url(PATH, host="LOCALHOST"))
    _refused(_authorize_page(client, registered["client_id"]), DOCUMENT)


def test_oversize_document_refused(client: FlaskClient, cimd: TLSServer,
                                   signed_in: str) -> None:
    registered = _serve(cimd, client_name="x" * 200,
                        contacts=["a" * 500] * (CIMD_MAX_BYTES // 500 + 1))
    _refused(_authorize_page(client, registered["client_id"]), FETCH)


def test_redirect_refused(client: FlaskClient, cimd: TLSServer, signed_in: str) -> None:
    registered = _serve(cimd, "/elsewhere.json")
    cimd.routes[PATH] = Route(status=302, headers={"Location": registered["client_id"]})
    _refused(_authorize_page(client, cimd.url(PATH)), FETCH)
    assert [p for _m, p, _h in cimd.requests] == [PATH]


def test_private_address_refused(app: Flask, client: FlaskClient, tls_server: TLSServer,
                                 clock: TestClock, signed_in: str) -> None:
    """Without the loopback-issuer allowance, a document on 127.0.0.1 is never fetched."""
    _trust(app, tls_server, clock, allow_internal=False)
    registered = _serve(tls_server)
    _refused(_authorize_page(client, registered["client_id"]), FETCH)
    assert tls_server.requests == []


def test_unknown_redirect_uri_refused(client: FlaskClient, cimd: TLSServer,
                                      signed_in: str) -> None:
    registered = _serve(cimd)
    _refused(_authorize_page(client, registered["client_id"], "https://evil.example/cb"),
             "Invalid redirect_uri", "invalid_request")


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"x"',
                                  b'{"client_id": "a", "client_id": "b"}'])
def test_bad_json_refused(client: FlaskClient, cimd: TLSServer, signed_in: str,
                          body: bytes) -> None:
    _serve(cimd, body=body)
    _refused(_authorize_page(client, cimd.url(PATH)), DOCUMENT)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post",
                                    "client_secret_jwt", "tls_client_auth"])
def test_secret_auth_method_refused(client: FlaskClient, cimd: TLSServer, signed_in: str,
                                    method: str) -> None:
    registered = _serve(cimd, token_endpoint_auth_method=method)
    _refused(_authorize_page(client, registered["client_id"]), DOCUMENT)


def test_client_secret_in_document_refused(client: FlaskClient, cimd: TLSServer,
                                           signed_in: str) -> None:
    registered = _serve(cimd, client_secret="s3cret")
    _refused(_authorize_page(client, registered["client_id"]), DOCUMENT)


def test_private_key_jwt_without_keys_refused(client: FlaskClient, cimd: TLSServer,
                                              signed_in: str) -> None:
    registered = _serve(cimd, token_endpoint_auth_method="private_key_jwt")
    _refused(_authorize_page(client, registered["client_id"]), DOCUMENT)


@pytest.mark.parametrize("grant", ["client_credentials",
                                   "urn:ietf:params:oauth:grant-type:token-exchange"])
def test_grants_beyond_the_code_flow_refused(client: FlaskClient, cimd: TLSServer,
                                             signed_in: str, grant: str) -> None:
    """A self-published client gets the code flow (and refresh) only: nobody vetted it for
    client credentials or the agent exchange."""
    key = ec_key()
    registered = _serve(cimd, token_endpoint_auth_method="private_key_jwt",
                        jwks=public_jwks(key), grant_types=["authorization_code", grant])
    _refused(_authorize_page(client, registered["client_id"]), DOCUMENT)


def test_error_status_refused_and_not_cached(client: FlaskClient, cimd: TLSServer,
                                             signed_in: str) -> None:
    registered = _serve(cimd, status=500)
    _refused(_authorize_page(client, registered["client_id"]), FETCH)
    _serve(cimd)
    assert _authorize_page(client, registered["client_id"]).status_code == 200


def test_unknown_plain_client_id_still_unknown(client: FlaskClient, signed_in: str) -> None:
    """Ids that are not URLs are looked up as before, never fetched."""
    _refused(_authorize_page(client, "cli_nobody"), "Unknown client", "invalid_request")
