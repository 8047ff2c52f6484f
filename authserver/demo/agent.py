"""The scripted agent: deterministic (no LLM), speaking OAuth exactly as a real agent would.

It authenticates with `private_key_jwt` (RFC 7523; the assertion's `aud` is the issuer), holds
a DPoP key (RFC 9449) whose thumbprint the edge bound the user assertion to, and for every
action it means to take it runs the RFC 8693 exchange with an `intent` and an `audience`, then
calls the gateway with the capability token and a fresh DPoP proof (`ath`, `htu`). All of it
through requests-oauth2client: `OAuth2Client.token_exchange(..., dpop_key=...)` and the
`DPoPToken` it returns as a `requests` auth handler.

An OAuth error is an outcome to report, not a crash: `exchange()` and `call()` never raise on
one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import requests
from jwskate import Jwk
from requests_oauth2client import DPoPKey, DPoPToken, OAuth2Client, PrivateKeyJwt
from requests_oauth2client.dpop import InvalidUseDPoPNonceResponse
from requests_oauth2client.exceptions import EndpointError, InvalidTokenResponse

HTTP_TIMEOUT = 15
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ACTOR_TOKEN_LIFETIME = 120  # seconds; the contract allows at most 5 minutes


@dataclass
class Exchange:
    """The outcome of one agent exchange."""

    status: int
    token: DPoPToken | None
    error: str | None
    correlation_id: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.token is not None

    @property
    def decision(self) -> str:
        if self.ok:
            return "allowed"
        return self.error or f"http_{self.status}"


@dataclass
class Call:
    """The outcome of one gateway call."""

    status: int
    body: Any
    correlation_id: str
    www_authenticate: str | None = None


def intent(action: str, resource: str, *, request: str, count: int = 1,
           channel: str = "chat", environment: str = "prod") -> dict[str, Any]:
    return {"action": action, "resource": resource, "count": count,
            "context": {"request": request, "channel": channel, "environment": environment}}


class Agent:
    def __init__(self, *, issuer: str, client_id: str, private_jwk: Jwk) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.dpop_key = DPoPKey.generate(alg="ES256")
        self._auth = PrivateKeyJwt(client_id, private_jwk, alg="ES256", aud=issuer,
                                   lifetime=ACTOR_TOKEN_LIFETIME)
        self.oauth = OAuth2Client(token_endpoint=f"{issuer}/token", auth=self._auth,
                                  testing=True)  # loopback http in the demo
        self.http = requests.Session()

    @property
    def dpop_jkt(self) -> str:
        """RFC 7638 thumbprint of the agent's DPoP key: the edge binds the assertion to it."""
        return str(self.dpop_key.dpop_jkt)

    def actor_token(self) -> str:
        """The agent's signed statement "this is me" for the edge mint (iss=sub=client_id,
        aud=issuer, jti, exp), produced by the same code that signs its client assertions."""
        return str(self._auth.client_assertion(self.issuer))

    def exchange(self, assertion: str, platform: str, what: dict[str, Any], *,
                 correlation_id: str, approval_id: str | None = None) -> Exchange:
        extra: dict[str, Any] = {"audience": platform,
                                 "intent": json.dumps(what, separators=(",", ":"))}
        if approval_id is not None:
            extra["approval_id"] = approval_id
        try:
            token = self.oauth.token_exchange(
                subject_token=assertion,
                subject_token_type=ACCESS_TOKEN_TYPE,
                dpop=True,
                dpop_key=self.dpop_key,
                requests_kwargs={"headers": {"X-Request-ID": correlation_id}},
                **extra,
            )
        except (EndpointError, InvalidTokenResponse) as e:
            body = _json(e.response)
            return Exchange(e.response.status_code, None, str(body.get("error")),
                            correlation_id, body)
        if not isinstance(token, DPoPToken):
            return Exchange(200, None, "not_dpop_bound", correlation_id, {})
        return Exchange(200, token, None, correlation_id, dict(token.kwargs))

    def call(self, token: DPoPToken, method: str, platform: str, path: str, *,
             correlation_id: str, body: Any = None) -> Call:
        url = f"{self.issuer}/gateway/{platform}/{path.lstrip('/')}"
        try:
            resp = self.http.request(method, url, auth=token, json=body, timeout=HTTP_TIMEOUT,
                                     headers={"X-Request-ID": correlation_id})
        except InvalidUseDPoPNonceResponse as e:
            # The library treats any DPoP 401 as a nonce challenge; without a nonce it raises.
            resp = e.response
        return Call(resp.status_code, _json_or_none(resp), correlation_id,
                    resp.headers.get("WWW-Authenticate"))


def _json(resp: requests.Response) -> dict[str, Any]:
    body = _json_or_none(resp)
    return body if isinstance(body, dict) else {"error": f"http_{resp.status_code}"}


def _json_or_none(resp: requests.Response) -> Any:
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        return None
