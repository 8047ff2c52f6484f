"""An MCP server (streamable HTTP) protected by authserver, with one tool, `whoami`.

Run it with `python examples/mcp_server/server.py` after registering RESOURCE at authserver
(README, "Protecting an MCP server"). AUTHSERVER_ISSUER, MCP_RESOURCE (the server's external
URL of its MCP endpoint), MCP_HOST and MCP_PORT configure it. The code between the markers is
the README's example, verbatim (tests/test_readme.py checks it).
"""

# --- README example: mcp-server ---------------------------------------------------------------
import os
import time
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse

from authserver.errors import ResourceError
from authserver.resource import (
    ResourceVerifier,
    jwks_verifier,
    protected_resource_metadata,
    protected_resource_metadata_url,
)
from authserver.store.memory import MemoryStore

ISSUER = os.environ.get("AUTHSERVER_ISSUER", "https://auth.example.com")
RESOURCE = os.environ.get("MCP_RESOURCE", "https://mcp.example.com/mcp")  # its resource id
METADATA_URL = protected_resource_metadata_url(RESOURCE)  # RFC 9728 §3.1 well-known URL
verifier = ResourceVerifier(
    issuer=ISSUER,
    audience=RESOURCE,
    verify_jwt=jwks_verifier(f"{ISSUER}/jwks.json", issuer=ISSUER),
    store=MemoryStore(),  # DPoP replay cache (one process; RedisStore for several)
    allow_bearer=True,  # MCP clients send Bearer; a DPoP-bound token must still come with DPoP
    resource_metadata=METADATA_URL,  # named in every 401 challenge (RFC 9728 §5.1)
)
mcp = MCPServer("whoami")


@mcp.tool()
def whoami(ctx: Context) -> dict[str, Any]:
    """Who the signed-in user is, from the verified access token."""
    request = ctx.request_context.request  # the HTTP request that carried this call
    assert isinstance(request, Request)
    claims = request.scope["authserver.claims"]  # set by RequireToken below
    return {"sub": claims["sub"], "client_id": claims["client_id"],
            "scope": claims.get("scope", "")}


@mcp.custom_route(urlsplit(METADATA_URL).path, methods=["GET"])
async def metadata(request: Request) -> JSONResponse:  # RFC 9728 §3
    return JSONResponse(protected_resource_metadata(
        RESOURCE, authorization_servers=[ISSUER], dpop_required=False, resource_name="whoami"))


class RequireToken:
    """ASGI middleware: the MCP endpoint answers only requests with a valid access token."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == urlsplit(RESOURCE).path:
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                       for k, v in scope["headers"]]
            try:
                claims = await anyio.to_thread.run_sync(lambda: verifier.verify(
                    method=scope["method"], url=RESOURCE,  # the external URL (DPoP `htu`)
                    authorization=[v for k, v in headers if k == "authorization"],
                    dpop=[v for k, v in headers if k == "dpop"], now=int(time.time())))
            except ResourceError as e:  # 401 + WWW-Authenticate: Bearer resource_metadata=…
                await JSONResponse(e.body(), e.status_code, e.headers())(scope, receive, send)
                return
            scope = {**scope, "authserver.claims": claims}
        await self.app(scope, receive, send)


netloc = urlsplit(RESOURCE).netloc
app = RequireToken(mcp.streamable_http_app(
    streamable_http_path=urlsplit(RESOURCE).path,
    transport_security=TransportSecuritySettings(  # DNS rebinding protection: our host only
        allowed_hosts=[netloc], allowed_origins=[f"{urlsplit(RESOURCE).scheme}://{netloc}"])))
# --- end of the README example ------------------------------------------------------------------

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=os.environ.get("MCP_HOST", "127.0.0.1"),
                port=int(os.environ.get("MCP_PORT", "8000")), log_level="warning")
