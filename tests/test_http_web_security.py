"""Browser-side defences of the user pages (issue 12): security headers set in one place, no
open redirect after sign-in, server-side sessions that sign-out really ends, throttled
sign-in / registration / token requests shared across instances, HTML error pages and a
favicon. Time comes from a test clock, never the wall clock."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from authserver import create_app
from tests.conftest import REDIS_URL, delete_prefixed
from tests.http_helpers import (
    ISSUER,
    PASSWORD,
    RESOURCE,
    USERNAME,
    app,
    basic_auth,
    client,
    confidential_client,
    create_local_user,
    form_with,
    login,
    redis_url,
    user_id,
)
from tests.stack import IDP_NAME, Stack, intent, make_stack, mandate

FIXTURES = (app, client, redis_url, user_id)

DAY = 86_400
#: 06:30:00 UTC on a day far from now: Retry-After depends on the time of day (windows are
#: aligned to UTC days), so throttling tests run at this fixed instant.
FIXED_NOW = (1_800_000_000 // DAY + 1) * DAY + 23_400
COOKIE = "authserver_session"
#: These tests sign in many times in a row; the throttling tests set their own limits.
ROOMY = {name: {"limit": 10_000, "window": 60}
         for name in ("sign_in_account", "sign_in_address", "register", "token",
                      "token_address")}


@pytest.fixture
def app_config(tmp_path: Any, database_url: str, redis_url: str) -> dict[str, Any]:
    return {"data_dir": str(tmp_path / "data"), "testing": True, "issuer": ISSUER,
            "database_url": database_url, "redis_url": redis_url,
            "redis_key_prefix": f"test:{uuid.uuid4().hex}:", "resources": (RESOURCE,),
            "rate_limits": ROOMY}


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    s = make_stack(tmp_path, extra_settings={"rate_limits": {
        **ROOMY, "destructive": {"limit": 1000, "window": 60}}})
    yield s
    s.close()


class FixedClock:
    def __init__(self, now: int = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return float(self.now)


def signed_in_client(app: Flask) -> FlaskClient:
    c = app.test_client()
    login(c, USERNAME, PASSWORD)
    return c


def session_cookie(c: FlaskClient) -> str:
    cookie = c.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def with_cookie(app: Flask, value: str) -> FlaskClient:
    """A second browser holding a copy of someone's session cookie."""
    other = app.test_client()
    other.set_cookie(COOKIE, value, domain="localhost")
    return other


# --- 1. headers, in one place, on every HTML page --------------------------------------------


def assert_page_defences(response: Any) -> None:
    headers = response.headers
    assert headers["Content-Type"].startswith("text/html"), headers["Content-Type"]
    csp = headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["form-action"][0] == "'self'"
    assert "script-src" not in directives  # default-src 'none': no script at all
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in headers  # http issuer (loopback)
    html = response.get_data(as_text=True)
    assert "<script" not in html and "<style" not in html and " style=" not in html


SIGNED_IN_PAGES = ("/connections", "/approvals", "/activity", "/agents", "/approvals/apr_none",
                   "/no-such-page")
#: What a browser sends: unrouted paths answer a page only to a client that prefers HTML.
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def test_every_html_page_carries_the_defences(client: FlaskClient, user_id: str) -> None:
    anonymous = client.get("/login")
    assert anonymous.status_code == 200
    assert_page_defences(anonymous)
    registered = confidential_client(client, redirect_uris=["https://client.example.com/cb"])
    login(client, USERNAME, PASSWORD)
    for path in SIGNED_IN_PAGES:
        assert_page_defences(client.get(path, headers=BROWSER))
    consent = client.get("/authorize", query_string={
        "response_type": "code", "client_id": registered["client_id"],
        "redirect_uri": "https://client.example.com/cb", "scope": "read", "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"})
    assert consent.status_code == 200
    assert_page_defences(consent)
    # The consent form's decision redirects to the client: form-action allows exactly it.
    assert "https://client.example.com" in consent.headers["Content-Security-Policy"]


def test_api_responses_get_the_generic_defences(client: FlaskClient) -> None:
    for response in (client.get("/.well-known/oauth-authorization-server"),
                     client.post("/token", data={"grant_type": "client_credentials"}),
                     client.get("/token")):
        assert response.mimetype == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert client.get("/jwks.json").headers["Cache-Control"].startswith("public")


