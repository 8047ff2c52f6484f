"""The demo's services, all on loopback in this one process: IdP, CRM, project tool, authserver.

Set-up goes only through the product's own interfaces: a TOML configuration file (as an
operator writes it), `authserver.clients.register_client` with admin attributes (what
`authserver clients create --trusted-edge / --allowed-platform / --allowed-action` calls), and
the user pages (sign in, connect) driven over HTTP by `Browser`. Nothing writes to the database
behind the product's back.

The demo platforms are the test suite's (`authserver.testing`); they are TEST-ONLY servers whose
authorization endpoints sign in the `login_hint` user without a password.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwskate import Jwk

from authserver.config import Settings
from authserver.testing.crm import CRM, start_crm
from authserver.testing.idp import IdP, start_idp
from authserver.testing.projects import WORKSPACE, Projects, start_projects
from authserver.testing.server import ServerThread
from authserver.testing.settings import CLIENT_ID_AT_PLATFORMS, crm_platform, projects_platform

IDP_NAME = "corp"
#: Our client at the IdP (browser sign-in) and the chat edge's own client there.
AUTHSERVER_AT_IDP = "authserver"
EDGE_AT_IDP = "chat-edge"
#: The edge's redirect URI at the IdP. The edge runs the code flow without a browser and reads
#: the code from the redirect's Location, so nothing needs to listen here.
EDGE_REDIRECT_URI = "http://127.0.0.1/chat/oidc/callback"
AUTHSERVER_AT_PLATFORMS = CLIENT_ID_AT_PLATFORMS
USERS = ("alice", "bob")
#: CRM access tokens live long enough for the demo; scenario 4 expires them on purpose.
CRM_ACCESS_TOKEN_TTL = 300
#: A second stale deal for Alice (the test seed has one), so "every stale deal" means two
#: tasks: more than the mandate's one-at-a-time, which shows the step-up.
EXTRA_STALE_DEAL = ("umbrella-5", {"name": "Umbrella onboarding", "owner": "alice",
                                   "stage": "stale", "amount": 25_000})

AGENT_ACTIONS = ("read", "create", "update", "delete", "bulk_delete")
AGENT_PLATFORMS = ("crm", "projects")


class StackError(RuntimeError):
    """A service did not start or could not be configured."""


class _Deferred:
    """A WSGI app filled in later: we must know our port (the issuer) before building the app."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting"]
        return self.app(environ, start_response)


@dataclass
class ClientCredentials:
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    private_jwk: Jwk | None = field(default=None, repr=False)


