"""Fake vendor OAuth servers that behave as each vendor documents (issue 19), one small Flask
app per test: the token endpoint's body format and client authentication, refresh-token
rotation (with an optional reuse leeway), error shapes and revocation are per vendor.

The authorization step is skipped: `issue_code` hands out a code bound to a PKCE challenge and
scopes, as the vendor's consent screen would.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask, Response, jsonify, request

from authserver.testing.server import ServerThread


@dataclass
class FakeGrant:
    scope: tuple[str, ...]
    revoked: bool = False


@dataclass
class VendorFake:
    """The OAuth side of one vendor. Subclass hooks: `error`, `success`, `routes`."""

    token_path: str = "/oauth/token"
    json_body: bool = False
    client_auth: str = "post"  # "post" | "basic"
    rotate: bool = False
    reuse_grace: int = 0
    expires_in: int | None = 3600
    #: Issue a refresh token only when this scope was granted (None: always).
    refresh_scope: str | None = None
    client_id: str = "cid"
    client_secret: str = "csecret"
    now: Callable[[], float] = time.time
    grants: dict[str, FakeGrant] = field(default_factory=dict)
    codes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    refresh_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    #: Seconds to stall (after processing) the next N refresh responses: a lost answer.
    stall_refreshes: int = 0
    stall_seconds: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.app = Flask(f"vendor-{id(self)}")
        self.app.add_url_rule(self.token_path, "token", self._token, methods=["POST"])
        self.routes(self.app)

    # --- hooks ----------------------------------------------------------------------------------

    def routes(self, app: Flask) -> None:
        """Extra endpoints (revocation, API)."""

    def error(self, code: str, status: int = 400) -> Response:
        response = jsonify(error=code, error_description="(fake) " + code)
        response.status_code = status
        return response

    def success(self, body: dict[str, Any], grant_type: str) -> Response:
        return jsonify(body)

    # --- test controls --------------------------------------------------------------------------

    def issue_code(self, challenge: str | None, scope: tuple[str, ...] = ()) -> str:
        code = secrets.token_urlsafe(16)
        with self.lock:
            grant_id = secrets.token_hex(4)
            self.grants[grant_id] = FakeGrant(scope)
            self.codes[code] = (grant_id, challenge)
        return code

    def expire_access_tokens(self) -> None:
        with self.lock:
            for record in self.access_tokens.values():
                record["exp"] = 0

    @property
    def live_grants(self) -> int:
        return sum(not g.revoked for g in self.grants.values())

    def grant_of_access(self, token: str) -> FakeGrant | None:
        record = self.access_tokens.get(token)
        if record is None or record["exp"] <= self.now():
            return None
        grant = self.grants[record["grant"]]
        return None if grant.revoked else grant

    def body(self) -> dict[str, Any]:
        if self.json_body:
            return dict(request.get_json(force=True, silent=True) or {})
        return dict(request.form)

    def authenticated(self, body: dict[str, Any]) -> bool:
        header = request.headers.get("Authorization", "")
        if self.client_auth == "basic":
            raw = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            return header == "Basic " + raw and "client_secret" not in body
        return body.get("client_id") == self.client_id and \
            body.get("client_secret") == self.client_secret and not header

    def revoke_grant_of(self, token: str) -> bool:
        with self.lock:
            record = self.refresh_tokens.get(token) or self.access_tokens.get(token)
            if record is None:
                return False
            self.grants[record["grant"]].revoked = True
            return True

    # --- token endpoint -------------------------------------------------------------------------

    def _token(self) -> Response:
        body = self.body()
        self.log.append(("POST", request.path, body, dict(request.headers)))
        if not self.authenticated(body):
            return self.error("invalid_client", 401)
        grant_type = body.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                found = self.codes.pop(str(body.get("code")), None)
                if found is None:
                    return self.error("invalid_grant")
                grant_id, challenge = found
                if challenge is not None:
                    digest = hashlib.sha256(str(body.get("code_verifier", "")).encode()).digest()
                    if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                        return self.error("invalid_grant")
                out = self._issue(grant_id, refresh=True)
            elif grant_type == "refresh_token":
                record = self.refresh_tokens.get(str(body.get("refresh_token")))
                if record is None or self.grants[record["grant"]].revoked:
                    return self.error("invalid_grant")
                rotated_at = record.get("rotated_at")
                if rotated_at is not None and self.now() - rotated_at > self.reuse_grace:
                    self.grants[record["grant"]].revoked = True  # reuse: kill the family
                    return self.error("invalid_grant")
                if self.rotate and rotated_at is None:
                    record["rotated_at"] = self.now()
                out = self._issue(record["grant"], refresh=self.rotate)
                stall = self.stall_refreshes > 0
                self.stall_refreshes -= 1 if stall else 0
            else:
                return self.error("unsupported_grant_type")
        if grant_type == "refresh_token" and stall:
            time.sleep(self.stall_seconds)
        return self.success(out, str(grant_type))

    def _issue(self, grant_id: str, *, refresh: bool) -> dict[str, Any]:
        grant = self.grants[grant_id]
        access = "at-" + secrets.token_urlsafe(12)
        self.access_tokens[access] = {"grant": grant_id, "exp": self.now() + 3600}
        out: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                               "scope": " ".join(grant.scope)}
        if self.expires_in is not None:
            out["expires_in"] = self.expires_in
        if refresh and (self.refresh_scope is None or self.refresh_scope in grant.scope):
            token = "rt-" + secrets.token_urlsafe(12)
            self.refresh_tokens[token] = {"grant": grant_id}
            out["refresh_token"] = token
        return out


@contextmanager
def serving(fake: VendorFake) -> Iterator[str]:
    server = ServerThread(fake.app)
    try:
        yield server.start()
    finally:
        server.stop()


def authorize_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
