"""Test helpers for the broker: the shared fake platforms (authserver.testing.crm / projects)
served on loopback behind a small fault injector, and a browser-less connect flow.

The fault injector is WSGI middleware in front of the real provider: it counts token-endpoint
requests and can answer the next N of them with a 503, like an overloaded platform.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from authserver.broker.connections import finish_connect, start_connect
from authserver.broker.profiles import Platform
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.models import User
from authserver.models.broker import Connection
from authserver.store import Store
from authserver.testing.crm import CRM, create_crm
from authserver.testing.platforms import OAuthProvider
from authserver.testing.projects import Projects, create_projects
from authserver.testing.server import ServerThread

REDIRECT_URI = "http://127.0.0.1:9/connections/callback"
CLIENT_ID = "authserver-broker"
CLIENT_SECRET = "broker-s3cret"


class FaultInjector:
    """WSGI middleware: counts token requests; `fail_next(n)` turns the next n into 503s."""

    def __init__(self, app: Callable[..., Any], token_path: str) -> None:
        self._app = app
        self._token_path = token_path
        self._lock = threading.Lock()
        self._failures_left = 0
        self.token_requests = 0

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self._token_path:
            with self._lock:
                self.token_requests += 1
                fail = self._failures_left > 0
                if fail:
                    self._failures_left -= 1
            if fail:
                start_response("503 Service Unavailable",
                               [("Content-Type", "text/plain"), ("Retry-After", "1")])
                return [b"upstream overloaded (pod=token-7, trace=abc)"]
        return self._app(environ, start_response)


@dataclass
class RunningPlatform:
    provider: OAuthProvider
    faults: FaultInjector
    base_url: str
    platform: Platform


def _serve(provider: OAuthProvider, token_path: str) -> tuple[FaultInjector, str, ServerThread]:
    faults = FaultInjector(provider.app.wsgi_app, token_path)
    server = ServerThread(faults)
    provider.configure_base_url(server.base_url)
    provider.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    return faults, server.start(), server


def crm_platform(base_url: str) -> Platform:
    """Acme CRM as a deployment would configure it: generic profile, rotating refresh tokens."""
    return Platform.from_settings("crm", {
        "profile": "generic",
        "display_name": "Acme CRM",
        "authorize_url": base_url + "/oauth/authorize",
        "token_url": base_url + "/oauth/token",
        "revocation_url": base_url + "/oauth/revoke",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["deals.read", "deals.write"],
        "api_base_url": base_url + "/api/v1",
        "resources": {"deal:{id}": "deals/{id}", "deals?stage={stage}": "deals?stage={stage}"},
        "profile_overrides": {"rotates_refresh_tokens": True},
    })


def projects_platform(base_url: str) -> Platform:
    """Taskboard: client_secret_post, instance_url, no expires_in, no revocation endpoint."""
    return Platform.from_settings("projects", {
        "profile": "generic",
        "display_name": "Taskboard",
        "authorize_url": base_url + "/oauth2/authorize",
        "token_url": base_url + "/oauth2/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["boards:read", "tasks:write"],
        "resources": {"board:{id}": "boards/{id}", "board:{id}/tasks": "boards/{id}/tasks"},
        "profile_overrides": {
            "auth_method": "client_secret_post",
            "instance_url_field": "instance_url",
            "instance_api_path": "/api",
            "default_expires_in": 300,
            "supports_revocation": False,
        },
    })


def running_crm() -> Iterator[RunningPlatform]:
    crm: CRM = create_crm()
    faults, base_url, server = _serve(crm, "/oauth/token")
    try:
        yield RunningPlatform(crm, faults, base_url, crm_platform(base_url))
    finally:
        server.stop()


def running_projects() -> Iterator[RunningPlatform]:
    projects: Projects = create_projects()
    faults, base_url, server = _serve(projects, "/oauth2/token")
    try:
        yield RunningPlatform(projects, faults, base_url, projects_platform(base_url))
    finally:
        server.stop()


def add_user(db: Database, user_id: str, now: int) -> None:
    with db.session() as session:
        session.add(User(id=user_id, idp_issuer="https://idp.example", idp_subject=user_id,
                         created_at=now))


def authorize(authorize_url: str, login_hint: str) -> tuple[str, str]:
    """Drive the platform's (test-only, browser-less) authorize endpoint: (code, state)."""
    response = requests.get(authorize_url + "&login_hint=" + login_hint, allow_redirects=False,
                            timeout=5)
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return query["code"][0], query["state"][0]


def connect(db: Database, store: Store, vault: Vault, platform: Platform, *, user_id: str,
            login_hint: str, now: int, session_binding: str = "browser-session-1") -> Connection:
    url = start_connect(store, platform, user_id=user_id, session_binding=session_binding,
                        redirect_uri=REDIRECT_URI, now=now)
    code, state = authorize(url, login_hint)
    return finish_connect(db, store, vault, platform, state=state, code=code, user_id=user_id,
                          session_binding=session_binding, redirect_uri=REDIRECT_URI, now=now)