@dataclass
class DemoStack:
    data_dir: Path
    config_file: Path
    issuer: str
    idp: IdP
    idp_url: str
    crm: CRM
    crm_url: str
    projects: Projects
    projects_url: str
    services: Any
    admin_token: str
    edge: ClientCredentials
    edge_at_idp: ClientCredentials
    agent: ClientCredentials
    #: The README's agent snippet's client (client_secret_basic, client_credentials too).
    readme_agent: ClientCredentials | None = None
    servers: list[ServerThread] = field(default_factory=list)

    def urls(self) -> dict[str, str]:
        return {
            "authserver": self.issuer,
            "sign_in": self.issuer + "/login",
            "connections": self.issuer + "/connections",
            "approvals": self.issuer + "/approvals",
            "activity": self.issuer + "/activity",
            "agents": self.issuer + "/agents",
            "metadata": self.issuer + "/.well-known/oauth-authorization-server",
            "idp": self.idp_url,
            "crm": self.crm_url,
            "projects": self.projects_url,
            "config": str(self.config_file),
            "log": str(self.data_dir / "authserver.log"),
        }

    def serve_state(self) -> dict[str, Any]:
        """What `python -m authserver.demo.pending` and a person at the terminal need: the
        clients' credentials (demo secrets, on loopback only)."""
        assert self.agent.private_jwk is not None and self.readme_agent is not None
        return {
            "issuer": self.issuer, "idp": self.idp_url,
            "edge": {"client_id": self.edge.client_id, "client_secret": self.edge.client_secret},
            "edge_at_idp": {"client_id": self.edge_at_idp.client_id,
                            "client_secret": self.edge_at_idp.client_secret},
            "agent": {"client_id": self.agent.client_id,
                      "private_jwk": self.agent.private_jwk.to_dict()},
            "readme_agent": {"client_id": self.readme_agent.client_id,
                             "client_secret": self.readme_agent.client_secret},
        }

    def platform_stats(self) -> dict[str, dict[str, int]]:
        return {"crm": self.crm.stats, "projects": self.projects.stats}

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(config: Mapping[str, Any]) -> str:
    """Top-level scalars, then `[table]` / `[table.sub]` sections (nested tables inline)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    for name, table in config.items():
        if not isinstance(table, Mapping):
            continue
        for sub, body in table.items():
            lines.append("")
            lines.append(f"[{name}.{sub}]")
            lines.extend(f"{json.dumps(str(k))} = {_toml_value(v)}" if not _is_bare(k)
                         else f"{k} = {_toml_value(v)}" for k, v in body.items())
    return "\n".join(lines) + "\n"


def _is_bare(key: str) -> bool:
    return key.replace("_", "").replace("-", "").isalnum()


def build_config(*, issuer: str, data_dir: Path, idp_url: str, idp_secret: str,
                 crm_url: str, crm_secret: str, projects_url: str, projects_secret: str,
                 admin_token: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "issuer": issuer,
        "data_dir": str(data_dir),
        "secret_key": secrets.token_urlsafe(32),
        "redis_url": "",  # the embedded store: one process
        "log_level": "INFO",
    }
    if admin_token is not None:
        config["admin_token"] = admin_token
    config["idps"] = {IDP_NAME: {
        "issuer": idp_url,
        "client_id": AUTHSERVER_AT_IDP,
        "client_secret": idp_secret,
        "scopes": ["openid", "email", "profile"],
        "trusted_audiences": [EDGE_AT_IDP],
        "default_tenant": "acme",
    }}
    config["platforms"] = {
        "crm": crm_platform(crm_url, crm_secret),
        "projects": projects_platform(projects_url, projects_secret, revocation=True),
    }
    return config


def start_stack(data_dir: Path, *, progress: Callable[[str], None] | None = None,
                done: Callable[[str], None] | None = None) -> DemoStack:
    """Start everything and set it up; the caller must `stop()` the result."""
    say = progress or (lambda _m: None)
    ok = done or (lambda _m: None)
    servers: list[ServerThread] = []
    try:
        return _start(data_dir, servers, say, ok)
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise


def _start(data_dir: Path, servers: list[ServerThread], say: Callable[[str], None],
           ok: Callable[[str], None]) -> DemoStack:
    data_dir.mkdir(parents=True, exist_ok=True)
    deferred = _Deferred()
    as_server = ServerThread(deferred)
    servers.append(as_server)
    issuer = as_server.start()

    say("starting the corporate IdP (OIDC)")
    idp, idp_url, idp_server = start_idp()
    servers.append(idp_server)
    idp_secret, edge_idp_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    idp.register_client(AUTHSERVER_AT_IDP, idp_secret, [f"{issuer}/login/{IDP_NAME}/callback"])
    idp.register_client(EDGE_AT_IDP, edge_idp_secret, [EDGE_REDIRECT_URI])
    ok(idp_url)

    say("starting Acme CRM (OAuth provider, rotating refresh tokens)")
    crm, crm_url, crm_server = start_crm(access_token_ttl=CRM_ACCESS_TOKEN_TTL)
    servers.append(crm_server)
    crm_secret = secrets.token_urlsafe(24)
    crm.register_client(AUTHSERVER_AT_PLATFORMS, crm_secret, [f"{issuer}/connections/crm/callback"])
    with crm.lock:
        crm.deals[EXTRA_STALE_DEAL[0]] = dict(EXTRA_STALE_DEAL[1])
    ok(crm_url)

    say("starting Taskboard (OAuth provider, workspace-scoped API URL)")
    projects, projects_url, projects_server = start_projects(revocation=True)
    servers.append(projects_server)
    projects_secret = secrets.token_urlsafe(24)
    projects.register_client(AUTHSERVER_AT_PLATFORMS, projects_secret,
                             [f"{issuer}/connections/projects/callback"])
    ok(f"{projects_url}/ws/{WORKSPACE}")

    say("starting authserver (SQLite + embedded store)")
    admin_token = secrets.token_urlsafe(32)
    config = build_config(issuer=issuer, data_dir=data_dir, idp_url=idp_url,
                          idp_secret=idp_secret, crm_url=crm_url, crm_secret=crm_secret,
                          projects_url=projects_url, projects_secret=projects_secret,
                          admin_token=admin_token)
    config_file = data_dir / "authserver.toml"
    config_file.write_text(to_toml(config), encoding="utf-8")
    config_file.chmod(0o600)  # it holds client secrets
    from authserver import create_app

    # environ={}: the demo runs on its own file only (no AUTHSERVER_* from the shell leaks in,
    # e.g. a Redis URL: the demo is one process on the embedded store).
    settings = Settings.load({"config_file": str(config_file)}, environ={})
    log_file = data_dir / "authserver.log"
    # create_app logs to stderr from its first line; the terminal is for the narration.
    with open(log_file, "a", encoding="utf-8") as early, contextlib.redirect_stderr(early):
        app = create_app(settings)
    _log_to_file(settings, log_file)
    deferred.app = app
    services = app.extensions["authserver"]
    ok(f"{issuer} (embedded store: correct for this one process; logs in {log_file})")

    say("registering the chat edge (trusted_edge) and the agent (allowlisted)")
    edge, agent, readme_agent = _register_clients(services, settings)
    ok(f"edge={edge.client_id} agent={agent.client_id}")

    return DemoStack(
        data_dir=data_dir, config_file=config_file, issuer=issuer, idp=idp, idp_url=idp_url,
        crm=crm, crm_url=crm_url, projects=projects, projects_url=projects_url,
        services=services, admin_token=admin_token, edge=edge,
        edge_at_idp=ClientCredentials(EDGE_AT_IDP, edge_idp_secret), agent=agent,
        readme_agent=readme_agent, servers=servers,
    )


def _log_to_file(settings: Settings, path: Path) -> None:
    """The servers' logs go to a file: the terminal is for the narration."""
    import logging

    from authserver import observability

    observability.configure_logging(settings.log_level,
                                    stream=open(path, "a", encoding="utf-8"))  # noqa: SIM115
    # Werkzeug sets its own logger to INFO; its access lines are useful in the file only.
    logging.getLogger("werkzeug").setLevel(logging.INFO)


