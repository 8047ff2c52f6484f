"""Helpers for the gateway and broker HTTP tests (on top of tests/stack.py).

`PlatformRecorder` is WSGI middleware in front of a fake platform: it records what reached the
platform's API (method, raw target, the bearer token, X-Request-ID) and every token its token
endpoint issued, so a test can prove that none of those tokens ever reaches the agent. The raw
gateway caller uses http.client, because requests/urllib3 normalise dot segments and would
never send `deals/acme-123/../globex-7` as written.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from requests_oauth2client import DPoPKey

from tests.stack import GRANT_TOKEN_EXCHANGE, TT_ACCESS_TOKEN, Stack, compact, intent, mandate

HTTP_TIMEOUT = 30


def ath(token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(access token))."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class ApiCall:
    method: str
    target: str
    authorization: str | None
    request_id: str | None


@dataclass
class PlatformRecorder:
    """Wraps `provider.app.wsgi_app`; thread-safe."""

    app: Callable[..., Any]
    token_path: str
    api_calls: list[ApiCall] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def install(cls, provider: Any) -> PlatformRecorder:
        recorder = cls(provider.app.wsgi_app, provider.endpoints["token"])
        provider.app.wsgi_app = recorder
        return recorder

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == self.token_path:
            body = b"".join(self.app(environ, start_response))
            self._remember_tokens(body)
            return [body]
        if not path.startswith(("/oauth", "/_admin")):
            with self._lock:
                self.api_calls.append(ApiCall(
                    environ["REQUEST_METHOD"],
                    environ.get("REQUEST_URI") or environ.get("RAW_URI") or path,
                    environ.get("HTTP_AUTHORIZATION"),
                    environ.get("HTTP_X_REQUEST_ID"),
                ))
        return self.app(environ, start_response)

    def _remember_tokens(self, body: bytes) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            return
        if isinstance(doc, dict):
            with self._lock:
                for name in ("access_token", "refresh_token"):
                    if isinstance(doc.get(name), str):
                        self.issued.add(doc[name])

    def secrets(self) -> set[str]:
        """Every token the platform issued, and every bearer value its API was shown."""
        with self._lock:
            seen = {c.authorization.partition(" ")[2] for c in self.api_calls
                    if c.authorization}
            return {s for s in self.issued | seen if s}


def assert_no_secret_in(texts: Iterable[str], secrets_: Iterable[str]) -> None:
    blob = "\n".join(texts)
    leaked = [s[:6] + "…" for s in secrets_ if s in blob]
    assert not leaked, f"platform tokens leaked: {leaked}"


# --- getting a capability token -------------------------------------------------------------


def capability(stack: Stack, username: str, what: Mapping[str, Any] | None = None, *,
               details: list[dict[str, Any]] | None = None, key: DPoPKey | None = None,
               headers: Mapping[str, str] | None = None) -> tuple[str, DPoPKey]:
    """Edge mint for `username` (mandate `details`), then the agent exchange for `what`."""
    assertion, key = stack.edge_mint(username, details, agent_key=key)
    resp = stack.agent_exchange(assertion, key, intent=what or intent(), headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "DPoP"
    return body["access_token"], key


def write_mandate(resource: str = "deal:*", actions: tuple[str, ...] = ("read", "update"),
                  request: str = "Move the Acme deal to closed-won") -> list[dict[str, Any]]:
    return mandate({"platform": "crm", "actions": list(actions), "resources": [resource],
                    "max_count": 1}, request=request)


# --- raw gateway calls ------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def raw_request(base_url: str, method: str, target: str, headers: Mapping[str, str],
                body: bytes | None = None) -> RawResponse:
    """Send `target` exactly as written (no normalisation, no re-encoding)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return RawResponse(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def raw_proof(key: DPoPKey, htm: str, htu: str, *, token: str | None = None) -> str:
    """A DPoP proof whose `htu` is exactly `htu` (DPoPKey.proof re-encodes it with furl)."""
    import jwskate

    claims: dict[str, Any] = {"jti": key.jti_generator(), "htm": htm, "htu": htu,
                              "iat": key.iat_generator()}
    if token is not None:
        claims["ath"] = ath(token)
    return str(jwskate.SignedJwt.sign(claims, key=key.private_key, alg=key.alg,
                                      typ=key.jwt_typ, extra_headers={"jwk": key.public_jwk}))


def gateway_raw(issuer: str, token: str, key: DPoPKey, method: str, raw_path: str, *,
                base_url: str | None = None, headers: Mapping[str, str] | None = None,
                json_body: Any = None) -> RawResponse:
    """<METHOD> <issuer>/gateway/<raw_path> with a proof whose htu is that exact URL (no query)."""
    target = "/gateway/" + raw_path
    htu = issuer + target.split("?", 1)[0]
    all_headers = {"Authorization": f"DPoP {token}",
                   "DPoP": raw_proof(key, method, htu, token=token), **(headers or {})}
    body = None
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers["Content-Type"] = "application/json"
    return raw_request(base_url or issuer, method, target, all_headers, body)


# --- talking to a second authserver process with its own issuer ----------------------------


def mint_at(stack: Stack, issuer: str, username: str, key: DPoPKey,
            details: list[dict[str, Any]] | None = None) -> str:
    """The edge mint at another instance (its own issuer: actor token `aud` = that issuer)."""
    import requests

    from tests.stack import TT_ID_TOKEN, TT_JWT

    resp = requests.post(issuer + "/token", data={
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": stack.idp_id_token(username),
        "subject_token_type": TT_ID_TOKEN,
        "actor_token": stack.agent.assertion(issuer),
        "actor_token_type": TT_JWT,
        "dpop_jkt": str(key.dpop_jkt),
        "authorization_details": compact(details or mandate()),
    }, auth=(stack.edge_id, stack.edge_secret), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def exchange_at(stack: Stack, issuer: str, assertion: str, key: DPoPKey,
                what: Mapping[str, Any] | None = None) -> str:
    """The agent exchange at another instance; returns the capability token."""
    import requests

    resp = requests.post(issuer + "/token", data={
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "client_id": stack.agent.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": stack.agent.assertion(issuer),
        "subject_token": assertion,
        "subject_token_type": TT_ACCESS_TOKEN,
        "audience": "crm",
        "intent": compact(what or intent()),
    }, headers={"DPoP": str(key.proof("POST", issuer + "/token"))}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])