@pytest.fixture
def https_app(tmp_path: Any) -> Iterator[Flask]:
    application = create_app({"data_dir": str(tmp_path / "data"), "testing": True,
                              "issuer": "https://auth.example.com"})
    yield application
    application.extensions["authserver"].db.engine.dispose()


def test_hsts_when_the_issuer_is_https(https_app: Flask) -> None:
    response = https_app.test_client().get("/login", base_url="https://auth.example.com")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    api = https_app.test_client().get("/jwks.json", base_url="https://auth.example.com")
    assert "Strict-Transport-Security" in api.headers


def test_no_version_banner(stack: Stack) -> None:
    for path in ("/login", "/jwks.json", "/nothing-here"):
        response = requests.get(stack.issuer + path, timeout=10)
        server = response.headers["Server"]
        assert "Werkzeug" not in server and "Python" not in server, server
        assert not re.search(r"\d", server), server


def test_a_frame_of_the_approval_page_is_refused(stack: Stack) -> None:
    delete = mandate({"platform": "crm", "actions": ["read", "delete"], "resources": ["deal:*"],
                      "max_count": 1}, request="Delete the Acme deal")
    alice = stack.signed_in_and_connected("alice", ("crm",))
    assertion, key = stack.edge_mint("alice", delete)
    resp = stack.agent_exchange(assertion, key,
                                intent=intent("delete", "deal:acme-123",
                                              request="Delete the Acme deal"))
    assert resp.status_code == 403 and resp.json()["error"] == "approval_required", resp.text
    page = alice.get(resp.json()["approval_uri"], timeout=10)
    assert page.status_code == 200
    # A browser refuses to render a page in a frame when either of these says so.
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_the_stylesheet_and_favicon_are_static_files(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert href is not None
    css = client.get(href.group(1))
    assert css.status_code == 200 and css.mimetype == "text/css"
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.mimetype.startswith("image/")


# --- 2. redirects after sign-in stay on our origin -------------------------------------------


HOSTILE_NEXT = [
    "//example.com", "//example.com/path", "/\\example.com", "\\\\example.com",
    "/\t/example.com", "/\n/example.com", "/\r\n/example.com", "/ /example.com",
    "https://example.com", "http://example.com", "HTTPS://example.com",
    "javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x",
    "%2F%2Fexample.com", "/%2F/example.com", "/%5Cexample.com", "/%09/example.com",
    "/%0A/example.com", "/%252F%252Fexample.com", "https:example.com", "https:/example.com",
    "///example.com", "/\x00/example.com", "/\u3000/example.com", "example.com", "",
    "\x00", "/" + "a" * 10_000,
]


def lands_on_our_origin(location: str) -> bool:
    """What a browser does with a Location: it drops tabs and newlines, and treats '\\' like
    '/'. After that the target must still be a path on the issuer."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/").strip()
    target = urlsplit(urljoin(ISSUER + "/login", cleaned))
    return (target.scheme, target.netloc) == ("http", "127.0.0.1:8000") and \
        cleaned.startswith("/") and not cleaned.startswith("//")


@pytest.mark.parametrize("nxt", HOSTILE_NEXT)
def test_safe_next_only_accepts_same_origin_paths(nxt: str) -> None:
    from authserver.http.web import safe_redirect_path

    assert safe_redirect_path(nxt, "/") == "/"


@pytest.mark.parametrize("nxt", ["/connections", "/approvals/apr_123", "/authorize?a=1&b=%2F",
                                 "/agents#top"])
def test_safe_next_keeps_our_paths(nxt: str) -> None:
    from authserver.http.web import safe_redirect_path

    assert safe_redirect_path(nxt, "/") == nxt


def test_local_sign_in_never_redirects_off_origin(app: Flask, user_id: str) -> None:
    for nxt in HOSTILE_NEXT:
        c = app.test_client()
        page = c.get("/login", query_string={"next": nxt})
        if "\x00" in nxt:  # refused at the boundary, before any page (any route)
            assert page.status_code == 400
            continue
        assert page.status_code == 200, (nxt, page.status_code)
        form = form_with(page.get_data(as_text=True), "username", action="/login")
        assert lands_on_our_origin(form["fields"]["next"]), (nxt, form["fields"]["next"])
        done = c.post("/login", data={"csrf_token": form["fields"]["csrf_token"], "next": nxt,
                                      "username": USERNAME, "password": PASSWORD})
        assert done.status_code == 302, (nxt, done.status_code)
        assert lands_on_our_origin(done.headers["Location"]), (nxt, done.headers["Location"])


def test_idp_sign_in_never_redirects_off_origin(stack: Stack) -> None:
    from authserver.demo.browser import csrf_from

    for nxt in (n for n in HOSTILE_NEXT if "\x00" not in n):
        browser = requests.Session()
        page = browser.get(stack.issuer + "/login", timeout=10)
        start = browser.post(stack.issuer + f"/login/{IDP_NAME}", data={
            "csrf_token": csrf_from(page.text), "next": nxt, "login_hint": "alice"},
            allow_redirects=False, timeout=10)
        assert start.status_code == 302, (nxt, start.status_code)
        at_idp = browser.get(start.headers["Location"], allow_redirects=False, timeout=10)
        callback = browser.get(at_idp.headers["Location"], allow_redirects=False, timeout=10)
        assert callback.status_code == 302, (nxt, callback.status_code, callback.text)
        location = callback.headers["Location"]
        cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
        target = urlsplit(urljoin(stack.issuer + "/", cleaned))
        assert f"{target.scheme}://{target.netloc}" == stack.issuer, (nxt, location)


# --- 3. server-side sessions -------------------------------------------------------------------


def test_the_cookie_carries_only_a_random_session_id(client: FlaskClient, user_id: str) -> None:
    login(client, USERNAME, PASSWORD)
    value = session_cookie(client)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value), value
    assert user_id not in value


def test_a_copied_cookie_no_longer_works_after_sign_out(app: Flask, user_id: str) -> None:
    alice = signed_in_client(app)
    stolen = session_cookie(alice)
    thief = with_cookie(app, stolen)
    assert thief.get("/connections").status_code == 200
    page = alice.get("/connections").get_data(as_text=True)
    out = alice.post("/logout", data={"csrf_token": form_with(page, "csrf_token",
                                                              action="/logout")["fields"]
                                      ["csrf_token"]})
    assert out.status_code == 302
    after = thief.get("/connections")
    assert after.status_code == 302 and "/login" in after.headers["Location"]


def test_sign_out_everywhere_ends_every_session_of_the_user(app: Flask, user_id: str) -> None:
    laptop, phone = signed_in_client(app), signed_in_client(app)
    bob_id = create_local_user(app, "bob", PASSWORD)
    bob = app.test_client()
    login(bob, "bob", PASSWORD)
    assert bob_id and phone.get("/connections").status_code == 200
    page = laptop.get("/connections").get_data(as_text=True)
    form = form_with(page, "csrf_token", action="/logout/everywhere")
    done = laptop.post("/logout/everywhere", data={"csrf_token": form["fields"]["csrf_token"]})
    assert done.status_code == 302
    assert phone.get("/connections").status_code == 302
    assert laptop.get("/connections").status_code == 302
    assert bob.get("/connections").status_code == 200  # only alice's sessions end
    login(phone, USERNAME, PASSWORD)  # signing in again works at once
    assert phone.get("/connections").status_code == 200


def test_deprovisioning_ends_the_session_records(app: Flask, user_id: str) -> None:
    from authserver.deprovisioning import deprovision
    from authserver.models import User

    alice = signed_in_client(app)
    services = app.extensions["authserver"]
    deprovision(services, user_id, now=FIXED_NOW, correlation_id=None)
    with services.db.session() as session:  # even if the account came back
        user = session.get(User, user_id)
        user.active, user.tokens_valid_after = True, 0
    assert alice.get("/connections").status_code == 302


def test_session_id_is_rotated_at_sign_in(app: Flask, user_id: str) -> None:
    c = app.test_client()
    c.get("/login")
    before = session_cookie(c)
    login(c, USERNAME, PASSWORD)
    after = session_cookie(c)
    assert after != before
    # The pre-sign-in id (which an attacker could have planted) is not signed in, and is gone.
    planted = with_cookie(app, before)
    assert planted.get("/connections").status_code == 302


def test_a_forged_or_unknown_session_id_is_a_fresh_anonymous_session(app: Flask,
                                                                     user_id: str) -> None:
    for value in ("A" * 43, "not a session", "x" * 5000):
        c = with_cookie(app, value)
        assert c.get("/connections").status_code == 302


@pytest.fixture
def clocked(tmp_path: Any) -> Iterator[tuple[Flask, FixedClock]]:
    clock = FixedClock()
    application = create_app({"data_dir": str(tmp_path / "data"), "testing": True,
                              "issuer": ISSUER}, clock=clock)
    create_local_user(application, USERNAME, PASSWORD)
    yield application, clock
    application.extensions["authserver"].db.engine.dispose()


def test_idle_lifetime(clocked: tuple[Flask, FixedClock]) -> None:
    from authserver.config import SESSION_IDLE_TTL

    application, clock = clocked
    c = signed_in_client(application)
    clock.now += SESSION_IDLE_TTL - 1
    assert c.get("/connections").status_code == 200  # activity keeps it alive
    clock.now += SESSION_IDLE_TTL - 1
    assert c.get("/connections").status_code == 200
    clock.now += SESSION_IDLE_TTL
    assert c.get("/connections").status_code == 302


def test_absolute_lifetime(clocked: tuple[Flask, FixedClock]) -> None:
    from authserver.config import SESSION_IDLE_TTL, SESSION_TTL

    application, clock = clocked
    c = signed_in_client(application)
    start = clock.now
    while clock.now + SESSION_IDLE_TTL // 2 < start + SESSION_TTL:
        clock.now += SESSION_IDLE_TTL // 2
        assert c.get("/connections").status_code == 200
    clock.now = start + SESSION_TTL
    assert c.get("/connections").status_code == 302


# --- 4. throttling, shared across instances ------------------------------------------------------

LIMIT = 3
#: 4 counted of 3 at 06:30 UTC in a day-long window: the rest of the day (63,000 s), then
#: until the weight of today's 4 falls enough for one more (43,200 s).
RETRY_AFTER = 63_000 + 43_200


@pytest.fixture
def two_instances(tmp_path: Any) -> Iterator[tuple[Flask, Flask]]:
    limits = {name: {"limit": LIMIT, "window": DAY}
              for name in ("sign_in_account", "sign_in_address", "register", "token",
                           "token_address")}
    settings = {"data_dir": str(tmp_path / "data"), "testing": True, "issuer": ISSUER,
                "database_url": f"sqlite:///{tmp_path}/shared.db", "redis_url": REDIS_URL,
                "redis_key_prefix": f"test:{uuid.uuid4().hex}:",
                "secret_key": "s" * 40, "rate_limits": limits}
    clock = FixedClock()
    first = create_app(settings, clock=clock)
    second = create_app(settings, clock=clock)
    yield first, second
    for application in (first, second):
        application.extensions["authserver"].db.engine.dispose()
    delete_prefixed(REDIS_URL, str(settings["redis_key_prefix"]))


def _attempt(c: FlaskClient, username: str, password: str = "wrong",
             addr: str = "203.0.113.7") -> Any:
    page = c.get("/login", environ_base={"REMOTE_ADDR": addr})
    form = form_with(page.get_data(as_text=True), "username", action="/login")
    return c.post("/login", data={"csrf_token": form["fields"]["csrf_token"],
                                  "username": username, "password": password},
                  environ_base={"REMOTE_ADDR": addr})


def test_sign_in_attempts_per_account_across_instances(
        two_instances: tuple[Flask, Flask]) -> None:
    first, second = two_instances
    create_local_user(first, USERNAME, PASSWORD)
    clients = [first.test_client(), second.test_client()]
    for i in range(LIMIT):  # from different addresses: only the account budget is shared
        assert _attempt(clients[i % 2], USERNAME, addr=f"203.0.113.{i}").status_code == 401
    limited = _attempt(clients[1], USERNAME, PASSWORD, addr="198.51.100.1")
    assert limited.status_code == 429  # even the right password: the account is throttled
    assert limited.headers["Retry-After"] == str(RETRY_AFTER)
    assert limited.mimetype == "text/html"
    assert_page_defences(limited)
    # Another account from a fresh address is not affected.
    assert _attempt(clients[0], "someone-else", addr="198.51.100.2").status_code == 401


def test_sign_in_attempts_per_address_across_instances(
        two_instances: tuple[Flask, Flask]) -> None:
    first, second = two_instances
    clients = [first.test_client(), second.test_client()]
    for i in range(LIMIT):
        assert _attempt(clients[i % 2], f"user{i}").status_code == 401
    limited = _attempt(clients[1], "user-new")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == str(RETRY_AFTER)
    assert _attempt(clients[0], "user-new", addr="198.51.100.9").status_code == 401


def test_idp_sign_in_start_is_throttled_per_address(two_instances: tuple[Flask, Flask]) -> None:
    first, _ = two_instances
    c = first.test_client()
    for _ in range(LIMIT):
        page = c.get("/login")
        token = form_with(page.get_data(as_text=True), "username", action="/login")
        c.post("/login/corp", data={"csrf_token": token["fields"]["csrf_token"]})
    page = c.get("/login")
    token = form_with(page.get_data(as_text=True), "username", action="/login")
    limited = c.post("/login/corp", data={"csrf_token": token["fields"]["csrf_token"]})
    assert limited.status_code == 429 and "Retry-After" in limited.headers


def test_registration_is_throttled_across_instances(two_instances: tuple[Flask, Flask]) -> None:
    clients = [a.test_client() for a in two_instances]
    metadata = {"client_name": "x", "redirect_uris": ["https://client.example.com/cb"]}
    for i in range(LIMIT):
        assert clients[i % 2].post("/register", json=metadata).status_code == 201
    limited = clients[1].post("/register", json=metadata)
    assert limited.status_code == 429
    assert limited.get_json()["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == str(RETRY_AFTER)
    assert limited.headers["Cache-Control"] == "no-store"


def test_token_requests_are_throttled_per_client_across_instances(
        two_instances: tuple[Flask, Flask]) -> None:
    clients = [a.test_client() for a in two_instances]
    registered = clients[0].post("/register", json={
        "client_name": "svc", "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic"}).get_json()
    auth = basic_auth(registered["client_id"], registered["client_secret"])
    for i in range(LIMIT):
        ok = clients[i % 2].post("/token", data={"grant_type": "client_credentials"},
                                 headers=auth, environ_base={"REMOTE_ADDR": f"192.0.2.{i}"})
        assert ok.status_code == 200, ok.get_json()
    limited = clients[1].post("/token", data={"grant_type": "client_credentials"},
                              headers=auth, environ_base={"REMOTE_ADDR": "192.0.2.99"})
    assert limited.status_code == 429
    assert limited.get_json()["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == str(RETRY_AFTER)


def test_token_requests_are_throttled_per_address(two_instances: tuple[Flask, Flask]) -> None:
    c = two_instances[0].test_client()
    for i in range(LIMIT):  # a different (unknown) client each time: the address is the key
        c.post("/token", data={"grant_type": "client_credentials", "client_id": f"c{i}"})
    limited = c.post("/token", data={"grant_type": "client_credentials", "client_id": "c9"})
    assert limited.status_code == 429 and limited.get_json()["error"] == "rate_limited"


def test_default_limits_are_named_and_configurable() -> None:
    from authserver.ratelimit import DEFAULT_LIMITS

    for name in ("sign_in_account", "sign_in_address", "register", "token", "token_address"):
        assert DEFAULT_LIMITS[name].limit > 0


# --- 5. HTML error pages on user routes, JSON on the API -----------------------------------------


def test_error_pages_are_html_on_user_routes(client: FlaskClient, user_id: str) -> None:
    missing = client.get("/no-such-page", headers=BROWSER)
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    assert "Page not found" in missing.get_data(as_text=True)
    assert client.get("/no-such-page").mimetype == "application/json"  # an API client
    login(client, USERNAME, PASSWORD)
    approval = client.get("/approvals/apr_none")
    assert approval.status_code == 404 and approval.mimetype == "text/html"
    bad = client.post("/approvals/apr_none", data={"decision": "approve"})
    assert bad.status_code == 400 and bad.mimetype == "text/html"
    assert 'href="/"' in bad.get_data(as_text=True)  # a way back


@pytest.mark.parametrize("method,path", [
    ("GET", "/token"), ("GET", "/register"), ("POST", "/introspect"), ("POST", "/revoke"),
    ("GET", "/gateway/nowhere/x"), ("GET", "/admin/audit"), ("GET", "/.well-known/nothing"),
    ("GET", "/jwks.json/x"),
])
def test_errors_stay_json_on_api_routes(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code >= 400
    assert response.mimetype == "application/json", (path, response.mimetype)