def _register_clients(services: Any, settings: Settings
                      ) -> tuple[ClientCredentials, ClientCredentials, ClientCredentials]:
    """What `authserver clients create` does, for the edge, the agent and the README's agent
    (client_secret_basic, and client_credentials so that it can name itself to an edge)."""
    from authserver.clients import GRANT_TOKEN_EXCHANGE, register_client, validate_client_metadata

    agent_key = Jwk.generate(alg="ES256").with_kid_thumbprint()
    edge_md = validate_client_metadata({
        "client_name": "Demo chat edge",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": [GRANT_TOKEN_EXCHANGE],
    }, scopes=settings.scopes)
    agent_md = validate_client_metadata({
        "client_name": "Demo sales agent",
        "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": [GRANT_TOKEN_EXCHANGE],
        "jwks": {"keys": [agent_key.public_jwk().to_dict()]},
        "dpop_bound_access_tokens": True,
    }, scopes=settings.scopes)
    readme_md = validate_client_metadata({
        "client_name": "README agent",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": [GRANT_TOKEN_EXCHANGE, "client_credentials"],
    }, scopes=settings.scopes)
    now = int(time.time())
    with services.db.session() as session:
        edge_row, edge_secret = register_client(session, edge_md, now=now,
                                                attributes={"trusted_edge": True})
        agent_row, _ = register_client(session, agent_md, now=now, attributes={
            "allowed_platforms": list(AGENT_PLATFORMS),
            "allowed_actions": list(AGENT_ACTIONS),
        })
        readme_row, readme_secret = register_client(session, readme_md, now=now, attributes={
            "allowed_platforms": list(AGENT_PLATFORMS),
            "allowed_actions": list(AGENT_ACTIONS),
        })
        edge = ClientCredentials(edge_row.client_id, edge_secret)
        agent = ClientCredentials(agent_row.client_id, private_jwk=agent_key)
        readme_agent = ClientCredentials(readme_row.client_id, readme_secret)
    return edge, agent, readme_agent


def connect_users(stack: DemoStack, users: Iterable[str], *,
                  progress: Callable[[str], None] | None = None,
                  done: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Each user signs in at authserver (through the IdP) and connects both platforms."""
    from authserver.demo.browser import Browser

    say = progress or (lambda _m: None)
    ok = done or (lambda _m: None)
    browsers: dict[str, Any] = {}
    for username in users:
        say(f"{username} signs in and connects the CRM and Taskboard")
        browser = Browser(stack.issuer, username)
        browser.sign_in(IDP_NAME)
        for platform in ("crm", "projects"):
            browser.connect(platform)
        browsers[username] = browser
        ok("connected")
    return browsers
