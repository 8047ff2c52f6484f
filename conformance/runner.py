"""Conformance runner (RFC 8414 discovery, HTTP only): check registry, results, run context.

A check is a function decorated with `@check(rule_id, title, group=..., needs=(...))`. It returns a
`Result` (via `passed()`), or raises `Skip`/`Fail`. Anything else it raises is a failure: a check
never passes by accident. Each name in `needs` is resolved by `Context.need_<name>()`, which returns
a skip reason or None.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import json
import os
import secrets
import shlex
import ssl
import subprocess
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet, RSAKey
from requests.auth import _basic_auth_str

from conformance.dpop import DpopKey, choose_alg

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_TIMEOUT = 15.0
# Longest error_description quoted in a reason (descriptions are client-facing text).
MAX_QUOTED = 120


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Result:
    status: Status
    reason: str = ""


class Skip(Exception):
    """The check cannot run against this server; the message says why."""


class Fail(Exception):
    """The server broke the rule; the message says how."""


def passed(reason: str = "") -> Result:
    return Result(Status.PASS, reason)


@dataclass(frozen=True)
class Check:
    rule_id: str
    title: str
    group: str
    func: Callable[[Context], Result]
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.rule_id} {self.title}"


REGISTRY: list[Check] = []


def check(
    rule_id: str, title: str, *, group: str, needs: Iterable[str] = ()
) -> Callable[[Callable[[Context], Result]], Callable[[Context], Result]]:
    def register(func: Callable[[Context], Result]) -> Callable[[Context], Result]:
        entry = Check(rule_id, title, group, func, tuple(needs))
        if any(c.name == entry.name for c in REGISTRY):
            raise ValueError(f"duplicate check {entry.name!r}")
        REGISTRY.append(entry)
        return func

    return register


@dataclass
class Outcome:
    check: Check
    result: Result
    seconds: float


@dataclass
class Options:
    issuer: str
    insecure_http_loopback: bool = False
    registration_token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    client_auth_method: str = "client_secret_basic"
    authorize_cmd: str | None = None
    subject_token_cmd: str | None = None
    resource: str | None = None
    rate_limit_attempts: int = 0
    timeout: float = DEFAULT_TIMEOUT
    #: CA certificates to trust for https (PEM); None: the system's (or REQUESTS_CA_BUNDLE).
    ca_file: str | None = None


@dataclass
class Client:
    """A client this run may authenticate as (pre-registered or registered here via DCR)."""

    client_id: str
    auth_method: str
    client_secret: str | None = None
    signing_key: Any = None  # joserfc key for private_key_jwt
    signing_alg: str | None = None
    registration: dict[str, Any] = field(default_factory=dict)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe(resp: requests.Response) -> str:
    """Status plus `error` (and a bounded error_description); never token values."""
    body = json_body(resp)
    if isinstance(body, dict) and "error" in body:
        desc = str(body.get("error_description", ""))[:MAX_QUOTED]
        return f"{resp.status_code} {body['error']}" + (f" ({desc})" if desc else "")
    if resp.status_code == 200 and isinstance(body, dict) and "access_token" in body:
        return "200 (token issued)"
    return f"{resp.status_code}"


def json_body(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def expect_error(
    resp: requests.Response, status: int | tuple[int, ...], errors: str | tuple[str, ...]
) -> dict[str, Any]:
    """Raise Fail unless the response is a JSON error with one of `errors` and `status`."""
    statuses = (status,) if isinstance(status, int) else status
    codes = (errors,) if isinstance(errors, str) else errors
    body = json_body(resp)
    want = f"{'/'.join(map(str, statuses))} {'/'.join(codes)}"
    if resp.status_code not in statuses or not isinstance(body, dict) or (
        body.get("error") not in codes
    ):
        raise Fail(f"expected {want}, got {describe(resp)}")
    return body


def expect_token(resp: requests.Response) -> dict[str, Any]:
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        raise Fail(f"expected 200 with a token, got {describe(resp)}")
    return body


def decode_jwt_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(header, claims) if `token` is a JWS compact JWT, else None (opaque token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        def dec(s: str) -> Any:
            return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

        header, claims = dec(parts[0]), dec(parts[1])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


class Context:
    """Everything a check may use: discovered metadata, HTTP, and helpers. Lazy and cached."""

    def __init__(self, options: Options, session: requests.Session | None = None) -> None:
        self.options = options
        self.issuer = options.issuer
        self.http = session or requests.Session()
        self.http.headers["User-Agent"] = "authserver-conformance/1"
        if options.ca_file:
            self.http.verify = options.ca_file
        self._metadata: dict[str, Any] | None = None
        self._metadata_error: str | None = None
        self.metadata_url: str | None = None
        self.metadata_response: requests.Response | None = None
        self._client: Client | None = None
        self._client_error: str | None = None
        self._jwks: KeySet | None = None
        self.as_nonce: str | None = None  # last DPoP-Nonce from the token endpoint
        self.nonce_required: bool | None = None
        self.nonces_seen: list[str] = []
        self.cache: dict[str, Any] = {}

    # ---- transport -------------------------------------------------------------------------
    def tls_context(self) -> ssl.SSLContext:
        """For the raw http.client checks: the CAs requests trusts (--ca-file, else
        REQUESTS_CA_BUNDLE, else the system's)."""
        cafile = self.options.ca_file or os.environ.get("REQUESTS_CA_BUNDLE") or None
        return ssl.create_default_context(cafile=cafile)

    def transport_problem(self, url: str) -> str | None:
        """GEN-06: why `url` must not be used (plain HTTP), or None."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "https":
            return None
        if scheme == "http" and is_loopback(url) and self.options.insecure_http_loopback:
            return None
        if scheme == "http" and is_loopback(url):
            return f"{url} is plain HTTP (allow loopback with --insecure-http-loopback)"
        return f"{url} is not HTTPS"

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        problem = self.transport_problem(url)
        if problem:
            raise Skip(f"refusing to send requests: {problem} (GEN-06)")
        kwargs.setdefault("timeout", self.options.timeout)
        kwargs.setdefault("allow_redirects", False)
        resp = self.http.request(method, url, **kwargs)
        nonce = resp.headers.get("DPoP-Nonce")
        if nonce:
            self.nonces_seen.append(nonce)
        return resp

    # ---- discovery -------------------------------------------------------------------------
    def well_known_urls(self) -> list[tuple[str, str]]:
        """RFC 8414 §3 path-insert first, then OIDC path-insert and path-append (MCP-03)."""
        parts = urlsplit(self.issuer)
        path = parts.path.rstrip("/")
        def at(p: str) -> str:
            return urlunsplit((parts.scheme, parts.netloc, p, "", ""))
        urls = [("RFC 8414", at("/.well-known/oauth-authorization-server" + path)),
                ("OIDC Discovery", at("/.well-known/openid-configuration" + path))]
        if path:
            urls.append(("OIDC Discovery (path-append)",
                         at(path + "/.well-known/openid-configuration")))
        return urls

    def discover(self) -> None:
        if self._metadata is not None or self._metadata_error is not None:
            return
        problems = []
        for label, url in self.well_known_urls():
            try:
                resp = self.request("GET", url)
            except Skip as e:
                self._metadata_error = str(e)
                return
            except requests.RequestException as e:
                problems.append(f"{label}: {type(e).__name__}")
                continue
            body = json_body(resp)
            if resp.status_code == 200 and isinstance(body, dict):
                self._metadata, self.metadata_url, self.metadata_response = body, url, resp
                return
            problems.append(f"{label}: HTTP {resp.status_code}")
        self._metadata_error = "no metadata document found (" + "; ".join(problems) + ")"

    @property
    def metadata(self) -> dict[str, Any]:
        self.discover()
        if self._metadata is None:
            raise Skip(self._metadata_error or "metadata unavailable")
        return self._metadata

    def endpoint(self, name: str) -> str:
        url = self.metadata.get(name)
        if not isinstance(url, str) or not url:
            raise Skip(f"metadata has no {name}")
        return url

    def grant_supported(self, grant: str) -> bool:
        # RFC 8414 §2: the default when grant_types_supported is omitted.
        default = ["authorization_code", "implicit"]
        return grant in self.metadata.get("grant_types_supported", default)

    @property
    def local_profile(self) -> bool:
        """Whether the server advertises this project's Part A extensions (agent intents)."""
        types = self.metadata.get("authorization_details_types_supported") or []
        return "agent_intent" in types

    # ---- needs -----------------------------------------------------------------------------
    def need_metadata(self) -> str | None:
        self.discover()
        return None if self._metadata is not None else (self._metadata_error or "no metadata")

    def need_token_endpoint(self) -> str | None:
        return self.need_metadata() or (None if self.metadata.get("token_endpoint") else
                                        "metadata has no token_endpoint")

    def need_client(self) -> str | None:
        problem = self.need_token_endpoint()
        if problem:
            return problem
        if not self.grant_supported("client_credentials"):
            return "client_credentials is not in grant_types_supported"
        try:
            self.client()
        except Skip as e:
            return str(e)
        return None

    def need_dcr(self) -> str | None:
        problem = self.need_metadata()
        if problem:
            return problem
        return None if self.metadata.get("registration_endpoint") else "no registration_endpoint"

    def need_dpop(self) -> str | None:
        problem = self.need_client()
        if problem:
            return problem
        algs = self.metadata.get("dpop_signing_alg_values_supported")
        if not algs:
            return "metadata has no dpop_signing_alg_values_supported (DPoP not advertised)"
        return None if choose_alg(algs) else f"no DPoP alg this suite can sign with in {algs}"

    def need_introspection(self) -> str | None:
        return self.need_metadata() or (None if self.metadata.get("introspection_endpoint") else
                                        "metadata has no introspection_endpoint")

    def need_revocation(self) -> str | None:
        return self.need_metadata() or (None if self.metadata.get("revocation_endpoint") else
                                        "metadata has no revocation_endpoint")

    def need_authcode(self) -> str | None:
        problem = self.need_token_endpoint()
        if problem:
            return problem
        if not self.metadata.get("authorization_endpoint") or not self.grant_supported(
            "authorization_code"
        ):
            return "server does not advertise the authorization_code grant"
        if not self.options.authorize_cmd:
            return "no --authorize-cmd to sign a test user in (browser-less flow)"
        return self.need_dcr()

    def need_refresh(self) -> str | None:
        problem = self.need_authcode()
        if problem:
            return problem
        if self.grant_supported("refresh_token"):
            return None
        return "refresh_token grant not advertised"

    def need_token_exchange(self) -> str | None:
        problem = self.need_client()
        if problem:
            return problem
        return None if self.grant_supported(TOKEN_EXCHANGE) else "token exchange not advertised"

    def need_subject_token(self) -> str | None:
        problem = self.need_token_exchange()
        if problem:
            return problem
        return None if self.options.subject_token_cmd else "no --subject-token-cmd given"

    def need_local(self) -> str | None:
        problem = self.need_metadata()
        if problem:
            return problem
        return None if self.local_profile else (
            "server does not advertise agent_intent in authorization_details_types_supported"
        )

    # ---- clients ---------------------------------------------------------------------------
    def register(self, metadata: dict[str, Any], *, token: str | bool | None = True
                 ) -> requests.Response:
        """POST to registration_endpoint; token=True uses --registration-token if any."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        bearer = self.options.registration_token if token is True else token
        if isinstance(bearer, str):
            headers["Authorization"] = f"Bearer {bearer}"
        return self.request("POST", self.endpoint("registration_endpoint"),
                            data=json.dumps(metadata), headers=headers)

    def preferred_auth_method(self) -> str:
        methods = self.metadata.get("token_endpoint_auth_methods_supported",
                                    ["client_secret_basic"])
        for method in ("client_secret_basic", "client_secret_post", "private_key_jwt"):
            if method in methods:
                return method
        raise Skip(f"no client authentication method this suite supports in {methods}")

    def new_client(self, extra: dict[str, Any] | None = None, *, auth_method: str | None = None
                   ) -> Client:
        """Register a fresh client via DCR (RFC 7591); Skip if registration is unavailable."""
        if self.need_dcr():
            raise Skip(f"cannot register a client: {self.need_dcr()}")
        method = auth_method or self.preferred_auth_method()
        metadata: dict[str, Any] = {"client_name": "conformance suite",
                                    "grant_types": ["client_credentials"], "response_types": [],
                                    "token_endpoint_auth_method": method}
        key = None
        alg = None
        if method == "private_key_jwt":
            algs = self.metadata.get("token_endpoint_auth_signing_alg_values_supported", ["RS256"])
            alg = "ES256" if "ES256" in algs else "RS256"
            key = DpopKey(alg).key if alg == "ES256" else RSAKey.generate_key(2048)
            jwk = dict(key.as_dict(private=False), kid=secrets.token_hex(4), alg=alg, use="sig")
            key = type(key).import_key(dict(key.as_dict(private=True), kid=jwk["kid"]))
            metadata["jwks"] = {"keys": [jwk]}
            metadata["token_endpoint_auth_signing_alg"] = alg
        metadata.update(extra or {})
        resp = self.register(metadata)
        body = json_body(resp)
        if resp.status_code not in (200, 201) or not isinstance(body, dict) or (
            "client_id" not in body
        ):
            raise Skip(f"client registration failed: {describe(resp)}")
        return Client(body["client_id"], body.get("token_endpoint_auth_method", method),
                      body.get("client_secret"), key, alg, body)

    def client(self) -> Client:
        """The confidential client_credentials client for this run (cached)."""
        if self._client is not None:
            return self._client
        if self._client_error is not None:
            raise Skip(self._client_error)
        try:
            if self.options.client_id:
                self._client = Client(self.options.client_id, self.options.client_auth_method,
                                      self.options.client_secret)
            else:
                self._client = self.new_client()
        except Skip as e:
            self._client_error = f"{e} (or pass --client-id/--client-secret)"
            raise Skip(self._client_error) from e
        return self._client

    def authenticate(self, client: Client, data: dict[str, Any], headers: dict[str, str],
                     audience: str | None = None) -> None:
        """Add client authentication (RFC 6749 §2.3, RFC 7523 §2.2) to a form request."""
        if client.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: form-urlencode id and secret before Basic encoding.
            headers["Authorization"] = _basic_auth_str(quote(client.client_id, safe=""),
                                                       quote(client.client_secret or "", safe=""))
        elif client.auth_method == "client_secret_post":
            data["client_id"] = client.client_id
            data["client_secret"] = client.client_secret or ""
        elif client.auth_method == "private_key_jwt":
            data["client_id"] = client.client_id
            data["client_assertion_type"] = JWT_BEARER_ASSERTION
            data["client_assertion"] = self.client_assertion(client, audience or self.issuer)
        elif client.auth_method == "none":
            data["client_id"] = client.client_id
        else:
            raise Skip(f"client auth method {client.auth_method} not supported by this suite")

    def client_assertion(self, client: Client, audience: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": client.client_id, "sub": client.client_id, "aud": audience,
                  "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 60}
        claims.update(overrides)
        header = {"alg": client.signing_alg, "kid": client.signing_key.kid}
        return str(jose_jwt.encode(header, claims, client.signing_key,
                                   algorithms=[client.signing_alg or "RS256"]))

    # ---- endpoints -------------------------------------------------------------------------
    def post_form(self, endpoint: str, data: dict[str, Any], *, client: Client | None = None,
                  headers: dict[str, str] | None = None) -> requests.Response:
        url = self.endpoint(endpoint)
        data = dict(data)
        hdrs = {"Accept": "application/json", **(headers or {})}
        if client is not None:
            self.authenticate(client, data, hdrs)
        return self.request("POST", url, data=data, headers=hdrs)

    def token(self, data: dict[str, Any], *, client: Client | None = None,
              dpop: DpopKey | None = None, proof_kwargs: dict[str, Any] | None = None,
              proof: Callable[[str | None], str] | None = None,
              headers: dict[str, str] | None = None, retry_nonce: bool = True
              ) -> requests.Response:
        """POST to the token endpoint with an optional DPoP proof, following one nonce challenge.

        `dpop` signs a proof for the token endpoint (`proof_kwargs` tweak it); `proof` builds a
        raw proof from the current nonce. Either is rebuilt with the new nonce after a
        `use_dpop_nonce` challenge, so negative checks fail for their own reason, not the nonce.
        """
        url = self.endpoint("token_endpoint")
        hdrs = dict(headers or {})
        sends_proof = dpop is not None or proof is not None
        attempts = 2 if (sends_proof and retry_nonce) else 1
        resp: requests.Response | None = None
        for _ in range(attempts):
            if dpop is not None:
                kwargs = dict(proof_kwargs or {})
                kwargs.setdefault("nonce", self.as_nonce)
                htu = kwargs.pop("htu", url)
                htm = kwargs.pop("htm", "POST")
                hdrs["DPoP"] = dpop.proof(htm, htu, **kwargs)
            elif proof is not None:
                hdrs["DPoP"] = proof(self.as_nonce)
            resp = self.post_form("token_endpoint", data, client=client, headers=hdrs)
            body = json_body(resp)
            challenged = isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
            if sends_proof and self.nonce_required is None and self.as_nonce is None:
                self.nonce_required = challenged
            if resp.headers.get("DPoP-Nonce"):
                self.as_nonce = resp.headers["DPoP-Nonce"]
            if not challenged:
                break
        assert resp is not None
        return resp

    def client_credentials(self, *, client: Client | None = None, dpop: DpopKey | None = None,
                           extra: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
        data = {"grant_type": "client_credentials", **(extra or {})}
        return self.token(data, client=client or self.client(), dpop=dpop, **kw)

    def dpop_key(self) -> DpopKey:
        alg = choose_alg(self.metadata.get("dpop_signing_alg_values_supported"))
        if alg is None:
            raise Skip("no DPoP alg this suite can sign with")
        return DpopKey(alg)

    def fresh_access_token(self, *, dpop: DpopKey | None = None) -> dict[str, Any]:
        """A client_credentials token response for the run's client (Fail if none is issued)."""
        return expect_token(self.client_credentials(dpop=dpop))

    def jwks(self) -> KeySet:
        if self._jwks is None:
            resp = self.request("GET", self.endpoint("jwks_uri"))
            body = json_body(resp)
            if resp.status_code != 200 or not isinstance(body, dict):
                raise Fail(f"jwks_uri returned {describe(resp)}")
            self._jwks = KeySet.import_key_set(body)  # type: ignore[arg-type]
        return self._jwks

    # ---- hooks -----------------------------------------------------------------------------
    def run_cmd(self, cmd: str, stdin: str = "") -> str:
        """Run an operator-supplied hook (e.g. --authorize-cmd); its stdout is the answer."""
        proc = subprocess.run(shlex.split(cmd), input=stdin, capture_output=True, text=True,
                              timeout=self.options.timeout * 4, check=False)
        if proc.returncode != 0:
            raise Skip(f"hook {shlex.split(cmd)[0]!r} exited {proc.returncode}")
        return proc.stdout.strip()


def run_checks(ctx: Context, checks: Iterable[Check]) -> list[Outcome]:
    outcomes = []
    for entry in checks:
        started = time.monotonic()
        result = run_one(ctx, entry)
        outcomes.append(Outcome(entry, result, time.monotonic() - started))
    return outcomes


def run_one(ctx: Context, entry: Check) -> Result:
    try:
        for need in entry.needs:
            reason = getattr(ctx, f"need_{need}")()
            if reason:
                return Result(Status.SKIP, reason)
        result = entry.func(ctx)
    except Skip as e:
        return Result(Status.SKIP, str(e) or "skipped without a reason")
    except Fail as e:
        return Result(Status.FAIL, str(e) or "failed")
    except requests.RequestException as e:
        return Result(Status.FAIL, f"HTTP error: {type(e).__name__}: {str(e)[:MAX_QUOTED]}")
    except Exception as e:  # a broken check is a failure, never a pass
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Result(Status.FAIL, f"check error: {type(e).__name__}: {str(e)[:MAX_QUOTED]} "
                                   f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
    if not isinstance(result, Result):
        return Result(Status.FAIL, "check returned no result")
    if result.status is Status.SKIP and not result.reason:
        return Result(Status.SKIP, "skipped without a reason")
    return result


def select(checks: Iterable[Check], only: list[str] | None) -> list[Check]:
    if not only:
        return list(checks)
    return [c for c in checks
            if any(c.rule_id.startswith(p) or c.group.startswith(p) for p in only)]
