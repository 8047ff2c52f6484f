"""User pages: sign-in hygiene (cookies, CSRF, fixation), deprovisioned sessions, the Agents
page and withdrawing an agent."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from tests.http_helpers import (
    PASSWORD,
    USERNAME,
    app,
    app_config,
    client,
    form_with,
    login,
    parse_forms,
    redis_url,
    user_id,
)
from tests.stack import Stack, stack

FIXTURES = (app, app_config, client, redis_url, user_id, stack)


def _session_cookie(client: FlaskClient) -> Any:
    cookie = client.get_cookie("authserver_session")
    assert cookie is not None
    return cookie


def test_session_cookie_is_httponly_and_samesite(client: FlaskClient, user_id: str) -> None:
    page = client.get("/login")
    header = page.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header
    # A browser-session cookie: the server's clock alone ends the session (idle, absolute).
    assert "Expires" not in header and "Max-Age" not in header


def test_login_without_csrf_token_is_refused(client: FlaskClient, user_id: str) -> None:
    response = client.post("/login", data={"username": USERNAME, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/connections").status_code == 302  # still signed out


def test_wrong_password_is_refused_without_saying_why(client: FlaskClient, user_id: str) -> None:
    page = client.get("/login")
    form = form_with(page.get_data(as_text=True), "username", action="/login")
    response = client.post("/login", data={"csrf_token": form["fields"]["csrf_token"],
                                           "username": USERNAME, "password": "wrong"})
    assert response.status_code == 401
    assert "Sign-in failed." in response.get_data(as_text=True)


def test_signing_in_replaces_the_session(client: FlaskClient, user_id: str) -> None:
    # Session fixation: nothing set before sign-in (here the CSRF token) survives it.
    client.get("/login")
    with client.session_transaction() as before:
        planted = before["csrf"]
        before["planted"] = "by an attacker"
    login(client, USERNAME, PASSWORD)
    with client.session_transaction() as after:
        assert after["uid"] == user_id
        assert after["csrf"] != planted and "planted" not in after


def test_deprovisioning_ends_browser_sessions(app: Any, client: FlaskClient,
                                              user_id: str) -> None:
    from authserver.deprovisioning import deprovision

    login(client, USERNAME, PASSWORD)
    assert client.get("/connections").status_code == 200
    services = app.extensions["authserver"]
    import time

    deprovision(services, user_id, now=int(time.time()) + 1, correlation_id=None)
    response = client.get("/connections")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_withdrawing_an_agent_kills_its_tokens_for_that_user(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    browser = stack.signed_in_and_connected("alice")
    assertion, key = stack.edge_mint("alice")
    assert stack.agent_exchange(assertion, key).status_code == 200
    page = browser.get(stack.issuer + "/agents", timeout=10)
    assert page.status_code == 200 and stack.agent.client_id in page.text
    withdraw_url = f"/agents/{stack.agent.client_id}/withdraw"
    assert f'href="{withdraw_url}"' in page.text
    # Withdraw asks first: the confirm page's form is the only one that withdraws.
    confirm = browser.get(stack.issuer + withdraw_url, timeout=10)
    [form] = [f for f in parse_forms(confirm.text) if f["action"] == withdraw_url]
    assert form["fields"]["confirmed"] == "yes"
    stack.shift_clock(monkeypatch, 1)  # epochs are whole seconds: withdraw a second later
    unconfirmed = browser.post(stack.issuer + withdraw_url,
                               data={"csrf_token": form["fields"]["csrf_token"]}, timeout=10)
    assert unconfirmed.status_code == 200 and urlsplit(unconfirmed.url).path == withdraw_url
    assert stack.agent_exchange(assertion, key).status_code == 200  # not withdrawn yet
    done = browser.post(stack.issuer + withdraw_url, data=form["fields"], timeout=10)
    assert done.status_code == 200 and "withdrawn" in done.text
    # A withdrawn agent offers no Withdraw, and a repeated POST records nothing more.
    assert f'href="{withdraw_url}"' not in done.text
    again_post = browser.post(stack.issuer + withdraw_url, data=form["fields"], timeout=10)
    assert "already withdrawn" in again_post.text
    assert sum(e["event"] == "agent_withdrawn" for e in stack.audit()) == 1
    again = stack.agent_exchange(assertion, key)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    assert any(e["event"] == "agent_withdrawn" for e in stack.audit())


def test_withdrawing_an_agent_stops_the_agent_it_delegated_to(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20, finding 4: A designates B (`may_act`), B narrows the assertion to itself;
    withdrawing A must stop B too, since A is in the `act` chain of everything B holds."""
    from tests.stack import TT_JWT

    browser = stack.signed_in_and_connected("alice")
    assertion, key_a = stack.edge_mint("alice")
    agent_b, key_b = stack.register_agent(), stack.dpop_key()
    designated = stack.agent_exchange(
        assertion, key_a, audience=None, intent=None,
        actor_token=agent_b.assertion(stack.issuer), actor_token_type=TT_JWT,
        dpop_jkt=key_b.dpop_jkt)
    assert designated.status_code == 200, designated.text
    own = stack.agent_exchange(designated.json()["access_token"], key_b, agent=agent_b,
                               audience=None, intent=None)
    assert own.status_code == 200, own.text
    b_assertion = own.json()["access_token"]
    capability = stack.agent_exchange(b_assertion, key_b, agent=agent_b)
    assert capability.status_code == 200, capability.text
    page = browser.get(stack.issuer + f"/agents/{stack.agent.client_id}/withdraw", timeout=10)
    [form] = [f for f in parse_forms(page.text)
              if f["action"].endswith(f"/agents/{stack.agent.client_id}/withdraw")]
    stack.shift_clock(monkeypatch, 1)  # epochs are whole seconds: withdraw a second later
    done = browser.post(stack.issuer + form["action"], data=form["fields"], timeout=10)
    assert done.status_code == 200
    again = stack.agent_exchange(b_assertion, key_b, agent=agent_b)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    assert again.headers["Cache-Control"] == "no-store"
    # The capability B already holds dies at the gateway as well.
    cap = capability.json()["access_token"]
    resp = stack.gateway(cap, key_b, "GET", "crm/deals/acme-123")
    assert resp.status_code == 401, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
