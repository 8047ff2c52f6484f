"""A reusable end-to-end test stack: the test IdP, Acme CRM and Taskboard on loopback, and
authserver served over real HTTP, set up only through the product's interfaces.

`make_stack(tmp_path, database_url=..., redis_url=..., extra_settings=..., clock=...)` returns
a `Stack`; call `stack.close()` when done. A test module usually takes the module-scoped `stack`
fixture of tests/conftest.py instead, configured by `pytestmark = pytest.mark.stack(...)`
(make_stack's keyword arguments); the function-scoped `stack` fixture here (imported by a
module) gives each test its own. The clock (conftest `TestClock`), the settings
(`base_settings`) and the app's lifecycle (`running_app`) are the test client's own.

Client artefacts (DPoP proofs, client assertions, the edge's OIDC flow) are built with
requests-oauth2client / jwskate only, never with the server's own helpers. The IdP and the
platforms are TEST-ONLY servers that sign the `login_hint` user in without a password.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from jwskate import Jwk
from requests_oauth2client import ClientSecretBasic, DPoPKey, OAuth2Client, PrivateKeyJwt

from authserver.demo.browser import csrf_from
from authserver.testing.crm import CRM, start_crm
from authserver.testing.idp import IdP, start_idp
from authserver.testing.projects import Projects, start_projects
from authserver.testing.server import ServerThread
from authserver.testing.settings import CLIENT_ID_AT_PLATFORMS, crm_platform, projects_platform
from tests.conftest import TestClock, WholeSeconds, base_settings, running_app

IDP_NAME = "corp"
AUTHSERVER_AT_IDP = "authserver"
EDGE_AT_IDP = "chat-edge"
#: Nothing listens here: the edge reads the code from the IdP redirect's Location.
EDGE_REDIRECT_URI = "http://127.0.0.1/edge/oidc/callback"
AUTHSERVER_AT_PLATFORMS = CLIENT_ID_AT_PLATFORMS
ALL_ACTIONS = ("read", "create", "update", "delete", "bulk_update", "bulk_delete")
AGENT_PLATFORMS = ("crm", "projects")
HTTP_TIMEOUT = 30

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"


def request_hash(text: str) -> str:
    import base64

    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mandate(*grants: Mapping[str, Any], request: str = "What's the latest on the Acme deal?",
            channel: str = "chat") -> list[dict[str, Any]]:
    """An `authorization_details` array with one agent_mandate (Part A2)."""
    platforms = list(grants) or [{"platform": "crm", "actions": ["read"],
                                  "resources": ["deal:*"], "max_count": 1}]
    return [{"type": "agent_mandate", "platforms": [dict(g) for g in platforms],
             "channel": channel, "request": request, "request_hash": request_hash(request)}]


def intent(action: str = "read", resource: str = "deal:acme-123", *, count: int = 1,
           request: str = "What's the latest on the Acme deal?", channel: str = "chat",
           environment: str = "prod") -> dict[str, Any]:
    """An `intent` (Part A1)."""
    return {"action": action, "resource": resource, "count": count,
            "context": {"request": request, "channel": channel, "environment": environment}}


#: "Use the default" for parameters where None means "send nothing".
DEFAULT: Any = object()


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Deferred:
    """The authserver WSGI app, filled in once its port (the issuer) is known."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting"]
        return self.app(environ, start_response)


@dataclass
class Agent:
    client_id: str
    private_jwk: Jwk = field(repr=False)
    clock: WholeSeconds = field(default_factory=WholeSeconds, repr=False)

    def auth(self, issuer: str) -> PrivateKeyJwt:
        return PrivateKeyJwt(self.client_id, self.private_jwk, alg="ES256", aud=issuer)

    def assertion(self, issuer: str, lifetime: int = 60, **claims: Any) -> str:
        """A fresh private_key_jwt client assertion (iss=sub=client_id, aud=issuer, jti), as
        requests-oauth2client's PrivateKeyJwt makes it, but dated by the test clock."""
        from jwskate import Jwt

        now = self.clock()
        body = {"iss": self.client_id, "sub": self.client_id, "aud": issuer, "iat": now,
                "exp": now + lifetime, "jti": secrets.token_urlsafe(16), **claims}
        return str(Jwt.sign(claims={k: v for k, v in body.items() if v is not None},
                            key=self.private_jwk, alg="ES256"))


