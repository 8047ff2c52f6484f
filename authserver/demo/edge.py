"""The chat edge (a trusted, confidential client): OIDC sign-in, then the edge mint (RFC 8693).

The edge is what the user talks to. Before any LLM sees the request, it
1. signs the user in at the corporate IdP with its own OIDC code flow (PKCE, nonce; the ID
   token is validated by requests-oauth2client against the IdP's JWKS), and
2. exchanges that ID token at authserver for a *user assertion* carrying the mandate (what this
   request allows), bound to the AGENT's DPoP key (`dpop_jkt`) and naming the agent
   (`actor_token`, which the agent signed). The edge itself cannot use the assertion.

The demo IdP signs the `login_hint` user in without a password (TEST-ONLY), so the code flow
needs no browser: the edge reads the code from the redirect's Location header.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from requests_oauth2client import BearerToken, ClientSecretBasic, OAuth2Client
from requests_oauth2client.exceptions import EndpointError, InvalidTokenResponse

HTTP_TIMEOUT = 10
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
CHANNEL = "chat"


class AssertionForAgent(BearerToken):
    """The minted user assertion: `token_type` DPoP, but bound to the agent's key, not ours."""

    TOKEN_TYPE: ClassVar[str] = "DPoP"


@dataclass(frozen=True)
class Grant:
    """One `platforms` entry of the mandate."""

    platform: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    max_count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.platform, "actions": list(self.actions),
                "resources": list(self.resources), "max_count": self.max_count}


@dataclass
class MintResult:
    ok: bool
    status: int
    assertion: str | None
    error: str | None
    correlation_id: str
    body: dict[str, Any]


def request_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mandate(request: str, grants: list[Grant]) -> list[dict[str, Any]]:
    """The `authorization_details` the edge signs into the assertion (type agent_mandate)."""
    return [{
        "type": "agent_mandate",
        "platforms": [g.to_json() for g in grants],
        "channel": CHANNEL,
        "request": request,
        "request_hash": request_hash(request),
    }]


class Edge:
    def __init__(self, *, idp_url: str, idp_client_id: str, idp_client_secret: str,
                 redirect_uri: str, issuer: str, client_id: str, client_secret: str) -> None:
        self.issuer = issuer
        self.redirect_uri = redirect_uri
        self.idp = OAuth2Client.from_discovery_endpoint(
            issuer=idp_url,
            auth=ClientSecretBasic(idp_client_id, idp_client_secret),
            redirect_uri=redirect_uri,
            testing=True,  # loopback http (the demo IdP); production endpoints are https
        )
        self.authserver = OAuth2Client(
            token_endpoint=f"{issuer}/token",
            auth=ClientSecretBasic(client_id, client_secret),
            token_class=AssertionForAgent,
            testing=True,
        )

    def sign_in(self, username: str) -> str:
        """The user's validated ID token from the IdP (OIDC Core §3.1, PKCE + nonce)."""
        request = self.idp.authorization_request(scope="openid email profile",
                                                 login_hint=username)
        resp = requests.get(request.uri, allow_redirects=False, timeout=HTTP_TIMEOUT)
        location = resp.headers.get("Location")
        if resp.status_code != 302 or not location or not location.startswith(self.redirect_uri):
            raise RuntimeError(f"IdP sign-in for {username} failed ({resp.status_code})")
        callback = request.validate_callback(location)
        token = self.idp.authorization_code(callback)  # validates the ID token
        if token.id_token is None:
            raise RuntimeError("the IdP returned no ID token")
        return str(token.id_token)

    def mint(self, id_token: str, *, actor_token: str, dpop_jkt: str,
             authorization_details: list[dict[str, Any]], correlation_id: str) -> MintResult:
        """POST /token: the edge mint. Never raises on an OAuth error; reports it."""
        try:
            token = self.authserver.token_exchange(
                subject_token=id_token,
                subject_token_type=ID_TOKEN_TYPE,
                actor_token=actor_token,
                actor_token_type=JWT_TOKEN_TYPE,
                dpop_jkt=dpop_jkt,
                authorization_details=json.dumps(authorization_details, separators=(",", ":")),
                requests_kwargs={"headers": {"X-Request-ID": correlation_id}},
            )
        except (EndpointError, InvalidTokenResponse) as e:
            body = _json(e.response)
            return MintResult(False, e.response.status_code, None, str(body.get("error")),
                              correlation_id, body)
        return MintResult(True, 200, token.access_token, None, correlation_id,
                          {"expires_in": token.expires_in, **token.kwargs})


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"error": f"http_{resp.status_code}"}
    return body if isinstance(body, dict) else {"error": f"http_{resp.status_code}"}
