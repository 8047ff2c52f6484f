"""RFC 6749 §4.1 + RFC 7636 (S256) + RFC 7009: the OAuth 2.0 provider core of the fake platforms.

A real, in-memory OAuth 2.0 provider (authorization code + PKCE, refresh tokens, revocation) that
`authserver.testing.crm` and `authserver.testing.projects` wrap around their own APIs. What differs
between platforms (the "OAuth zoo") is a `Quirks` value: client authentication method, refresh-token
rotation, `expires_in` present or not, extra token-response fields, revocation support.

Every endpoint path below is relative to the platform's base URL (the `ServerThread` URL):

    GET  <authorize>      RFC 6749 §4.1.1; PKCE S256 required; `state` echoed; exact redirect_uri
    POST <authorize>      the consent form's submit (people clicking through the demo)
    POST <token>          grant_type=authorization_code | refresh_token (RFC 6749 §4.1.3, §6)
    POST <revoke>         RFC 7009, when the platform supports it
    GET  /_admin/stats    test-only: counters as JSON (cross-process assertions)
    POST /_admin/expire   test-only: expire every live access token now

TEST-ONLY BEHAVIOUR (never do this in a real provider): with `auto_approve=True`, a `login_hint`
naming a known user signs that user in and approves the request with no password and no consent
screen, so tests and the demo can complete the code flow with plain HTTP GETs. Without
`login_hint` (or with `auto_approve=False`) the endpoint shows a small HTML form to pick the user
and approve or deny. The `/_admin/*` endpoints are unauthenticated. Bind to loopback only.

State lives in memory behind one lock. Tokens and codes are opaque random strings, stored under
their SHA-256 digest so a dump of the dicts holds no usable credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus, urlencode

from flask import Flask, Request, Response, jsonify, redirect, render_template_string, request
from werkzeug.wrappers import Response as BaseResponse

AUTHORIZATION_CODE_TTL = 60  # seconds; RFC 6749 §4.1.2 recommends at most 10 minutes
DEFAULT_ACCESS_TOKEN_TTL = 300  # seconds
TOKEN_BYTES = 32

ADMIN_STATS_PATH = "/_admin/stats"
ADMIN_EXPIRE_PATH = "/_admin/expire"

# RFC 7636 §4.1: code_verifier = 43*128 unreserved characters.
_CODE_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")

STAT_KEYS = (
    "authorization_code",  # codes exchanged for tokens
    "refresh",  # refresh-token grants served
    "refresh_reuse",  # rotated refresh tokens presented again (grant revoked)
    "revoked",  # RFC 7009 requests that revoked something
    "token_error",  # token-endpoint error responses
    "api_request",  # authenticated API calls
    "api_unauthorized",  # API 401s
    "api_forbidden",  # API 403s
)

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True)
class Quirks:
    """How one platform deviates from (or chooses within) RFC 6749."""

    realm: str
    client_auth_method: ClientAuthMethod
    scopes: tuple[str, ...]
    rotate_refresh_tokens: bool
    include_expires_in: bool
    supports_revocation: bool
    # Extra members of every token response, e.g. Salesforce-style `instance_url`.
    extra_token_fields: Callable[[OAuthProvider, str], dict[str, str]] = lambda _p, _u: {}


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass
class Grant:
    """One user's consent to one client: every token below it dies when it is revoked."""

    grant_id: str
    client_id: str
    username: str
    scope: tuple[str, ...]
    revoked: bool = False


@dataclass
class AuthorizationCode:
    grant_id: str
    redirect_uri: str
    code_challenge: str
    expires_at: int
    used: bool = False


@dataclass
class AccessToken:
    grant_id: str
    expires_at: int
    revoked: bool = False


@dataclass
class RefreshToken:
    grant_id: str
    rotated: bool = False


@dataclass
class _State:
    clients: dict[str, RegisteredClient] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))


class TokenEndpointError(Exception):
    """RFC 6749 §5.2 error response (also used by the revocation endpoint)."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})


class ApiError(Exception):
    """A platform API error. `detail` deliberately looks like leaked internals: the broker must
    never pass it through to an agent verbatim."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})


class _AuthorizeRequestError(Exception):
    """An authorization request error that is sent back to the client's redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def s256_challenge(code_verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_CONSENT_FORM = """<!doctype html>
