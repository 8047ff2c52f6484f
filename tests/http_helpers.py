"""Fixtures and helpers for the HTTP-level OAuth tests (Flask test client, real app factory).

Import the fixtures explicitly in a test module:
`from tests.http_helpers import app, client  # noqa: F401`.

`app` is `create_app` on a fresh data dir, over the conftest `database_url` (SQLite and
PostgreSQL). The shared store is the embedded one by default; tests where the store matters
(replay caches, reuse detection) add `@STORES` to run on Redis too.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from werkzeug.security import generate_password_hash

from tests.conftest import REDIS_URL, base_settings, running_app

ISSUER = "http://127.0.0.1:8000"
RESOURCE = "https://api.example.com/mcp"
REDIRECT_URI = "https://client.example.com/cb"
USERNAME = "alice"
PASSWORD = "correct horse battery staple"

#: Run a test on the embedded store and on Redis (db 15): replay caches, reuse detection.
STORES = pytest.mark.parametrize("redis_url", ["", REDIS_URL], ids=["memory", "redis"])


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The store under test: "" = embedded. Overridden by `@STORES`."""
    return ""


@pytest.fixture
def app_config(tmp_path: Any, database_url: str, redis_url: str) -> dict[str, Any]:
    """Settings for `app` (conftest `base_settings` at `ISSUER`, with `RESOURCE`); a test may
    override this fixture to add settings."""
    return {**base_settings(tmp_path, database_url, redis_url, issuer=ISSUER),
            "resources": (RESOURCE,)}


@pytest.fixture
def app(app_config: dict[str, Any], clock: Any) -> Iterator[Flask]:
    """The app over `app_config` on the test's `clock` (conftest `running_app`)."""
    with running_app(app_config, clock) as application:
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def user_id(app: Flask) -> str:
    return create_local_user(app, USERNAME, PASSWORD)


@pytest.fixture
def signed_in(client: FlaskClient, user_id: str) -> str:
    """A browser session signed in as alice; returns her user id."""
    login(client, USERNAME, PASSWORD)
    return user_id


# --- registration and client authentication ----------------------------------------------------


