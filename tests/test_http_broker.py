"""The credential broker over real HTTP: the connect flow (RFC 6749 §4.1 + RFC 7636, state
bound to the signed-in session, RFC 9700 §4.7), disconnect (RFC 7009) and deprovisioning
through the admin API, each proven at the gateway on the very next call and at the platforms
through their `/_admin/stats`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import tests.stack as stack_module
from authserver.demo.browser import csrf_from
from authserver.testing.projects import start_projects
from tests.gateway_helpers import capability
from tests.stack import Stack, intent, make_stack

HTTP_TIMEOUT = 30


@pytest.fixture
def stack(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """tests/stack.py, but Taskboard runs with its RFC 7009 endpoint (and is configured to use
    it), so that deprovisioning can be observed at both platforms."""
    original = stack_module.platform_settings

    def with_revocation(*args: Any) -> dict[str, Any]:
        settings = original(*args)
        projects = settings["projects"]
        projects["revocation_url"] = projects["token_url"].replace("/token", "/revoke")
        projects["profile_overrides"] = {k: v for k, v in projects["profile_overrides"].items()
                                         if k != "supports_revocation"}
        return settings

    monkeypatch.setattr(stack_module, "start_projects",
                        lambda **kw: start_projects(revocation=True, **kw))
    monkeypatch.setattr(stack_module, "platform_settings", with_revocation)
    s = make_stack(tmp_path)
    yield s
    s.close()


def stats(base_url: str) -> dict[str, int]:
    resp = requests.get(base_url + "/_admin/stats", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    return resp.json()  # type: ignore[no-any-return]


def crm_base(stack: Stack) -> str:
    return str(stack.crm.base_url)


def projects_base(stack: Stack) -> str:
    return str(stack.projects.base_url)


def start_connect(stack: Stack, browser: requests.Session, platform: str, username: str
                  ) -> str:
    """POST connect, then let the platform sign `username` in; returns OUR callback URL (with
    code and state), not yet visited."""
    page = browser.get(stack.issuer + "/connections", timeout=HTTP_TIMEOUT)
    resp = browser.post(stack.issuer + f"/connections/{platform}/connect", data={
        "csrf_token": csrf_from(page.text), "login_hint": username,
    }, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert resp.status_code in (302, 303), resp.status_code
    authorize = resp.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"][0]
    at_platform = requests.get(authorize, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert at_platform.status_code == 302
    callback = at_platform.headers["Location"]
    assert callback.startswith(stack.issuer + f"/connections/{platform}/callback?")
    return str(callback)


def read_capability(stack: Stack, username: str = "alice") -> tuple[str, Any]:
    return capability(stack, username, intent("read", "deal:acme-123"))


# --- connecting -------------------------------------------------------------------------------


def test_connect_flow_stores_a_grant_the_gateway_uses(stack):
    browser = stack.browser("alice")
    callback = start_connect(stack, browser, "crm", "alice")
    resp = browser.get(callback, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200 and urlsplit(resp.url).path == "/connections"
    token, key = read_capability(stack)
    assert stack.gateway(token, key, "GET", "crm/deals/acme-123").status_code == 200


def test_connect_callback_in_another_users_session_is_rejected(stack):
    alice = stack.browser("alice")
    callback = start_connect(stack, alice, "crm", "alice")
    bob = stack.browser("bob")
    resp = bob.get(callback, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400
    assert "invalid_request" in resp.text
    # Neither user got a connection out of it (the state is spent, too).
    assert alice.get(callback, allow_redirects=False, timeout=HTTP_TIMEOUT).status_code == 400
    for username in ("alice", "bob"):
        assertion, key = stack.edge_mint(username)
        refused = stack.agent_exchange(assertion, key, intent=intent("read", "deal:acme-123"))
        assert refused.status_code == 403
        assert refused.json()["error"] == "connection_required"


def test_connect_callback_in_another_session_of_the_same_user_is_rejected(stack):
    first = stack.browser("alice")
    callback = start_connect(stack, first, "crm", "alice")
    second = stack.browser("alice")
    resp = second.get(callback, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400
    assert "invalid_request" in resp.text


def test_connect_callback_without_a_session_goes_to_sign_in(stack):
    alice = stack.browser("alice")
    callback = start_connect(stack, alice, "crm", "alice")
    resp = requests.get(callback, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert resp.status_code in (302, 303)
    assert urlsplit(resp.headers["Location"]).path == "/login"


def test_connect_callback_replayed_is_rejected(stack):
    alice = stack.browser("alice")
    callback = start_connect(stack, alice, "crm", "alice")
    assert alice.get(callback, timeout=HTTP_TIMEOUT).status_code == 200
    resp = alice.get(callback, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400
    assert "invalid_request" in resp.text


def test_connect_without_csrf_token_is_rejected(stack):
    alice = stack.browser("alice")
    resp = alice.post(stack.issuer + "/connections/crm/connect", data={"login_hint": "alice"},
                      allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert resp.status_code in (400, 403)
    assert "Location" not in resp.headers


def test_exchange_without_a_connection_is_connection_required(stack):
    stack.browser("alice")
    assertion, key = stack.edge_mint("alice")
    resp = stack.agent_exchange(assertion, key, intent=intent("read", "deal:acme-123"))
    assert resp.status_code == 403
    body = resp.json()
    assert body["error"] == "connection_required"
    assert body["connect_uri"] == stack.issuer + "/connections/crm/connect"


# --- disconnecting ----------------------------------------------------------------------------


def test_disconnect_kills_the_capability_token_on_its_next_use(stack):
    browser = stack.signed_in_and_connected("alice", ("crm",))
    token, key = read_capability(stack)
    assert stack.gateway(token, key, "GET", "crm/deals/acme-123").status_code == 200
    before = stats(crm_base(stack))
    page = browser.get(stack.issuer + "/connections", timeout=HTTP_TIMEOUT)
    resp = browser.post(stack.issuer + "/connections/crm/disconnect",  # its confirm page's form
                        data={"csrf_token": csrf_from(page.text), "confirmed": "yes"},
                        timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200 and urlsplit(resp.url).path == "/connections"

    after = stack.gateway(token, key, "GET", "crm/deals/acme-123")
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["WWW-Authenticate"]
    # Refused by the connection's revocation epoch (read with the proof's replay entry).
    assert "The connection behind this token was revoked" in after.headers["WWW-Authenticate"]
    crm = stats(crm_base(stack))
    assert crm["revoked"] == before["revoked"] + 1
    assert crm["active_grants"] == before["active_grants"] - 1
    assert crm["api_request"] == before["api_request"]  # the dead call never reached the CRM
    assertion, key2 = stack.edge_mint("alice")
    refused = stack.agent_exchange(assertion, key2, intent=intent("read", "deal:acme-123"))
    assert refused.status_code == 403 and refused.json()["error"] == "connection_required"


# --- deprovisioning through the admin API -----------------------------------------------------


def test_deprovision_revokes_everywhere_and_the_next_call_fails(stack):
    stack.signed_in_and_connected("alice", ("crm", "projects"))
    token, key = read_capability(stack)
    assert stack.gateway(token, key, "GET", "crm/deals/acme-123").status_code == 200
    assertion, akey = stack.edge_mint("alice", agent_key=stack.dpop_key())
    crm_before, projects_before = stats(crm_base(stack)), stats(projects_base(stack))
    assert crm_before["active_grants"] == 1 and projects_before["active_grants"] == 1

    user_id = stack.user_id("alice")
    resp = stack.deprovision(user_id)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] == user_id
    assert body["revoked_connections"] == ["crm", "projects"]
    assert resp.headers["Cache-Control"] == "no-store"

    after = stack.gateway(token, key, "GET", "crm/deals/acme-123")
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["WWW-Authenticate"]
    exchange = stack.agent_exchange(assertion, akey, intent=intent("read", "deal:acme-123"))
    assert exchange.status_code == 400 and exchange.json()["error"] == "invalid_request"
    for base, before in ((crm_base(stack), crm_before), (projects_base(stack), projects_before)):
        now_stats = stats(base)
        assert now_stats["revoked"] == before["revoked"] + 1
        assert now_stats["active_grants"] == 0
    events = [e for e in stack.audit() if e["event"] == "deprovision"]
    assert [e["user_id"] for e in events] == [user_id]


def test_deprovision_of_an_unknown_user_is_404(stack):
    assert stack.deprovision("usr_nobody").status_code == 404


def test_admin_api_without_credentials_gets_a_bearer_challenge(stack):
    resp = requests.post(stack.issuer + "/admin/users/usr_x/deprovision", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in resp.headers["WWW-Authenticate"]


def test_admin_api_with_a_wrong_token_is_invalid_token(stack):
    resp = requests.post(stack.issuer + "/admin/users/usr_x/deprovision",
                         headers={"Authorization": "Bearer not-the-admin-token"},
                         timeout=HTTP_TIMEOUT)
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_admin_api_refuses_a_capability_token(stack):
    stack.signed_in_and_connected("alice", ("crm",))
    token, _key = read_capability(stack)
    resp = requests.post(stack.issuer + f"/admin/users/{stack.user_id('alice')}/deprovision",
                         headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