<title>{{ realm }}: sign in</title>
<h1>{{ realm }}</h1>
<p><b>{{ client_id }}</b> wants access to your account ({{ scope }}).</p>
<p><i>Test server: there is no password; pick the user to sign in as.</i></p>
<form method="post" action="{{ action }}">
  {% for name, value in params %}<input type="hidden" name="{{ name }}" value="{{ value }}">
  {% endfor %}
  <label>User <select name="username">
    {% for user in users %}<option{% if user == hint %} selected{% endif %}>{{ user }}</option>
    {% endfor %}
  </select></label>
  <button name="decision" value="approve">Approve</button>
  <button name="decision" value="deny">Deny</button>
</form>
"""


class OAuthProvider:
    """An OAuth 2.0 provider for one fake platform. Subclasses add the API (`_register_api`)."""

    endpoints: Mapping[str, str | None]  # authorize, token, revoke, api_base (paths)

    def __init__(
        self,
        quirks: Quirks,
        users: Iterable[str],
        *,
        access_token_ttl: int = DEFAULT_ACCESS_TOKEN_TTL,
        auto_approve: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.quirks = quirks
        self.users = tuple(users)
        self.access_token_ttl = access_token_ttl
        self.auto_approve = auto_approve
        self.base_url: str | None = None
        self._clock = clock
        # Re-entrant: API handlers hold it while calling authenticate().
        self.lock = threading.RLock()
        self._state = _State()
        self.app = Flask(f"authserver.testing.{quirks.realm}")
        self._register_oauth_routes()
        self._register_api(self.app)

    # --- test controls -------------------------------------------------------------------------

    def register_client(
        self, client_id: str, client_secret: str, redirect_uris: Iterable[str]
    ) -> None:
        with self.lock:
            self._state.clients[client_id] = RegisteredClient(
                client_id, client_secret, tuple(redirect_uris)
            )

    def configure_base_url(self, base_url: str) -> None:
        """Absolute URLs (`urls`, `instance_url`) are built from this; else from the request."""
        self.base_url = base_url.rstrip("/")

    @property
    def urls(self) -> dict[str, str | None]:
        """The `endpoints` as absolute URLs; needs `configure_base_url` (done by start_*)."""
        if self.base_url is None:
            raise RuntimeError("configure_base_url() first")
        return {k: None if p is None else self.base_url + p for k, p in self.endpoints.items()}

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (see STAT_KEYS) plus `active_grants`."""
        with self.lock:
            snapshot = dict(self._state.stats)
            snapshot["active_grants"] = sum(not g.revoked for g in self._state.grants.values())
            return snapshot

    def expire_all_access_tokens(self) -> None:
        """Make every issued access token expired as of now (the broker must refresh)."""
        now = self.now()
        with self.lock:
            for token in self._state.access_tokens.values():
                token.expires_at = min(token.expires_at, now)

    def now(self) -> int:
        return int(self._clock())

    # --- API support for subclasses -------------------------------------------------------------

    def _register_api(self, app: Flask) -> None:
        raise NotImplementedError

    def authenticate(self, required_scope: str) -> str:
        """RFC 6750 §2.1 bearer authentication of the current request; returns the username.

        Raises ApiError 401 (missing, unknown, expired or revoked token) or 403 (scope).
        """
        challenge = f'Bearer realm="{self.quirks.realm}"'
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            # RFC 6750 §3.1: no error code when the request carried no credentials.
            self._count("api_unauthorized")
            raise ApiError(
                401,
                "unauthorized",
                "Authentication required.",
                detail="AuthMiddleware: no bearer credential on request (gw=edge-2)",
                headers={"WWW-Authenticate": challenge},
            )
        now = self.now()
        with self.lock:
            grant = self._live_grant(token, now)
            if grant is None:
                self._count("api_unauthorized")
                raise ApiError(
                    401,
                    "invalid_token",
                    "The access token is invalid.",
                    detail=f"TokenStore.lookup: token unknown, revoked or expired (now={now})",
                    headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
                )
            if required_scope not in grant.scope:
                self._count("api_forbidden")
                raise ApiError(
                    403,
                    "insufficient_scope",
                    "The access token lacks the required scope.",
                    detail=f"ScopeGuard: need {required_scope!r}, grant {grant.grant_id} has "
                    f"{' '.join(grant.scope)!r}",
                    headers={
                        "WWW-Authenticate": f'{challenge}, error="insufficient_scope", '
                        f'scope="{required_scope}"'
                    },
                )
            self._count("api_request")
            return grant.username

    def _live_grant(self, access_token: str, now: int) -> Grant | None:
        """The grant behind a live access token; None if unknown, revoked or expired."""
        record = self._state.access_tokens.get(_digest(access_token))
        if record is None or record.revoked or now >= record.expires_at:
            return None
        grant = self._state.grants[record.grant_id]
        return None if grant.revoked else grant

    def forbid(self, username: str, what: str) -> ApiError:
        """The 403 a subclass raises when `username` may not touch `what`."""
        self._count("api_forbidden")
        return ApiError(
            403,
            "forbidden",
            "You do not have permission to access this resource.",
            detail=f"AclDenied: principal=usr_{username} lacks OWNER on {what} "
            f"[acl.py:212 shard=db-3 trace={secrets.token_hex(4)}]",
        )

    def request_base_url(self) -> str:
        return self.base_url or request.host_url.rstrip("/")

    # --- routes ---------------------------------------------------------------------------------

    def _register_oauth_routes(self) -> None:
        app = self.app
        authorize_path = self.endpoints["authorize"]
        token_path = self.endpoints["token"]
        assert authorize_path is not None and token_path is not None
        app.add_url_rule(authorize_path, "authorize", self._authorize, methods=["GET", "POST"])
        app.add_url_rule(token_path, "token", self._token, methods=["POST"])
        revoke_path = self.endpoints["revoke"]
        if self.quirks.supports_revocation and revoke_path is not None:
            app.add_url_rule(revoke_path, "revoke", self._revoke, methods=["POST"])
        app.add_url_rule(ADMIN_STATS_PATH, "admin_stats", lambda: jsonify(self.stats))
        app.add_url_rule(ADMIN_EXPIRE_PATH, "admin_expire", self._admin_expire, methods=["POST"])
        app.register_error_handler(TokenEndpointError, self._token_error_response)
        app.register_error_handler(ApiError, self._api_error_response)

    def _admin_expire(self) -> Response:
        self.expire_all_access_tokens()
        return jsonify(self.stats)

    def _token_error_response(self, error: TokenEndpointError) -> Response:
        self._count("token_error")
        response = jsonify(error=error.error, error_description=error.description)
        response.status_code = error.status
        response.headers.update(error.headers)
        response.headers["Cache-Control"] = "no-store"
        return response

    @staticmethod
    def _api_error_response(error: ApiError) -> Response:
        response = jsonify(error=error.error, message=error.message, detail=error.detail)
        response.status_code = error.status
        response.headers.update(error.headers)
        return response

    # --- authorization endpoint (RFC 6749 §4.1.1, RFC 7636 §4.3) --------------------------------

    def _authorize(self) -> BaseResponse | str | tuple[str, int]:
        params = request.values
        with self.lock:
            client = self._state.clients.get(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        # RFC 6749 §4.1.2.1: with a bad client or redirect URI, tell the user, never redirect.
        if client is None:
            return "Unknown client_id.", 400
        if redirect_uri not in client.redirect_uris:
            return "redirect_uri does not exactly match a registered redirect URI.", 400
        state = params.get("state")
        try:
            scope = self._check_authorization_request(params)
            username = self._authenticate_user(params)
        except _AuthorizeRequestError as e:
            return self._redirect(
                redirect_uri, error=e.error, error_description=e.description, state=state
            )
        if username is None:
            return self._consent_form(client.client_id, scope, params)
        code = self._issue_code(client, username, scope, redirect_uri, params["code_challenge"])
        return self._redirect(redirect_uri, code=code, state=state)

    def _check_authorization_request(self, params: Mapping[str, str]) -> tuple[str, ...]:
        if params.get("response_type") != "code":
            raise _AuthorizeRequestError("unsupported_response_type", "response_type must be code")
        # PKCE is mandatory here (OAuth 2.1), and only S256 (RFC 7636 §4.2).
        if not params.get("code_challenge"):
            raise _AuthorizeRequestError("invalid_request", "code_challenge is required")
        if params.get("code_challenge_method") != "S256":
            raise _AuthorizeRequestError("invalid_request", "code_challenge_method must be S256")
        requested = tuple(params.get("scope", "").split())
        if not requested:
            return self.quirks.scopes  # RFC 6749 §3.3: a documented default scope
        unknown = [s for s in requested if s not in self.quirks.scopes]
        if unknown:
            raise _AuthorizeRequestError("invalid_scope", "unknown scope requested")
        return requested

    def _authenticate_user(self, params: Mapping[str, str]) -> str | None:
        """The signed-in user, or None to show the consent form. TEST-ONLY: no password."""
        if request.method == "POST":
            if params.get("decision") != "approve":
                raise _AuthorizeRequestError("access_denied", "the user denied the request")
            username = params.get("username", "")
        elif self.auto_approve and params.get("login_hint"):
            username = params["login_hint"]
        else:
            return None
        if username not in self.users:
            raise _AuthorizeRequestError("access_denied", "unknown user")
        return username

    def _consent_form(self, client_id: str, scope: tuple[str, ...], params: Any) -> str:
        skip = {"username", "decision"}
        return render_template_string(
            _CONSENT_FORM,
            realm=self.quirks.realm,
            client_id=client_id,
            scope=" ".join(scope),
            action=request.path,
            params=[(k, v) for k, v in params.items() if k not in skip],
            users=self.users,
            hint=params.get("login_hint"),
        )

    @staticmethod
    def _redirect(redirect_uri: str, **params: str | None) -> BaseResponse:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        separator = "&" if "?" in redirect_uri else "?"
        return redirect(f"{redirect_uri}{separator}{query}", code=302)

    def _issue_code(
        self,
        client: RegisteredClient,
        username: str,
        scope: tuple[str, ...],
        redirect_uri: str,
        code_challenge: str,
    ) -> str:
        code = secrets.token_urlsafe(TOKEN_BYTES)
        with self.lock:
            grant = Grant(secrets.token_hex(8), client.client_id, username, scope)
            self._state.grants[grant.grant_id] = grant
            self._state.codes[_digest(code)] = AuthorizationCode(
                grant.grant_id, redirect_uri, code_challenge, self.now() + AUTHORIZATION_CODE_TTL
            )
        return code

    # --- token endpoint (RFC 6749 §4.1.3, §6) ---------------------------------------------------

    def _token(self) -> Response:
        client = self._authenticate_client(request)
        grant_type = request.form.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                grant = self._redeem_code(client, request.form)
                body = self._issue_tokens(grant, with_refresh_token=True)
                self._count("authorization_code")
            elif grant_type == "refresh_token":
                grant = self._redeem_refresh_token(client, request.form)
                body = self._issue_tokens(
                    grant, with_refresh_token=self.quirks.rotate_refresh_tokens
                )
                self._count("refresh")
            else:
                raise TokenEndpointError("unsupported_grant_type", "grant_type not supported")
        response = jsonify(body)
        # RFC 6749 §5.1: token responses must not be cached.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def _authenticate_client(self, req: Request) -> RegisteredClient:
        """RFC 6749 §2.3.1, strictly by the platform's one registered method."""
        header = req.headers.get("Authorization", "")
        if self.quirks.client_auth_method == "client_secret_basic":
            challenge = {"WWW-Authenticate": f'Basic realm="{self.quirks.realm}"'}
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() != "basic" or "client_secret" in req.form:
                raise TokenEndpointError(
                    "invalid_client", "use client_secret_basic", status=401, headers=challenge
                )
            try:
                raw_id, _, raw_secret = (
                    base64.b64decode(encoded, validate=True).decode().partition(":")
                )
            except ValueError as e:
                raise TokenEndpointError(
                    "invalid_client", "malformed Basic credentials", status=401, headers=challenge
                ) from e
            # §2.3.1: both parts are form-urlencoded before base64.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        else:
            challenge = {}
            if header:
                raise TokenEndpointError("invalid_client", "use client_secret_post", status=401)
            client_id = req.form.get("client_id", "")
            secret = req.form.get("client_secret", "")
        with self.lock:
            client = self._state.clients.get(client_id)
        if client is None or not hmac.compare_digest(
            client.client_secret.encode(), secret.encode()
        ):
            raise TokenEndpointError(
                "invalid_client", "client authentication failed", status=401, headers=challenge
            )
        return client

    def _redeem_code(self, client: RegisteredClient, form: Mapping[str, str]) -> Grant:
        code = self._state.codes.get(_digest(form.get("code", "")))
        if code is None:
            raise TokenEndpointError("invalid_grant", "unknown authorization code")
        grant = self._state.grants[code.grant_id]
        if grant.client_id != client.client_id:
            raise TokenEndpointError("invalid_grant", "code was issued to another client")
        if code.used:
            # RFC 6749 §4.1.2: a reused code SHOULD revoke the tokens issued from it.
            grant.revoked = True
            raise TokenEndpointError("invalid_grant", "authorization code already used")
        code.used = True
        if self.now() >= code.expires_at:
            raise TokenEndpointError("invalid_grant", "authorization code expired")
        if form.get("redirect_uri") != code.redirect_uri:
            raise TokenEndpointError("invalid_grant", "redirect_uri does not match")
        verifier = form.get("code_verifier", "")
        if not _CODE_VERIFIER.match(verifier):
            raise TokenEndpointError("invalid_grant", "code_verifier missing or malformed")
        if not hmac.compare_digest(s256_challenge(verifier), code.code_challenge):
            raise TokenEndpointError("invalid_grant", "PKCE verification failed")
        return grant

    def _redeem_refresh_token(self, client: RegisteredClient, form: Mapping[str, str]) -> Grant:
        digest = _digest(form.get("refresh_token", ""))
        record = self._state.refresh_tokens.get(digest)
        if record is None:
            raise TokenEndpointError("invalid_grant", "unknown refresh token")
        grant = self._state.grants[record.grant_id]
        if grant.client_id != client.client_id:
            raise TokenEndpointError("invalid_grant", "refresh token was issued to another client")
        if grant.revoked:
            raise TokenEndpointError("invalid_grant", "grant revoked")
        if record.rotated:
            # Reuse of a rotated token means two parties hold it: kill the whole family
            # (OAuth 2.0 Security BCP §4.14.2), as real rotating providers do.
            grant.revoked = True
            self._count("refresh_reuse")
            raise TokenEndpointError("invalid_grant", "refresh token reused; grant revoked")
        if self.quirks.rotate_refresh_tokens:
            record.rotated = True
        return grant

    def _issue_tokens(self, grant: Grant, *, with_refresh_token: bool) -> dict[str, Any]:
        access_token = secrets.token_urlsafe(TOKEN_BYTES)
        self._state.access_tokens[_digest(access_token)] = AccessToken(
            grant.grant_id, self.now() + self.access_token_ttl
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "scope": " ".join(grant.scope),
        }
        if self.quirks.include_expires_in:
            body["expires_in"] = self.access_token_ttl
        if with_refresh_token:
            refresh_token = secrets.token_urlsafe(TOKEN_BYTES)
            self._state.refresh_tokens[_digest(refresh_token)] = RefreshToken(grant.grant_id)
            body["refresh_token"] = refresh_token
        body.update(self.quirks.extra_token_fields(self, grant.username))
        return body

    # --- revocation endpoint (RFC 7009) ---------------------------------------------------------

    def _revoke(self) -> Response:
        client = self._authenticate_client(request)
        digest = _digest(request.form.get("token", ""))
        # RFC 7009 §2.1: the hint only speeds up the lookup; an invalid one is ignored.
        with self.lock:
            refresh = self._state.refresh_tokens.get(digest)
            access = self._state.access_tokens.get(digest)
            grant_id = refresh.grant_id if refresh else access.grant_id if access else None
            grant = None if grant_id is None else self._state.grants[grant_id]
            # §2.1: a token of another client is not revoked; answer 200 all the same (§2.2).
            if grant is not None and grant.client_id == client.client_id:
                if refresh is not None:
                    grant.revoked = True  # §2.1: revoke the grant's access tokens too
                elif access is not None:
                    access.revoked = True
                self._count("revoked")
        return Response(status=200)

    def _count(self, key: str) -> None:
        with self.lock:
            self._state.stats[key] += 1
