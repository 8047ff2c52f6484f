"""RFC 9449 §8 server nonces at the token endpoint, and proofs from an independent client.

https://www.rfc-editor.org/rfc/rfc9449#section-8 — rule IDs DPOP-10, DPOP-30..34 are
defined in docs/standards.md. Setting `dpop_nonce`: off | all | per_client (client attribute
`dpop_nonce`, set by the admin CLI).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from requests_oauth2client import ClientSecretBasic, DPoPKey, DPoPToken, OAuth2Client

from authserver import create_app
from authserver.config import DPOP_NONCE_TTL
from authserver.testing.server import ServerThread
from tests.dpop_helpers import (
    TOKEN_ENDPOINT,
    ProofKey,
    app_config,
    settings_overrides,
    with_settings,
)
from tests.http_helpers import (
    app,
    assert_token_error,
    auth_for,
    client,
    decode_access_token,
    redis_url,
    register_client,
)

NQCHARS = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 9449 §8.1: 1*NQCHAR

NONCE_ALL = with_settings(dpop_nonce="all")
NONCE_PER_CLIENT = with_settings(dpop_nonce="per_client")

# pytest finds these fixtures by name in this module; listing them marks the imports used.
FIXTURES = (app, app_config, client, redis_url, settings_overrides)


def cc(client: FlaskClient, registered: dict[str, Any], dpop: str | None = None) -> Any:
    auth_headers, fields = auth_for(registered)
    headers = {**auth_headers, **({"DPoP": dpop} if dpop is not None else {})}
    return client.post("/token", data={**fields, "grant_type": "client_credentials"},
                       headers=headers)


def nonce_issuer(app: Flask) -> Any:
    return app.extensions["authserver"].nonces


def assert_use_dpop_nonce(response: Any) -> str:
    """DPOP-30: 400 use_dpop_nonce with exactly one fresh DPoP-Nonce (1*NQCHAR); returns it."""
    body = assert_token_error(response, 400, "use_dpop_nonce")
    assert "access_token" not in body
    nonces = response.headers.getlist("DPoP-Nonce")
    assert len(nonces) == 1, nonces
    assert NQCHARS.match(nonces[0])
    assert response.headers["Access-Control-Expose-Headers"] == "DPoP-Nonce, WWW-Authenticate"
    return nonces[0]


def assert_bound_with_fresh_nonce(client: FlaskClient, app: Flask, response: Any,
                                  key: ProofKey, used: str | None) -> str:
    """200, DPoP-bound, one fresh valid DPoP-Nonce pushed (DPOP-32); returns it."""
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["token_type"] == "DPoP"
    assert decode_access_token(client, body["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    pushed = response.headers.getlist("DPoP-Nonce")
    assert len(pushed) == 1, pushed
    assert pushed[0] != used
    assert nonce_issuer(app).is_valid(pushed[0], int(time.time()))
    assert response.headers["Cache-Control"] == "no-store"  # DPOP-32: uncacheable
    assert response.headers["Access-Control-Expose-Headers"] == "DPoP-Nonce, WWW-Authenticate"
    return pushed[0]


@pytest.fixture
def cc_client(client: FlaskClient) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"], scope="read")


@pytest.fixture
def key() -> ProofKey:
    return ProofKey()


# --- dpop_nonce = "all" -------------------------------------------------------------------------


@NONCE_ALL
def test_proof_without_nonce_is_use_dpop_nonce(client: FlaskClient, cc_client: dict,
                                               key: ProofKey) -> None:
    # DPOP-10/30: the first request learns the nonce from exactly one DPoP-Nonce header.
    assert_use_dpop_nonce(cc(client, cc_client, key.proof(TOKEN_ENDPOINT)))


@NONCE_ALL
def test_retry_with_nonce_succeeds_and_pushes_a_fresh_nonce(
        app: Flask, client: FlaskClient, cc_client: dict, key: ProofKey) -> None:
    nonce = assert_use_dpop_nonce(cc(client, cc_client, key.proof(TOKEN_ENDPOINT)))
    response = cc(client, cc_client, key.proof(TOKEN_ENDPOINT, nonce=nonce))
    pushed = assert_bound_with_fresh_nonce(client, app, response, key, nonce)
    # The pushed nonce works for the next request, which pushes yet another one.
    again = cc(client, cc_client, key.proof(TOKEN_ENDPOINT, nonce=pushed))
    assert_bound_with_fresh_nonce(client, app, again, key, pushed)


@NONCE_ALL
def test_proof_without_nonce_after_nonce_was_issued_is_use_dpop_nonce(
        app: Flask, client: FlaskClient, cc_client: dict, key: ProofKey) -> None:
    # DPOP-33 (§11.3 downgrade): once nonces are in use, a nonce-less proof is refused.
    nonce = assert_use_dpop_nonce(cc(client, cc_client, key.proof(TOKEN_ENDPOINT)))
    ok = cc(client, cc_client, key.proof(TOKEN_ENDPOINT, nonce=nonce))
    assert_bound_with_fresh_nonce(client, app, ok, key, nonce)
    assert_use_dpop_nonce(cc(client, cc_client, key.proof(TOKEN_ENDPOINT)))


@NONCE_ALL
def test_proof_with_stale_nonce_is_use_dpop_nonce(app: Flask, client: FlaskClient,
                                                  cc_client: dict, key: ProofKey) -> None:
    # DPOP-30: a nonce of ours whose lifetime is over gets a fresh one back.
    stale = nonce_issuer(app).issue(int(time.time()) - DPOP_NONCE_TTL - 30)
    fresh = assert_use_dpop_nonce(cc(client, cc_client, key.proof(TOKEN_ENDPOINT, nonce=stale)))
    assert fresh != stale


@NONCE_ALL
@pytest.mark.parametrize("nonce", ["unknown-nonce", "A" * 66, "\u00e9t\u00e9"],
                         ids=["opaque", "nonce-shaped", "non-ascii"])
def test_proof_with_unknown_nonce_is_use_dpop_nonce(client: FlaskClient, cc_client: dict,
                                                    key: ProofKey, nonce: str) -> None:
    # DPOP-30: a nonce we never issued.
    assert_use_dpop_nonce(cc(client, cc_client, key.proof(TOKEN_ENDPOINT, nonce=nonce)))


@NONCE_ALL
def test_one_nonce_policy_for_the_origin(app: Flask, client: FlaskClient, cc_client: dict,
                                         key: ProofKey) -> None:
    """DPOP-33 (issue 14): the token endpoint and the gateway share our origin, and clients
    (oauth4webapi) keep one nonce per origin, so both use one nonce context: a nonce the
    gateway handed out is good at the token endpoint, and the reverse."""
    services = app.extensions["authserver"]
    assert services.gateway_nonces is services.nonces
    gateway_nonce = services.gateway_nonces.issue(int(time.time()))
    response = cc(client, cc_client, key.proof(TOKEN_ENDPOINT, nonce=gateway_nonce))
    assert response.status_code == 200, response.get_json()


@NONCE_ALL
def test_invalid_proof_with_nonces_on_is_still_invalid_dpop_proof(
        app: Flask, client: FlaskClient, cc_client: dict, key: ProofKey) -> None:
    # Nonces do not soften §4.3: a valid nonce in a proof with a wrong htm is refused.
    nonce = nonce_issuer(app).issue(int(time.time()))
    response = cc(client, cc_client, key.proof(TOKEN_ENDPOINT, htm="GET", nonce=nonce))
    body = assert_token_error(response, 400, "invalid_dpop_proof")
    assert body["error_description"] == "DPoP proof htm does not match the request method"


@NONCE_ALL
def test_client_without_dpop_gets_bearer_with_nonces_on(client: FlaskClient,
                                                        cc_client: dict) -> None:
    # Nonces apply to proofs; a client allowed bearer tokens is not asked for one.
    response = cc(client, cc_client)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "Bearer"


# --- dpop_nonce = "per_client" ------------------------------------------------------------------


def admin_registered_client(app: Flask, attributes: dict[str, Any]) -> dict[str, Any]:
    """A client_credentials client created the way `authserver clients create` does."""
    from authserver.clients import register_client as create_client
    from authserver.clients import registration_response, validate_client_metadata

    services = app.extensions["authserver"]
    metadata = validate_client_metadata(
        {"grant_types": ["client_credentials"], "scope": "read",
         "token_endpoint_auth_method": "client_secret_basic"},
        scopes=services.settings.scopes)
    with services.db.session() as session:
        row, secret = create_client(session, metadata, now=int(time.time()),
                                    attributes=attributes)
        return registration_response(row, secret)


@NONCE_PER_CLIENT
def test_per_client_nonce_is_asked_of_that_client(app: Flask, client: FlaskClient,
                                                  key: ProofKey) -> None:
    registered = admin_registered_client(app, {"dpop_nonce": True})
    nonce = assert_use_dpop_nonce(cc(client, registered, key.proof(TOKEN_ENDPOINT)))
    response = cc(client, registered, key.proof(TOKEN_ENDPOINT, nonce=nonce))
    assert_bound_with_fresh_nonce(client, app, response, key, nonce)


@NONCE_PER_CLIENT
def test_per_client_nonce_is_not_asked_of_other_clients(app: Flask, client: FlaskClient,
                                                        key: ProofKey) -> None:
    admin_registered_client(app, {"dpop_nonce": True})
    other = admin_registered_client(app, {})
    response = cc(client, other, key.proof(TOKEN_ENDPOINT))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"


def test_nonce_attribute_is_ignored_when_nonces_are_off(app: Flask, client: FlaskClient,
                                                       key: ProofKey) -> None:
    registered = admin_registered_client(app, {"dpop_nonce": True})
    response = cc(client, registered, key.proof(TOKEN_ENDPOINT))
    assert response.status_code == 200, response.get_json()
    assert "DPoP-Nonce" not in response.headers  # off: nothing pushed


# --- an independent client: requests-oauth2client's DPoP support over real HTTP ---------------


class _Deferred:
    """WSGI indirection: the server's port is needed to configure the app it serves."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture
