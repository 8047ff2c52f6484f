"""A real OpenID Connect provider for tests and the demo (OIDC Core 1.0 §3.1, Discovery 1.0).

https://openid.net/specs/openid-connect-core-1_0.html#CodeFlowAuth, RFC 7636 (PKCE S256),
RFC 9207 (`iss` in the authorization response), RFC 6749 §2.3.1 (client_secret_basic/post).

TEST-ONLY, never deploy: `/authorize?...&login_hint=<username>` signs that user in with no
password and no consent (so tests run the code flow without a browser); without a hint a bare
form asks for a username, again without a password. Users, clients, codes and keys live in
this process's memory.

Test controls: `rotate_keys(keep_old=...)`, `mint_id_token(...)`, `mint_id_jag(...)` and
`mint_set(...)` (a Shared Signals SET, as this IdP's transmitter would push it; any claim or
header can be made wrong), `ssf` (its SSF transmitter: streams, verification, poll; see
authserver/testing/ssf_transmitter.py), `register_client(...)`, `allow_id_jag(...)`, a
settable `clock`, and `jwks_requests` (how often the JWKS was fetched).

Cross-App Access (draft-ietf-oauth-identity-assertion-authz-grant §4.3): a client registered
with `allow_id_jag(client, audience=..., client_id_there=...)` trades an ID token this IdP issued
to it (RFC 8693 token exchange, `requested_token_type=urn:ietf:params:oauth:token-type:id-jag`)
for an ID-JAG for that audience. The IdP's "policy" is only that mapping: whatever `scope`,
`resource` and `authorization_details` the client asks for are copied into the grant.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from flask import Flask, Response, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from markupsafe import escape

from authserver.testing.server import ServerThread
from authserver.testing.ssf_transmitter import Transmitter
from authserver.testing.ssf_transmitter import install as install_transmitter

CODE_TTL = 60
ID_TOKEN_TTL = 300
ACCESS_TOKEN_TTL = 300
ID_JAG_TTL = 300

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TT_ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ID_JAG_TYP = "oauth-id-jag+jwt"
SET_TYP = "secevent+jwt"

#: The people this IdP knows. `sub` is deliberately not the username or the e-mail.
DEFAULT_USERS: Mapping[str, Mapping[str, Any]] = {
    "alice": {
        "sub": "00u1alice7f3a",
        "email": "alice@acme.example",
        "name": "Alice Adams",
        "groups": ["sales"],
        "roles": ["rep"],
        "tenant": "acme",
    },
    "bob": {
        "sub": "00u2bob91c0d",
        "email": "bob@acme.example",
        "name": "Bob Brown",
        "groups": ["sales"],
        "roles": ["rep"],
        "tenant": "acme",
    },
    "carol": {
        "sub": "00u3carol44e2",
        "email": "carol@acme.example",
        "name": "Carol Chen",
        "groups": ["it", "admins"],
        "roles": ["admin"],
        "tenant": "acme",
    },
}
_PROFILE_CLAIMS = ("email", "name", "groups", "roles", "tenant")

Key = RSAKey | ECKey


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    username: str
    nonce: str | None
    code_challenge: str
    scope: str
    auth_time: int
    expires_at: int


@dataclass
class _Client:
    secret_sha256: bytes
    redirect_uris: tuple[str, ...]
    #: Cross-App Access: audience (a resource AS issuer) -> this client's client_id there.
    id_jag_audiences: dict[str, str] | None = None


def _generate_key(alg: str) -> Key:
    if alg == "RS256":
        return RSAKey.generate_key(2048, auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", auto_kid=True)
    raise ValueError("alg must be RS256 or ES256")


def _alg_for(key: Key) -> str:
    return "RS256" if isinstance(key, RSAKey) else "ES256"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class IdP:
    """One OIDC provider. `.app` is its Flask app; serve it where `issuer` says it lives."""

    def __init__(
        self,
        issuer: str | None = None,
        *,
        alg: str = "RS256",
        users: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/") if issuer else None
        self.alg = alg
        self.users: dict[str, dict[str, Any]] = copy.deepcopy(
            {k: dict(v) for k, v in (users or DEFAULT_USERS).items()}
        )
        self.clock: Callable[[], int] = clock or (lambda: int(time.time()))
        self.jwks_requests = 0
        self._mutex = threading.Lock()
        signing = _generate_key(alg)
        self._signing: Key = signing
        self._published: list[Key] = [signing]
        self._all_keys: dict[str, Key] = {str(signing.kid): signing}
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._access_tokens: dict[str, tuple[str, int]] = {}
        #: Its Shared Signals transmitter (authserver/testing/ssf_transmitter.py).
        self.ssf = Transmitter(self)
        self.app = self._build_app()

    # --- test controls -----------------------------------------------------------------------

    @property
    def current_kid(self) -> str:
        return str(self._signing.kid)

    def register_client(
        self, client_id: str, client_secret: str, redirect_uris: Sequence[str]
    ) -> None:
        with self._mutex:
            self._clients[client_id] = _Client(
                hashlib.sha256(client_secret.encode()).digest(), tuple(redirect_uris)
            )

    def allow_id_jag(self, client_id: str, *, audience: str, client_id_there: str) -> None:
        """Let `client_id` obtain ID-JAGs for the authorization server `audience`, where it
        is registered as `client_id_there` (the draft's §5 client id mapping)."""
        with self._mutex:
            client = self._clients[client_id]
            client.id_jag_audiences = {**(client.id_jag_audiences or {}),
                                       audience: client_id_there}

    def rotate_keys(self, *, keep_old: bool = True) -> str:
        """Sign with a new key from now on; keep the old ones published or remove them."""
        key = _generate_key(self.alg)
        with self._mutex:
            self._signing = key
            self._published = [key, *self._published] if keep_old else [key]
            self._all_keys[str(key.kid)] = key  # still usable by mint_id_token(kid=old)
        return str(key.kid)

    def jwks(self) -> dict[str, Any]:
        with self._mutex:
            return {
                "keys": [
                    {**k.as_dict(private=False), "use": "sig", "alg": _alg_for(k)}
                    for k in self._published
                ]
            }

    @staticmethod
    def foreign_key(alg: str = "RS256") -> Key:
        """A key this IdP never published (for bad-signature tests)."""
        return _generate_key(alg)

    def mint_id_token(
        self,
        username: str,
        *,
        aud: str | Sequence[str],
        nonce: str | None = None,
        exp_in: int = ID_TOKEN_TTL,
        iss: str | None = None,
        kid: str | None = None,
        sign_with: Key | None = None,
        extra: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """An ID token for `username`. `extra`/`header` add or replace members (None removes).

        `kid` picks a key this IdP has ever had (also a removed one) and names it in the header;
        with `sign_with`, that key signs while the header still says `kid` (or the current kid).
        """
        now = self.clock()
        user = self.users[username]
        claims: dict[str, Any] = {
            "iss": iss or self._issuer(),
            "sub": user["sub"],
            "aud": aud if isinstance(aud, str) else list(aud),
            "iat": now,
            "exp": now + exp_in,
            "auth_time": now,
            "email_verified": True,
            **{c: user[c] for c in _PROFILE_CLAIMS if c in user},
        }
        if nonce is not None:
            claims["nonce"] = nonce
        with self._mutex:
            if sign_with is not None:
                key = sign_with
            elif kid is not None and kid in self._all_keys:
                key = self._all_keys[kid]
            else:
                key = self._signing
            # With sign_with the header still names a published kid: a forged signature.
            named = self._signing if sign_with is not None else key
            head_kid = kid or str(named.kid)
        return self._sign(claims, key, head_kid, extra=extra, header=header)

    def mint_id_jag(
        self,
        username: str,
        *,
        aud: str | Sequence[str],
        client_id: str,
        scope: str | None = None,
        resource: str | Sequence[str] | None = None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        exp_in: int = ID_JAG_TTL,
        sign_with: Key | None = None,
        extra: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """An ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3) for `username`:
        `typ: oauth-id-jag+jwt`, a fresh `jti`. `extra`/`header` add or replace members
        (None removes), `sign_with` forges the signature as in `mint_id_token`."""
        now = self.clock()
        user = self.users[username]
        claims: dict[str, Any] = {
            "iss": self._issuer(),
            "sub": user["sub"],
            "aud": aud if isinstance(aud, str) else list(aud),
            "client_id": client_id,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + exp_in,
            "auth_time": now,
            **{c: user[c] for c in _PROFILE_CLAIMS if c in user},
        }
        if scope is not None:
            claims["scope"] = scope
        if resource is not None:
            claims["resource"] = resource if isinstance(resource, str) else list(resource)
        if authorization_details is not None:
            claims["authorization_details"] = [dict(d) for d in authorization_details]
        with self._mutex:
            key = sign_with or self._signing
            kid = str(self._signing.kid)
        return self._sign(claims, key, kid, extra=extra,
                          header={"typ": ID_JAG_TYP, **(header or {})})

    def mint_set(
        self,
        event_type: str,
        event: Mapping[str, Any] | None = None,
        *,
        aud: str | Sequence[str],
        sub_id: Mapping[str, Any] | None = None,
        username: str | None = None,
        iat: int | None = None,
        sign_with: Key | None = None,
        extra: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """A Security Event Token (RFC 8417, SSF 1.0 §4.1) as this IdP's transmitter would
        push it: `typ: secevent+jwt`, a fresh `jti`, one event, and a top-level `sub_id`
        (`sub_id`, or `iss_sub` for `username`). `extra`/`header` add or replace members
        (None removes), `sign_with` forges the signature as in `mint_id_token`."""
        claims: dict[str, Any] = {
            "iss": self._issuer(),
            "jti": secrets.token_urlsafe(16),
            "iat": self.clock() if iat is None else iat,
            "aud": aud if isinstance(aud, str) else list(aud),
            "events": {event_type: dict(event or {})},
        }
        if sub_id is not None:
            claims["sub_id"] = dict(sub_id)
        elif username is not None:
            claims["sub_id"] = {"format": "iss_sub", "iss": self._issuer(),
                                "sub": self.users[username]["sub"]}
        with self._mutex:
            key = sign_with or self._signing
            kid = str(self._signing.kid)
        return self._sign(claims, key, kid, extra=extra,
                          header={"typ": SET_TYP, **(header or {})})

    # --- internals ---------------------------------------------------------------------------

    def _issuer(self) -> str:
        # start_idp sets the issuer to the URL it serves on; before that, the request's root.
        return self.issuer or request.url_root.rstrip("/")

    def _sign(
        self,
        claims: dict[str, Any],
        key: Key,
        kid: str,
        *,
        extra: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        head: dict[str, Any] = {"alg": _alg_for(key), "kid": kid, "typ": "JWT"}
        for target, changes in ((claims, extra), (head, header)):
            for name, value in (changes or {}).items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value
        return jwt.encode(head, claims, key, algorithms=[head["alg"]])

    def _id_token(self, code: _Code, access_token: str) -> str:
        now = self.clock()
        user = self.users[code.username]
        digest = hashlib.sha256(access_token.encode()).digest()
        claims: dict[str, Any] = {
            "iss": self._issuer(),
            "sub": user["sub"],
            "aud": code.client_id,
            "azp": code.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_TTL,
            "auth_time": code.auth_time,
            "at_hash": _b64url(digest[:16]) if self.alg == "RS256" or self.alg == "ES256" else None,
            "email_verified": True,
            **{c: user[c] for c in _PROFILE_CLAIMS if c in user},
        }
        if code.nonce is not None:
            claims["nonce"] = code.nonce
        with self._mutex:
            key = self._signing
        return self._sign(claims, key, str(key.kid))

    def _verify_own_id_token(self, token: str, client_id: str) -> str | None:
        """The username of a live ID token this IdP issued to `client_id`, else None."""
        from joserfc import jws
        from joserfc.errors import JoseError

        try:
            kid = jws.extract_compact(token.encode()).protected.get("kid")
            with self._mutex:
                key = self._all_keys[str(kid)]
            claims = jwt.decode(token, key, algorithms=[_alg_for(key)]).claims
        except (JoseError, KeyError, ValueError, TypeError):
            return None
        if claims.get("iss") != self._issuer() or claims.get("aud") != client_id:
            return None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self.clock():
            return None
        for username, user in self.users.items():
            if user["sub"] == claims.get("sub"):
                return username
        return None

    def _token_exchange(self, client_id: str) -> Any:
        """draft-ietf-oauth-identity-assertion-authz-grant §4.3: ID token -> ID-JAG."""
        form = request.form
        if form.get("requested_token_type") != TT_ID_JAG:
            return _error("invalid_request")
        if form.get("subject_token_type") != TT_ID_TOKEN or form.get("actor_token"):
            return _error("invalid_request")
        with self._mutex:
            audiences = dict(self._clients[client_id].id_jag_audiences or {})
        audience = form.get("audience", "")
        if audience not in audiences:
            return _error("invalid_target")
        username = self._verify_own_id_token(form.get("subject_token", ""), client_id)
        if username is None:
            return _error("invalid_grant")
        details = None
        if form.get("authorization_details"):
            import json

            details = json.loads(form["authorization_details"])
        resources = form.getlist("resource")
        grant = self.mint_id_jag(
            username, aud=audience, client_id=audiences[audience],
            scope=form.get("scope") or None,
            resource=(resources[0] if len(resources) == 1 else resources) or None,
            authorization_details=details)
        body: dict[str, Any] = {"issued_token_type": TT_ID_JAG, "access_token": grant,
                                "token_type": "N_A", "expires_in": ID_JAG_TTL}
        if form.get("scope"):
            body["scope"] = form["scope"]
        resp = jsonify(body)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def _authenticate_client(self) -> str | None:
        """RFC 6749 §2.3.1: exactly one of client_secret_basic or client_secret_post."""
        auth = request.headers.get("Authorization", "")
        form_id = request.form.get("client_id")
        form_secret = request.form.get("client_secret")
        if auth.startswith("Basic "):
            if form_secret is not None:
                return None  # two methods at once is refused (RFC 6749 §2.3)
            try:
                decoded = base64.b64decode(auth[6:], validate=True).decode()
                raw_id, raw_secret = decoded.split(":", 1)
            except ValueError:
                return None
            client_id, secret = unquote(raw_id), unquote(raw_secret)
        elif form_id is not None and form_secret is not None:
            client_id, secret = form_id, form_secret
        else:
            return None
        with self._mutex:
            client = self._clients.get(client_id)
        presented = hashlib.sha256(secret.encode()).digest()
        if client is None or not hmac.compare_digest(presented, client.secret_sha256):
            return None
        return client_id

    def _build_app(self) -> Flask:
        app = Flask(__name__)
        idp = self

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Response:
            issuer = idp._issuer()
            return jsonify(
                {
                    "issuer": issuer,
                    "authorization_endpoint": issuer + "/authorize",
                    "token_endpoint": issuer + "/token",
                    "userinfo_endpoint": issuer + "/userinfo",
                    "jwks_uri": issuer + "/jwks",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code", GRANT_TOKEN_EXCHANGE],
                    "identity_chaining_requested_token_types_supported": [TT_ID_JAG],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": [idp.alg],
                    "scopes_supported": ["openid", "email", "profile", "groups"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_basic",
                        "client_secret_post",
                    ],
                    "code_challenge_methods_supported": ["S256"],
                    "claims_supported": [
                        "sub",
                        "iss",
                        "aud",
                        "exp",
                        "iat",
                        "nonce",
                        "email",
                        "email_verified",
                        "name",
                        "groups",
                        "roles",
                        "tenant",
                    ],
                    "authorization_response_iss_parameter_supported": True,
                }
            )

        @app.get("/jwks")
        def jwks() -> Response:
            with idp._mutex:
                idp.jwks_requests += 1
            return jsonify(idp.jwks())

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            params = request.values
            client_id = params.get("client_id", "")
            redirect_uri = params.get("redirect_uri", "")
            with idp._mutex:
                client = idp._clients.get(client_id)
            # RFC 6749 §4.1.2.1: never redirect to an unverified redirect_uri.
            if client is None or redirect_uri not in client.redirect_uris:
                return Response("unknown client or redirect_uri", 400, mimetype="text/plain")
            state = params.get("state")

            def fail(error: str) -> Any:
                query = {"error": error, "iss": idp._issuer()}
                if state is not None:
                    query["state"] = state
                return redirect(_with_query(redirect_uri, query), 302)

            if params.get("response_type") != "code":
                return fail("unsupported_response_type")
            scope = params.get("scope", "")
            if "openid" not in scope.split():
                return fail("invalid_scope")
            challenge = params.get("code_challenge", "")
            if params.get("code_challenge_method") != "S256" or not challenge:
                return fail("invalid_request")
            # TEST-ONLY: login_hint (or the form's username) signs the user in, no password.
            username = params.get("login_hint") or (
                request.form.get("username") if request.method == "POST" else None
            )
            if not username:
                return _login_form(params)
            if username not in idp.users:
                return fail("access_denied")
            now = idp.clock()
            code = secrets.token_urlsafe(32)
            with idp._mutex:
                idp._codes[code] = _Code(
                    client_id,
                    redirect_uri,
                    username,
                    params.get("nonce"),
                    challenge,
                    scope,
                    now,
                    now + CODE_TTL,
                )
            query = {"code": code, "iss": idp._issuer()}
            if state is not None:
                query["state"] = state
            return redirect(_with_query(redirect_uri, query), 302)

        @app.post("/token")
        def token() -> Any:
            client_id = idp._authenticate_client()
            if client_id is None:
                return _error("invalid_client", 401, {"WWW-Authenticate": 'Basic realm="test-idp"'})
            if request.form.get("grant_type") == GRANT_TOKEN_EXCHANGE:
                return idp._token_exchange(client_id)
            if request.form.get("grant_type") != "authorization_code":
                return _error("unsupported_grant_type")
            with idp._mutex:
                code = idp._codes.pop(request.form.get("code", ""), None)  # single use
            now = idp.clock()
            if code is None or code.expires_at <= now or code.client_id != client_id:
                return _error("invalid_grant")
            if request.form.get("redirect_uri") != code.redirect_uri:
                return _error("invalid_grant")
            verifier = request.form.get("code_verifier", "")
            expected = _b64url(hashlib.sha256(verifier.encode()).digest())
            if not verifier or not hmac.compare_digest(expected, code.code_challenge):
                return _error("invalid_grant")
            access_token = secrets.token_urlsafe(32)
            with idp._mutex:
                idp._access_tokens[access_token] = (code.username, now + ACCESS_TOKEN_TTL)
            resp = jsonify(
                {
                    "access_token": access_token,
                    "token_type": "Bearer",
                    "expires_in": ACCESS_TOKEN_TTL,
                    "scope": code.scope,
                    "id_token": idp._id_token(code, access_token),
                }
            )
            resp.headers["Cache-Control"] = "no-store"
            return resp

        @app.route("/userinfo", methods=["GET", "POST"])
        def userinfo() -> Any:
            auth = request.headers.get("Authorization", "")
            entry = None
            if auth.startswith("Bearer "):
                with idp._mutex:
                    entry = idp._access_tokens.get(auth[7:])
            if entry is None or entry[1] <= idp.clock():
                return _error(
                    "invalid_token", 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                )
            user = idp.users[entry[0]]
            return jsonify(
                {
                    "sub": user["sub"],
                    "email_verified": True,
                    **{c: user[c] for c in _PROFILE_CLAIMS if c in user},
                }
            )

        install_transmitter(app, idp.ssf)
        return app


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    separator = "&" if urlsplit(uri).query else "?"
    return uri + separator + urlencode(params)


def _error(error: str, status: int = 400, headers: Mapping[str, str] | None = None) -> Response:
    resp = jsonify({"error": error})
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def _login_form(params: Mapping[str, str]) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in params.items()
        if k not in ("username", "login_hint")
    )
    page = (
        "<!doctype html><title>Test IdP sign-in</title>"
        "<p>Test identity provider (no passwords; never deploy).</p>"
        f'<form method="post" action="authorize">{hidden}'
        '<label>Username <input name="username" autofocus></label>'
        "<button>Sign in</button></form>"
    )
    return Response(page, 200, mimetype="text/html")


def create_idp(issuer_base_url_hint: str | None = None, **kwargs: Any) -> IdP:
    """An IdP whose issuer is `issuer_base_url_hint` (or, until set, the URL it is called on).

    Keyword arguments go to `IdP` (`alg`, `users`, `clock`).
    """
    return IdP(issuer_base_url_hint, **kwargs)


def start_idp(**kwargs: Any) -> tuple[IdP, str, ServerThread]:
    """Serve a new IdP on a loopback port; its issuer is exactly the URL it is served on."""
    idp = create_idp(**kwargs)
    thread = ServerThread(idp.app)
    idp.issuer = thread.base_url
    base_url = thread.start()
    return idp, base_url, thread
