"""The `mcp` SDK client's pieces for tests: token storage, the user's browser behind its
redirect and callback handlers, a `whoami` call, and an ASGI app served on loopback.

Used by tests/test_mcp_example.py (the example as a process) and tests/test_readme.py (the
README's copy of it, served in this process).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import requests
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from tests.http_helpers import form_with
from tests.stack import HTTP_TIMEOUT, Stack

#: The SDK client's redirect URI. Nothing listens there: the consent step reads the code from
#: the authorization response's Location, as a browser would hand it to the client.
REDIRECT_URI = "http://127.0.0.1:33418/callback"


def register_resource(stack: Stack, resource: str) -> None:
    """The admin's one step: a resource-server client serving `resource` (no restart)."""
    stack.register({"client_name": "whoami MCP server", "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "client_secret_basic"},
                   {"resources": [resource]})


# --- the SDK client's pieces: storage and the user's browser ------------------------------------


@dataclass
class MemoryStorage(TokenStorage):
    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Browser:
    """The user at authserver's consent page: the SDK's redirect handler "opens" the
    authorization URL in a signed-in session and allows; its callback handler returns what
    authserver redirected back with."""

    session: requests.Session
    authorization_urls: list[str] = field(default_factory=list)
    _result: AuthorizationCodeResult | None = None

    def _consent(self, url: str) -> AuthorizationCodeResult:
        page = self.session.get(url, timeout=HTTP_TIMEOUT)
        assert page.status_code == 200, (page.status_code, page.text[:500])
        form = form_with(page.text, "csrf_token", action="/authorize")
        fields = {name: values for name, values in form["multi"].items()}
        answer = self.session.post(urlsplit(url)._replace(query="").geturl(),
                                   data={**fields, "decision": "allow"},
                                   allow_redirects=False, timeout=HTTP_TIMEOUT)
        assert answer.status_code in (302, 303), (answer.status_code, answer.text[:500])
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT_URI + "?"), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"),
                                       iss=query.get("iss"))

    async def redirect_handler(self, url: str) -> None:
        self.authorization_urls.append(url)
        self._result = await anyio.to_thread.run_sync(self._consent, url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self._result is not None
        result, self._result = self._result, None
        return result


async def whoami(server_url: str, provider: OAuthClientProvider) -> dict[str, Any]:
    """Connect with the SDK's streamable HTTP client and call the `whoami` tool."""
    async with httpx2.AsyncClient(auth=provider, timeout=HTTP_TIMEOUT) as http, \
            Client(streamable_http_client(server_url, http_client=http)) as client:
        result = await client.call_tool("whoami", {})
        assert not result.is_error, result
        if result.structured_content is not None:
            return dict(result.structured_content)
        return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]


def client_metadata(auth_method: str) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name="mcp sdk test client", redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
        token_endpoint_auth_method=auth_method)  # type: ignore[arg-type]


def loopback_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(app: Any, sock: socket.socket) -> Iterator[None]:
    """Serve an ASGI app with uvicorn on `sock`, in a thread of this process."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