def served(tmp_path: Any, database_url: str, settings_overrides: dict[str, Any]
           ) -> Iterator[str]:
    """The app on a loopback port, its issuer being its own base URL; returns that URL."""
    deferred = _Deferred()
    server = ServerThread(deferred)
    deferred.app = create_app({"data_dir": str(tmp_path / "data"), "testing": True,
                               "issuer": server.base_url, "database_url": database_url,
                               **settings_overrides})
    base_url = server.start()
    try:
        yield base_url
    finally:
        server.stop()
        deferred.app.extensions["authserver"].db.engine.dispose()


def oauth2_client(base_url: str) -> OAuth2Client:
    registered = requests.post(base_url + "/register", json={
        "grant_types": ["client_credentials"], "scope": "read",
        "token_endpoint_auth_method": "client_secret_basic"}, timeout=10)
    assert registered.status_code == 201, registered.text
    body = registered.json()
    # testing=True: the library otherwise refuses plain http, even on loopback.
    return OAuth2Client(token_endpoint=base_url + "/token",
                        auth=ClientSecretBasic(body["client_id"], body["client_secret"]),
                        introspection_endpoint=base_url + "/introspect", testing=True)


def test_requests_oauth2client_proof_is_accepted(served: str) -> None:
    rp = oauth2_client(served)
    dpop_key = DPoPKey.generate(alg="ES256")
    token = rp.client_credentials(scope="read", dpop=True, dpop_key=dpop_key)
    assert isinstance(token, DPoPToken)
    assert token.token_type == "DPoP"
    info = rp.introspect_token(token.access_token)
    assert info["cnf"] == {"jkt": dpop_key.dpop_jkt}
    assert info["token_type"] == "DPoP"


@NONCE_ALL
def test_requests_oauth2client_follows_use_dpop_nonce(served: str) -> None:
    # The library retries with the nonce from our one DPoP-Nonce header (RFC 9449 §8 flow).
    rp = oauth2_client(served)
    dpop_key = DPoPKey.generate(alg="ES256")
    token = rp.client_credentials(scope="read", dpop=True, dpop_key=dpop_key)
    assert token.token_type == "DPoP"
    assert dpop_key.as_nonce  # it learnt the nonce from the server
    assert rp.introspect_token(token.access_token)["cnf"] == {"jkt": dpop_key.dpop_jkt}