def register_client(client: FlaskClient, **metadata: Any) -> dict[str, Any]:
    """RFC 7591 registration; returns the 201 body (client_id, client_secret if any, ...)."""
    response = client.post("/register", json=metadata)
    assert response.status_code == 201, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def confidential_client(client: FlaskClient, **metadata: Any) -> dict[str, Any]:
    """A client_secret_basic client for code, refresh and client credentials."""
    defaults: dict[str, Any] = {
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    return register_client(client, **{**defaults, **metadata})


def public_client(client: FlaskClient, **metadata: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "redirect_uris": ["http://127.0.0.1:8765/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    }
    return register_client(client, **{**defaults, **metadata})


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: both parts form-urlencoded before base64."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def auth_for(registered: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, form fields) that authenticate `registered` with its registered method."""
    method = registered["token_endpoint_auth_method"]
    if method == "client_secret_basic":
        return basic_auth(registered["client_id"], registered["client_secret"]), {}
    if method == "client_secret_post":
        return {}, {"client_id": registered["client_id"],
                    "client_secret": registered["client_secret"]}
    if method == "none":
        return {}, {"client_id": registered["client_id"]}
    raise AssertionError(f"no helper for {method}")


def token_request(client: FlaskClient, registered: Mapping[str, Any], **form: Any) -> Any:
    headers, fields = auth_for(registered)
    return client.post("/token", data={**fields, **form}, headers=headers)


def introspect(client: FlaskClient, registered: Mapping[str, Any], token: str) -> dict[str, Any]:
    headers, fields = auth_for(registered)
    response = client.post("/introspect", data={**fields, "token": token}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def revoke(client: FlaskClient, registered: Mapping[str, Any], token: str, **form: Any) -> Any:
    headers, fields = auth_for(registered)
    return client.post("/revoke", data={**fields, "token": token, **form}, headers=headers)


# --- private_key_jwt (RFC 7523 §2.2) ------------------------------------------------------------


def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


def public_jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def client_assertion(
    key: Any, client_id: str, *, aud: Any = ISSUER, alg: str = "ES256", now: int | None = None,
    **claims: Any,
) -> str:
    now = int(time.time()) if now is None else now
    body: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now,
                            "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    header = {"alg": alg}
    if getattr(key, "kid", None):
        header["kid"] = key.kid
    return jwt.encode(header, body, key, algorithms=[alg])


def assertion_form(assertion: str) -> dict[str, str]:
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


# --- users and the browser ----------------------------------------------------------------------


def create_local_user(app: Flask, username: str, password: str) -> str:
    from authserver.models import User

    user_id = "usr_" + secrets.token_urlsafe(12)
    with app.extensions["authserver"].db.session() as session:
        session.add(User(
            id=user_id, idp_issuer="local", idp_subject=username, name=username,
            password_hash=generate_password_hash(password), created_at=int(time.time()),
        ))
    return user_id


class _FormParser(HTMLParser):
    """Collects every form's action and its named input/button values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "fields": {}, "multi": {}})
        elif tag == "input" and self.forms and a.get("name"):
            fields = self.forms[-1]["fields"]
            multi = self.forms[-1]["multi"]
            name = str(a["name"])
            multi.setdefault(name, []).append(a.get("value") or "")
            fields[name] = a.get("value") or ""


def parse_forms(html: str) -> list[dict[str, Any]]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def form_with(html: str, field: str, action: str | None = None) -> dict[str, Any]:
    for form in parse_forms(html):
        if field in form["fields"] and (action is None or form["action"] == action):
            return form
    raise AssertionError(f"no form with a {field!r} field")


def login(client: FlaskClient, username: str, password: str) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    form = form_with(page.get_data(as_text=True), "username", action="/login")
    response = client.post("/login", data={
        "csrf_token": form["fields"]["csrf_token"], "next": form["fields"].get("next", "/"),
        "username": username, "password": password,
    })
    assert response.status_code == 302, response.status_code


def consent_form(client: FlaskClient, params: Mapping[str, Any]) -> dict[str, Any]:
    """GET /authorize (signed in) and return the consent form's fields (lists: repeats)."""
    page = client.get("/authorize", query_string=params)
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    form = form_with(page.get_data(as_text=True), "csrf_token", action="/authorize")
    return form["multi"]  # type: ignore[no-any-return]


def decide(client: FlaskClient, params: Mapping[str, Any], decision: str = "allow") -> Any:
    """Show consent for `params`, then POST the user's decision; returns the response."""
    fields = consent_form(client, params)
    return client.post("/authorize", data={**fields, "decision": decision})


def redirect_params(response: Any) -> dict[str, str]:
    """The query parameters of a redirect's Location (one value each)."""
    assert response.status_code in (302, 303), response.status_code
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_params(registered: Mapping[str, Any], challenge: str, **extra: Any
                         ) -> dict[str, Any]:
    params: dict[str, Any] = {
        "response_type": "code",
        "client_id": registered["client_id"],
        "redirect_uri": registered["redirect_uris"][0],
        "scope": "read",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def authorize(client: FlaskClient, params: Mapping[str, Any]) -> str:
    """The whole browser leg for a signed-in user: consent, allow, the code from Location."""
    response = decide(client, params)
    assert response.status_code == 303
    query = redirect_params(response)
    assert query.get("state") == params.get("state")
    assert query["iss"] == ISSUER
    return query["code"]


def code_flow(client: FlaskClient, registered: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Authorize and redeem a code; returns the token response body."""
    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge, **extra)
    code = authorize(client, params)
    response = token_request(client, registered, grant_type="authorization_code", code=code,
                             redirect_uri=params["redirect_uri"], code_verifier=verifier)
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


# --- tokens -------------------------------------------------------------------------------------


def decode_access_token(client: Any, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify one of our JWTs against the published JWKS, as any resource server would; return
    (header, claims). `client` is the Flask test client, or a loopback `Stack`
    (tests/stack.py), whose JWKS is fetched over HTTP (the stack modules' `claims_of`)."""
    if isinstance(client, FlaskClient):
        published = client.get("/jwks.json").get_json()
    else:
        import requests

        published = requests.get(client.issuer + "/jwks.json", timeout=10).json()
    decoded = jwt.decode(token, KeySet.import_key_set(published), algorithms=["ES256"])
    return dict(decoded.header), dict(decoded.claims)


def assert_token_error(response: Any, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: status, code, JSON, no-store; 401 carries a challenge."""
    body = response.get_json()
    assert response.status_code == status, (response.status_code, body)
    assert body["error"] == error, body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    if status == 401:
        assert response.headers.get("WWW-Authenticate")
    return body  # type: ignore[no-any-return]


def assert_refusal(response: Any, status: int, error: str, description: str | None, *,
                   headers: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """A refusal, checked so that it cannot pass for another reason: status, `error` and the
    exact `error_description` the server sends for that check (RFC 6749 §5.2; None: it sends
    none), JSON,
    `Cache-Control: no-store`, a challenge on a 401, and each of `headers` exactly (None: the
    header is absent). Works for a Flask test response and a `requests` response."""
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body.get("error") == error, body
    assert body.get("error_description") == description, body
    assert "access_token" not in body, body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    if status == 401:
        assert response.headers.get("WWW-Authenticate"), dict(response.headers)
    for name, value in (headers or {}).items():
        assert response.headers.get(name) == value, (name, dict(response.headers))
    return body


#: The line the error handler logs for every refusal (authserver/http/errors.py), with the
#: check's internal reason as `debug`: it tells apart refusals that share one description.
REJECTION_LOGGER = "authserver.errors"


def rejection_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The `debug` of each refusal the server logged during this test's call ("" when the
    check gave none). The server must run in this process (tests/stack.py, the test client)
    and the test must have set `caplog.set_level("INFO", logger=REJECTION_LOGGER)`."""
    return [str(getattr(r, "debug", "")) for r in caplog.records
            if r.name == REJECTION_LOGGER and r.getMessage().startswith("request rejected")]


def assert_rejected_because(caplog: pytest.LogCaptureFixture, debug: str) -> None:
    """The last refusal the server logged was for `debug` (its internal reason, never sent)."""
    reasons = rejection_reasons(caplog)
    assert reasons and reasons[-1] == debug, reasons
