"""The official `mcp` Python SDK client, unchanged, against examples/mcp_server (issue 14).

The example MCP server runs as its own process (streamable HTTP on loopback), protected by
authserver through `authserver.resource`. The SDK's `OAuthClientProvider` does the whole flow:
401 + RFC 9728 discovery → RFC 8414 → registration (DCR, public or confidential) or a Client
ID Metadata Document (served over https on loopback with a throwaway CA authserver trusts) →
code + PKCE with `resource` → token → the `whoami` tool returns the signed-in user. Then the
access token expires and the SDK refreshes it, and a token for another resource is refused.
The browser step (sign-in and consent) is a requests session that posts the consent form.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
import requests
from mcp.client.auth import OAuthClientProvider

from authserver.resource import protected_resource_metadata_url
from tests.mcp_helpers import (
    REDIRECT_URI,
    Browser,
    MemoryStorage,
    client_metadata,
    register_resource,
    whoami,
)
from tests.stack import HTTP_TIMEOUT, Stack, stack  # noqa: F401
from tests.tls_helpers import Route, TLSServer, tls_server  # noqa: F401

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mcp_server" / "server.py"


# --- the MCP server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class McpServer:
    url: str  # the MCP endpoint, which is also its resource identifier
    process: subprocess.Popen[bytes]


def start_example(issuer: str) -> McpServer:
    """examples/mcp_server/server.py as its own process, once it answers its PRM URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    env = {**os.environ, "AUTHSERVER_ISSUER": issuer, "MCP_RESOURCE": url,
           "MCP_HOST": "127.0.0.1", "MCP_PORT": str(port), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(protected_resource_metadata_url(url), timeout=2).status_code == 200:
                return McpServer(url, process)
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the example MCP server did not start ({process.returncode})")
        time.sleep(0.1)


def stop(server: McpServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def mcp_servers(stack: Stack) -> Iterator[tuple[McpServer, McpServer]]:
    """Two example servers, each registered as its own resource."""
    started: list[McpServer] = []
    try:
        for _ in range(2):
            started.append(start_example(stack.issuer))
            register_resource(stack, started[-1].url)
        yield started[0], started[1]
    finally:
        for server in started:
            stop(server)


# --- the flow ------------------------------------------------------------------------------------


def _full_flow(stack: Stack, servers: tuple[McpServer, McpServer], provider: OAuthClientProvider,
               storage: MemoryStorage, browser: Browser) -> dict[str, Any]:
    server, other = servers
    identity = anyio.run(whoami, server.url, provider)
    assert identity["sub"] == stack.user_id("alice")
    [authorization_url] = browser.authorization_urls
    query = parse_qs(urlsplit(authorization_url).query)
    assert urlsplit(authorization_url).path == "/authorize"
    assert query["resource"] == [server.url] and query["code_challenge_method"] == ["S256"]
    assert storage.tokens is not None and storage.tokens.refresh_token

    # Refresh: the access token has expired; the SDK refreshes it without the browser.
    first = storage.tokens
    provider.context.token_expiry_time = time.time() - 1
    assert anyio.run(whoami, server.url, provider)["sub"] == stack.user_id("alice")
    assert len(browser.authorization_urls) == 1
    assert storage.tokens.access_token != first.access_token
    assert storage.tokens.refresh_token not in (None, first.refresh_token)  # rotated

    # A token for this server is refused by another one: its audience is not that resource.
    refused = requests.post(other.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                            headers={"Authorization": f"Bearer {storage.tokens.access_token}",
                                     "Accept": "application/json, text/event-stream"},
                            timeout=HTTP_TIMEOUT)
    assert refused.status_code == 401
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"'), challenge
    assert f'resource_metadata="{protected_resource_metadata_url(other.url)}"' in challenge
    return identity


@pytest.mark.parametrize("auth_method", ["none", "client_secret_basic"])
def test_sdk_client_registers_dynamically_and_calls_whoami(
        stack: Stack, mcp_servers: tuple[McpServer, McpServer], auth_method: str) -> None:
    server, _ = mcp_servers
    # Unauthenticated, the server answers 401 naming its RFC 9728 document.
    bare = requests.post(server.url, json={}, timeout=HTTP_TIMEOUT)
    assert bare.status_code == 401
    metadata = protected_resource_metadata_url(server.url)
    assert f'Bearer resource_metadata="{metadata}"' in bare.headers["WWW-Authenticate"]
    storage = MemoryStorage()
    browser = Browser(stack.browser("alice"))
    provider = OAuthClientProvider(server.url, client_metadata(auth_method), storage,
                                   browser.redirect_handler, browser.callback_handler)
    identity = _full_flow(stack, mcp_servers, provider, storage, browser)
    assert storage.client_info is not None
    assert storage.client_info.token_endpoint_auth_method == auth_method
    assert (storage.client_info.client_secret is None) == (auth_method == "none")
    assert identity["client_id"] == storage.client_info.client_id


def test_sdk_client_with_a_client_id_metadata_document(
        stack: Stack, mcp_servers: tuple[McpServer, McpServer], tls_server: TLSServer) -> None:
    from authserver.cimd import CimdResolver
    from authserver.outbound import Outbound

    # authserver fetches client documents through a fetcher that trusts the test's CA.
    stack.services.cimd = CimdResolver(Outbound(allow_internal=True,
                                                ca_file=str(tls_server.ca_file)),
                                       scopes=stack.services.settings.scopes)
    url = tls_server.url("/mcp-client.json")
    tls_server.routes["/mcp-client.json"] = Route(body=json.dumps({
        "client_id": url, "client_name": "mcp sdk test client (CIMD)",
        "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
    }).encode())
    server, _ = mcp_servers
    storage = MemoryStorage()
    browser = Browser(stack.browser("alice"))
    provider = OAuthClientProvider(server.url, client_metadata("none"), storage,
                                   browser.redirect_handler, browser.callback_handler,
                                   client_metadata_url=url)
    identity = _full_flow(stack, mcp_servers, provider, storage, browser)
    assert identity["client_id"] == url
    assert storage.client_info is not None and storage.client_info.client_id == url
    assert any(path == "/mcp-client.json" for _, path, _ in tls_server.requests)
