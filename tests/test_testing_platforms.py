"""The fake platforms (authserver.testing.crm / .projects) behave like real OAuth providers.

Real HTTP on loopback ports, driven with `requests`; time is a settable clock, never sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from authserver.testing.crm import CRM, INJECTION_NOTE, start_crm
from authserver.testing.platforms import OAuthProvider
from authserver.testing.projects import Projects, start_projects

NOW = 1_800_000_000
TTL = 60
CLIENT_ID = "broker"
CLIENT_SECRET = "broker-secret"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: redirects are not followed


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def crm(clock: Clock) -> Iterator[CRM]:
    provider, _, server = start_crm(access_token_ttl=TTL, clock=clock)
    provider.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    yield provider
    server.stop()


@pytest.fixture
def projects(clock: Clock) -> Iterator[Projects]:
    provider, _, server = start_projects(access_token_ttl=TTL, clock=clock)
    provider.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    yield provider
    server.stop()


def url(provider: OAuthProvider, name: str) -> str:
    value = provider.urls[name]
    assert value is not None
    return value


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(provider: OAuthProvider, user: str, challenge: str, **extra: str) -> dict[str, Any]:
    """GET the authorize endpoint with login_hint; return the redirect's query parameters."""
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "login_hint": user,
        **extra,
    }
    response = requests.get(url(provider, "authorize"), params=params, allow_redirects=False)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def token_request(provider: OAuthProvider, path: str = "token", **form: str) -> requests.Response:
    """POST with the provider's own client authentication method."""
    if provider.quirks.client_auth_method == "client_secret_basic":
        return requests.post(url(provider, path), data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    form = {**form, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return requests.post(url(provider, path), data=form)


def connect(provider: OAuthProvider, user: str, **extra: str) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    code = authorize(provider, user, challenge, **extra)["code"]
    response = token_request(
        provider,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(provider: OAuthProvider, refresh_token: str) -> requests.Response:
    return token_request(provider, grant_type="refresh_token", refresh_token=refresh_token)


def api(method: str, url: str, access_token: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.request(method, url, headers=headers, **kwargs)


def deal_url(crm: CRM, path: str) -> str:
    return f"{url(crm, 'api_base')}/{path}"


# --- authorization endpoint and code grant (shared core, exercised through the CRM) -------------


def test_code_flow_with_pkce_reaches_the_api(crm: CRM) -> None:
    verifier, challenge = pkce_pair()
    redirect = authorize(crm, "alice", challenge)
    assert redirect["state"] == "st-1"
    response = token_request(
        crm,
        grant_type="authorization_code",
        code=redirect["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == TTL
    assert body["scope"] == "deals.read deals.write"
    assert body["refresh_token"]
    me = api("GET", deal_url(crm, "me"), body["access_token"])
    assert me.json()["username"] == "alice"
    assert crm.stats["authorization_code"] == 1


def test_authorize_redirect_uri_mismatch_is_not_redirected(crm: CRM) -> None:
    _, challenge = pkce_pair()
    response = requests.get(
        url(crm, "authorize"),
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI + "/evil",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "login_hint": "alice",
        },
        allow_redirects=False,
    )
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_authorize_without_pkce_redirects_invalid_request(crm: CRM) -> None:
    redirect = authorize(crm, "alice", "", code_challenge_method="")
    assert redirect["error"] == "invalid_request"
    assert redirect["state"] == "st-1"


def test_authorize_without_login_hint_shows_form_that_approves(crm: CRM) -> None:
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "st-2",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    form = requests.get(url(crm, "authorize"), params=params)
    assert form.status_code == 200
    assert "<option>alice</option>" in form.text
    assert "<option>bob</option>" in form.text
    submitted = requests.post(
        url(crm, "authorize"),
        data={**params, "username": "bob", "decision": "approve"},
        allow_redirects=False,
    )
    assert submitted.status_code == 302
    query = parse_qs(urlsplit(submitted.headers["Location"]).query)
    assert query["state"] == ["st-2"] and query["code"]


def test_reused_code_is_invalid_grant_and_revokes_its_tokens(crm: CRM) -> None:
    verifier, challenge = pkce_pair()
    code = authorize(crm, "alice", challenge)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    first = token_request(crm, **form)
    second = token_request(crm, **form)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert api("GET", deal_url(crm, "me"), first.json()["access_token"]).status_code == 401


def test_wrong_code_verifier_is_invalid_grant(crm: CRM) -> None:
    _, challenge = pkce_pair()
    code = authorize(crm, "alice", challenge)["code"]
    response = token_request(
        crm,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        code_verifier=pkce_pair()[0],
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_crm_rejects_client_secret_post(crm: CRM) -> None:
    response = requests.post(
        url(crm, "token"),
        data={
            "grant_type": "refresh_token",
            "refresh_token": "x",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="acme-crm"'


# --- CRM API: per-user permissions ----------------------------------------------------------


def test_deal_of_another_user_is_forbidden(crm: CRM) -> None:
    bob = connect(crm, "bob")["access_token"]
    response = api("GET", deal_url(crm, "deals/acme-123"), bob)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "AclDenied" in response.json()["detail"]  # internal-looking text the broker must hide


def test_stale_deals_are_only_the_callers(crm: CRM) -> None:
    alice = connect(crm, "alice")["access_token"]
    deals = api("GET", deal_url(crm, "deals"), alice, params={"stage": "stale"}).json()["deals"]
    assert [d["id"] for d in deals] == ["globex-7"]


def test_only_the_owner_may_delete_a_deal(crm: CRM) -> None:
    alice = connect(crm, "alice")["access_token"]
    bob = connect(crm, "bob")["access_token"]
    assert api("DELETE", deal_url(crm, "deals/globex-7"), bob).status_code == 403
    assert api("DELETE", deal_url(crm, "deals/globex-7"), alice).status_code == 204
    assert "globex-7" not in crm.deals


def test_owner_patches_a_deal(crm: CRM) -> None:
    alice = connect(crm, "alice")["access_token"]
    response = api("PATCH", deal_url(crm, "deals/globex-7"), alice, json={"stage": "closed"})
    assert response.json()["stage"] == "closed"


def test_notes_carry_the_prompt_injection(crm: CRM) -> None:
    alice = connect(crm, "alice")["access_token"]
    notes = api("GET", deal_url(crm, "deals/acme-123/notes"), alice).json()["notes"]
    assert INJECTION_NOTE in [n["body"] for n in notes]


def test_write_without_write_scope_is_insufficient_scope(crm: CRM) -> None:
    reader = connect(crm, "alice", scope="deals.read")["access_token"]
    response = api("DELETE", deal_url(crm, "deals/globex-7"), reader)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"


def test_missing_token_is_401_without_error_code(crm: CRM) -> None:
    response = requests.get(deal_url(crm, "me"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="acme-crm"'


def test_expired_access_token_is_invalid_token(crm: CRM, clock: Clock) -> None:
    token = connect(crm, "alice")["access_token"]
    clock.now += TTL
    response = api("GET", deal_url(crm, "me"), token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="acme-crm", error="invalid_token"'


def test_admin_expire_endpoint_expires_live_tokens(crm: CRM) -> None:
    token = connect(crm, "alice")["access_token"]
    base_url = crm.base_url
    assert requests.post(f"{base_url}/_admin/expire").status_code == 200
    assert api("GET", deal_url(crm, "me"), token).status_code == 401
    stats = requests.get(f"{base_url}/_admin/stats").json()
    assert stats["api_unauthorized"] == 1


# --- CRM refresh-token rotation and revocation ------------------------------------------------


def test_crm_refresh_rotates_the_refresh_token(crm: CRM) -> None:
    first = connect(crm, "alice")
    response = refresh(crm, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert api("GET", deal_url(crm, "me"), second["access_token"]).status_code == 200
    assert crm.stats["refresh"] == 1


def test_crm_reused_refresh_token_revokes_the_grant(crm: CRM) -> None:
    first = connect(crm, "alice")
    second = refresh(crm, first["refresh_token"]).json()
    reuse = refresh(crm, first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert refresh(crm, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert api("GET", deal_url(crm, "me"), second["access_token"]).status_code == 401
    assert crm.stats["refresh_reuse"] == 1
    assert crm.stats["active_grants"] == 0


def test_crm_revoking_the_refresh_token_revokes_the_grant(crm: CRM) -> None:
    tokens = connect(crm, "alice")
    response = token_request(
        crm, "revoke", token=tokens["refresh_token"], token_type_hint="refresh_token"
    )
    assert response.status_code == 200
    assert api("GET", deal_url(crm, "me"), tokens["access_token"]).status_code == 401
    assert refresh(crm, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert crm.stats["revoked"] == 1


def test_crm_revoking_another_clients_token_is_ignored(crm: CRM) -> None:
    tokens = connect(crm, "alice")
    crm.register_client("other", "other-secret", [REDIRECT_URI])
    response = requests.post(
        url(crm, "revoke"), data={"token": tokens["access_token"]}, auth=("other", "other-secret")
    )
    assert response.status_code == 200
    assert api("GET", deal_url(crm, "me"), tokens["access_token"]).status_code == 200
    assert crm.stats["revoked"] == 0


# --- Taskboard quirks ---------------------------------------------------------------------------


def test_projects_token_has_instance_url_and_no_expires_in(projects: Projects) -> None:
    tokens = connect(projects, "alice")
    assert "expires_in" not in tokens
    assert tokens["instance_url"] == f"{projects.base_url}/ws/acme-ws"
    boards = api("GET", f"{tokens['instance_url']}/api/boards", tokens["access_token"])
    assert [b["id"] for b in boards.json()["boards"]] == ["42"]


def test_projects_refresh_does_not_rotate(projects: Projects) -> None:
    tokens = connect(projects, "alice")
    first = refresh(projects, tokens["refresh_token"]).json()
    assert "refresh_token" not in first
    assert "expires_in" not in first
    assert refresh(projects, tokens["refresh_token"]).status_code == 200
    assert projects.stats["refresh"] == 2


def test_projects_rejects_client_secret_basic(projects: Projects) -> None:
    response = requests.post(
        url(projects, "token"),
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_projects_owner_creates_a_task(projects: Projects) -> None:
    tokens = connect(projects, "alice")
    tasks_url = f"{tokens['instance_url']}/api/boards/42/tasks"
    created = api("POST", tasks_url, tokens["access_token"], json={"title": "Ship it"})
    assert created.status_code == 201
    listed = api("GET", tasks_url, tokens["access_token"]).json()["tasks"]
    assert created.json() in listed


def test_projects_task_on_another_users_board_is_forbidden(projects: Projects) -> None:
    tokens = connect(projects, "bob")
    tasks_url = f"{tokens['instance_url']}/api/boards/42/tasks"
    response = api("POST", tasks_url, tokens["access_token"], json={"title": "x"})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_projects_has_no_revocation_endpoint_by_default(projects: Projects) -> None:
    assert projects.urls["revoke"] is None
    response = requests.post(f"{projects.base_url}/oauth2/revoke", data={"token": "x"})
    assert response.status_code == 404


def test_projects_revocation_when_enabled(clock: Clock) -> None:
    provider, _, server = start_projects(revocation=True, clock=clock)
    try:
        provider.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
        tokens = connect(provider, "alice")
        assert token_request(provider, "revoke", token=tokens["refresh_token"]).status_code == 200
        boards_url = f"{tokens['instance_url']}/api/boards"
        assert api("GET", boards_url, tokens["access_token"]).status_code == 401
    finally:
        server.stop()