@dataclass
class Stack:
    issuer: str
    settings: dict[str, Any]
    app: Any
    services: Any
    idp: IdP
    crm: CRM
    projects: Projects
    edge_id: str
    edge_secret: str = field(repr=False)
    edge_idp_secret: str = field(repr=False)
    agent: Agent
    admin_token: str = field(repr=False)
    servers: list[ServerThread] = field(default_factory=list)
    extra_apps: list[Any] = field(default_factory=list)
    clock: WholeSeconds = field(default_factory=WholeSeconds)
    #: Sessions of the users the `stack` fixture signed in and connected (`connected=`).
    browsers: dict[str, requests.Session] = field(default_factory=dict)
    #: The apps' `running_app` contexts, closed by `close()`.
    exits: ExitStack = field(default_factory=ExitStack, repr=False)

    def shift_clock(self, monkeypatch: Any, seconds: float) -> None:
        """Move the test clock `seconds` ahead until the test ends (`monkeypatch` undoes it:
        a module's stack outlives the test): the IdP, client artefacts and this process's
        authserver instances all read it."""
        clock = self.clock.clock
        monkeypatch.setattr(clock, "offset", clock.offset + seconds)

    def freeze_clock(self, monkeypatch: Any, at: int | None = None) -> None:
        """Stop the test clock at `at` (default: the current second) until the test ends: a
        test can then make several requests at one instant, deterministically, at any time
        of day."""
        clock = self.clock.clock
        instant = self.clock() if at is None else at
        monkeypatch.setattr(clock, "offset", 0.0)
        monkeypatch.setattr(clock, "frozen", instant)

    def dpop_key(self) -> DPoPKey:
        """A new DPoP key whose proofs are dated by the test clock."""
        return DPoPKey.generate(alg="ES256", iat_generator=self.clock)

    # --- clients -----------------------------------------------------------------------------

    def register(self, metadata: Mapping[str, Any], attributes: Mapping[str, Any] | None = None
                 ) -> tuple[str, str | None]:
        """Register a client as `authserver clients create` does; returns (id, secret)."""
        from authserver.clients import register_client, validate_client_metadata

        md = validate_client_metadata(dict(metadata), scopes=self.services.settings.scopes)
        with self.services.db.session() as session:
            row, secret = register_client(session, md, now=int(time.time()),
                                          attributes=dict(attributes or {}))
            return row.client_id, secret

    def register_agent(self, *, attributes: Mapping[str, Any] | None = None,
                       grant_types: tuple[str, ...] = (GRANT_TOKEN_EXCHANGE,
                                                       "client_credentials")) -> Agent:
        key = Jwk.generate(alg="ES256").with_kid_thumbprint()
        attrs = {"allowed_platforms": list(AGENT_PLATFORMS), "allowed_actions": list(ALL_ACTIONS)}
        client_id, _ = self.register({
            "client_name": "test agent",
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": list(grant_types),
            "jwks": {"keys": [key.public_jwk().to_dict()]},
        }, attrs if attributes is None else attributes)
        return Agent(client_id, key, self.clock)

    def register_edge(self, *, trusted: bool = True) -> tuple[str, str]:
        client_id, secret = self.register({
            "client_name": "test edge",
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": [GRANT_TOKEN_EXCHANGE],
        }, {"trusted_edge": True} if trusted else {})
        assert secret is not None
        return client_id, secret

    # --- the browser -------------------------------------------------------------------------

    def browser(self, username: str) -> requests.Session:
        """A session signed in at authserver through the IdP (login_hint, no password)."""
        session = requests.Session()
        page = session.get(self.issuer + "/login", timeout=HTTP_TIMEOUT)
        assert page.status_code == 200, page.status_code
        resp = session.post(self.issuer + f"/login/{IDP_NAME}", data={
            "csrf_token": csrf_from(page.text), "next": "/connections", "login_hint": username,
        }, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200 and urlsplit(resp.url).path == "/connections", \
            (resp.status_code, resp.url)
        return session

    def connect(self, browser: requests.Session, platform: str, username: str) -> None:
        page = browser.get(self.issuer + "/connections", timeout=HTTP_TIMEOUT)
        resp = browser.post(self.issuer + f"/connections/{platform}/connect", data={
            "csrf_token": csrf_from(page.text), "login_hint": username,
        }, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200 and urlsplit(resp.url).path == "/connections", \
            (resp.status_code, resp.url)

    def user_id(self, username: str) -> str:
        """Our stable id for an IdP user (after sign-in or a mint provisioned them)."""
        from sqlalchemy import select

        from authserver.models import User

        subject = self.idp.users[username]["sub"]
        with self.services.db.session() as session:
            user = session.scalars(select(User).where(User.idp_issuer == self.idp.issuer,
                                                      User.idp_subject == subject)).first()
            assert user is not None, f"no user {username}"
            return str(user.id)

    def signed_in_and_connected(self, username: str,
                                platforms: tuple[str, ...] = ("crm",)) -> requests.Session:
        browser = self.browser(username)
        for platform in platforms:
            self.connect(browser, platform, username)
        return browser

    def approve(self, browser: requests.Session, approval_id: str, decision: str = "approve"
                ) -> requests.Response:
        """POST /approvals/<id> with the page's csrf_token (and, for a destructive or bulk
        approval, the typed confirmation the page asks for); returns the final response."""
        from authserver.demo.browser import confirm_phrase_from

        page = browser.get(self.issuer + f"/approvals/{approval_id}", timeout=HTTP_TIMEOUT)
        token = csrf_from(page.text) if page.status_code == 200 else \
            csrf_from(browser.get(self.issuer + "/approvals", timeout=HTTP_TIMEOUT).text)
        # A destructive or bulk approval asks for the record's name (its second step).
        phrase = confirm_phrase_from(page.text) if page.status_code == 200 else None
        data = {"csrf_token": token, "decision": decision}
        if phrase is not None and decision == "approve":
            data["confirm"] = phrase
        return browser.post(self.issuer + f"/approvals/{approval_id}", data=data,
                            timeout=HTTP_TIMEOUT)

    # --- the edge ----------------------------------------------------------------------------

    def idp_id_token(self, username: str) -> str:
        """A real ID token from the edge's own OIDC code flow at the IdP (PKCE, nonce)."""
        client = OAuth2Client.from_discovery_endpoint(
            issuer=self.idp.issuer, auth=ClientSecretBasic(EDGE_AT_IDP, self.edge_idp_secret),
            redirect_uri=EDGE_REDIRECT_URI, testing=True)
        request = client.authorization_request(scope="openid email profile",
                                               login_hint=username)
        resp = requests.get(str(request.uri), allow_redirects=False, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 302, resp.status_code
        callback = request.validate_callback(resp.headers["Location"])
        token = client.authorization_code(callback)
        assert token.id_token is not None
        return str(token.id_token)

    def edge_mint_response(
        self, subject_token: str, details: list[dict[str, Any]] | None, *,
        agent: Agent | None = None, dpop_jkt: str | None = None,
        edge: tuple[str, str] | None = None,
        actor_token: str | None = None, headers: Mapping[str, str] | None = None,
        drop: tuple[str, ...] = (), **extra: Any,
    ) -> requests.Response:
        """The raw edge mint POST (client_secret_basic). `drop` removes default fields."""
        agent = agent or self.agent
        client_id, secret = edge or (self.edge_id, self.edge_secret)
        form: dict[str, Any] = {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": TT_ID_TOKEN,
            "actor_token": actor_token or agent.assertion(self.issuer),
            "actor_token_type": TT_JWT,
            "dpop_jkt": dpop_jkt,
            "authorization_details": compact(details) if details is not None else None,
            **extra,
        }
        form = {k: v for k, v in form.items() if v is not None and k not in drop}
        return requests.post(self.issuer + "/token", data=form, auth=(client_id, secret),
                             headers=dict(headers or {}), timeout=HTTP_TIMEOUT)

    def edge_mint(self, username: str, details: list[dict[str, Any]] | None = None, *,
                  agent_key: DPoPKey | None = None, agent: Agent | None = None
                  ) -> tuple[str, DPoPKey]:
        """A user assertion for `username`, bound to the agent's DPoP key (new if None)."""
        key = agent_key or self.dpop_key()
        resp = self.edge_mint_response(self.idp_id_token(username),
                                       mandate() if details is None else details,
                                       agent=agent, dpop_jkt=str(key.dpop_jkt))
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"], key

    # --- the agent ---------------------------------------------------------------------------

    def dpop_proof(self, key: DPoPKey, htm: str = "POST", htu: str | None = None, *,
                   ath: str | None = None, nonce: str | None = None) -> str:
        return str(key.proof(htm, htu or self.issuer + "/token", ath=ath, nonce=nonce))

    def agent_exchange(
        self, assertion: str, dpop_key: DPoPKey | None, *, audience: str | None = "crm",
        intent: Mapping[str, Any] | str | object | None = DEFAULT,
        approval_id: str | None = None,
        agent: Agent | None = None, base_url: str | None = None,
        headers: Mapping[str, str] | None = None, **extra: Any,
    ) -> requests.Response:
        """The raw agent exchange POST: private_key_jwt + a DPoP proof by `dpop_key` (None:
        no proof). `intent` defaults to reading deal:acme-123 (None: none sent); pass extra
        form fields as keyword arguments (None drops a field)."""
        agent = agent or self.agent
        the_intent = globals()["intent"]() if intent is DEFAULT else intent
        form: dict[str, Any] = {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "client_id": agent.client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": agent.assertion(self.issuer),
            "subject_token": assertion,
            "subject_token_type": TT_ACCESS_TOKEN,
            "audience": audience,
            "intent": the_intent if the_intent is None or isinstance(the_intent, str)
            else compact(the_intent),
            "approval_id": approval_id,
            **extra,
        }
        form = {k: v for k, v in form.items() if v is not None}
        all_headers = dict(headers or {})
        if dpop_key is not None:
            all_headers.setdefault("DPoP", self.dpop_proof(dpop_key))
        return requests.post((base_url or self.issuer) + "/token", data=form,
                             headers=all_headers, timeout=HTTP_TIMEOUT)

    def gateway(self, cap_token: str, dpop_key: DPoPKey, method: str, path: str, *,
                base_url: str | None = None, **kw: Any) -> requests.Response:
        """<METHOD> /gateway/<path> with the capability token and a proof carrying `ath`."""
        import base64

        url = f"{self.issuer}/gateway/{path.lstrip('/')}"
        ath = base64.urlsafe_b64encode(hashlib.sha256(cap_token.encode()).digest()
                                       ).rstrip(b"=").decode()
        headers = {"Authorization": f"DPoP {cap_token}",
                   "DPoP": self.dpop_proof(dpop_key, method.upper(), url.split("?")[0], ath=ath),
                   **kw.pop("headers", {})}
        target = url if base_url is None else base_url + urlsplit(url).path + (
            "?" + urlsplit(url).query if urlsplit(url).query else "")
        return requests.request(method, target, headers=headers, timeout=HTTP_TIMEOUT, **kw)

    # --- admin -------------------------------------------------------------------------------

    def admin(self, method: str, path: str, *, base_url: str | None = None, **kw: Any
              ) -> requests.Response:
        return requests.request(method, (base_url or self.issuer) + "/admin" + path,
                                headers={"Authorization": f"Bearer {self.admin_token}"},
                                timeout=HTTP_TIMEOUT, **kw)

    def audit(self, limit: int = 200) -> list[dict[str, Any]]:
        resp = self.admin("GET", f"/audit?limit={limit}")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def audit_for(self, correlation_id: str) -> list[dict[str, Any]]:
        return [e for e in self.audit(1000) if e.get("correlation_id") == correlation_id]

    def deprovision(self, user_id: str, *, base_url: str | None = None) -> requests.Response:
        return self.admin("POST", f"/users/{user_id}/deprovision", base_url=base_url)

    # --- more instances ----------------------------------------------------------------------

    def second_instance(self) -> str:
        """Another app instance over the same settings (database, store, keys, secret);
        returns its base URL. Its issuer is the stack's (proofs target the issuer's URL)."""
        app = self.exits.enter_context(running_app(self.settings, self.clock.clock))
        server = ServerThread(app)
        self.servers.append(server)
        self.extra_apps.append(app)
        return server.start()

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        self.exits.close()  # each app: its engine disposed, the Redis prefix deleted


def correlation() -> str:
    return "test-" + uuid.uuid4().hex


def platform_settings(crm_url: str, crm_secret: str, projects_url: str, projects_secret: str
                      ) -> dict[str, Any]:
    return {"crm": crm_platform(crm_url, crm_secret),
            "projects": projects_platform(projects_url, projects_secret, revocation=False)}


def make_stack(tmp_path: Path, *, database_url: str | None = None, redis_url: str = "",
               extra_settings: Mapping[str, Any] | None = None,
               idp_settings: Mapping[str, Any] | None = None,
               clock: TestClock | None = None) -> Stack:
    """Start the IdP, the CRM, Taskboard and authserver; register the edge and the agent.
    `idp_settings` adds keys to the `[idps.corp]` table (e.g. `id_jag = true`). `clock` is the
    test's (the conftest fixture; default: a new one): everything in the stack reads it."""
    servers: list[ServerThread] = []
    exits = ExitStack()
    try:
        return _make(Path(tmp_path), servers, exits, database_url, redis_url,
                     extra_settings or {}, idp_settings or {}, clock or TestClock())
    except BaseException:
        for server in reversed(servers):
            server.stop()
        exits.close()
        raise


def _make(tmp_path: Path, servers: list[ServerThread], exits: ExitStack,
          database_url: str | None, redis_url: str, extra_settings: Mapping[str, Any],
          idp_settings: Mapping[str, Any], test_clock: TestClock) -> Stack:
    deferred = _Deferred()
    as_server = ServerThread(deferred)
    servers.append(as_server)
    issuer = as_server.base_url

    clock = test_clock.whole_seconds()
    idp, idp_url, idp_server = start_idp(clock=clock)
    servers.append(idp_server)
    idp_secret, edge_idp_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    idp.register_client(AUTHSERVER_AT_IDP, idp_secret, [f"{issuer}/login/{IDP_NAME}/callback"])
    idp.register_client(EDGE_AT_IDP, edge_idp_secret, [EDGE_REDIRECT_URI])

    crm, crm_url, crm_server = start_crm()
    servers.append(crm_server)
    crm_secret = secrets.token_urlsafe(24)
    crm.register_client(AUTHSERVER_AT_PLATFORMS, crm_secret, [f"{issuer}/connections/crm/callback"])

    projects, projects_url, projects_server = start_projects()
    servers.append(projects_server)
    projects_secret = secrets.token_urlsafe(24)
    projects.register_client(AUTHSERVER_AT_PLATFORMS, projects_secret,
                             [f"{issuer}/connections/projects/callback"])

    admin_token = secrets.token_urlsafe(32)
    settings: dict[str, Any] = {
        **base_settings(tmp_path, database_url, redis_url, issuer=issuer),
        "secret_key": secrets.token_urlsafe(32),
        "admin_token": admin_token,
        "idps": {IDP_NAME: {
            "issuer": idp_url,
            "client_id": AUTHSERVER_AT_IDP,
            "client_secret": idp_secret,
            "scopes": ["openid", "email", "profile"],
            "trusted_audiences": [EDGE_AT_IDP],
            "default_tenant": "acme",
            **idp_settings,
        }},
        "platforms": platform_settings(crm_url, crm_secret, projects_url, projects_secret),
    }
    settings.update(extra_settings)
    app = exits.enter_context(running_app(settings, test_clock))
    deferred.app = app
    as_server.start()
    services = app.extensions["authserver"]

    stack = Stack(issuer=issuer, settings=settings, app=app, services=services, idp=idp,
                  crm=crm, projects=projects, edge_id="", edge_secret="",
                  edge_idp_secret=edge_idp_secret, agent=None,  # type: ignore[arg-type]
                  admin_token=admin_token, servers=servers, clock=clock, exits=exits)
    stack.edge_id, stack.edge_secret = stack.register_edge()
    stack.agent = stack.register_agent()
    return stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack for each test, on SQLite and the embedded store (`from tests.stack import
    stack`; without the import a module gets conftest's module-scoped one)."""
    s = make_stack(tmp_path)
    yield s
    s.close()
