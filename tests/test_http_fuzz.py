"""Property-based fuzzing of the HTTP layer (issue 13, "Prove it stays that way").

Hypothesis drives Flask's test client against the real app factory, on SQLite and PostgreSQL,
at `/token` (each grant type, plus missing, repeated and unknown ones), `/register`,
`/introspect`, `/revoke`, `/authorize`, `/login` and `/gateway/<platform>/<path>`: random
forms with known and unknown parameters, repeated and oversized values, non-UTF-8 and control
bytes, random content types, random and malformed DPoP proofs (bad JWK, alg, typ, signature,
claims), random Basic credentials (including the real client's id with any secret), and JWTs
that are *well signed by the server's own key* with random claims, so the checks behind the
signature run too. The invariant is tests/fuzz_helpers.py's `check_api` / `check_page`.

The CI profile runs 50 derandomized examples per test; `HYPOTHESIS_PROFILE=long` is the
release run (README, Development).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from authserver.clients import SUPPORTED_GRANT_TYPES
from authserver.testing.settings import crm_platform
from tests.conftest import TestClock, base_settings, fresh_postgres_database, running_app
from tests.fuzz_helpers import (
    KEYS,
    PROFILE,
    any_text,
    authorization_values,
    check_api,
    check_page,
    dpop_headers,
    form_pairs,
    header_safe,
    json_values,
    jws,
    oversized,
    public_jwk,
    urlencode_bytes,
    value_bytes,
)
from tests.http_helpers import (
    ISSUER,
    PASSWORD,
    RESOURCE,
    USERNAME,
    basic_auth,
    confidential_client,
    create_local_user,
    form_with,
    login,
    public_client,
    register_client,
)

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_TYPES = ["urn:ietf:params:oauth:token-type:access_token",
               "urn:ietf:params:oauth:token-type:id_token",
               "urn:ietf:params:oauth:token-type:jwt",
               "urn:ietf:params:oauth:token-type:refresh_token",
               "urn:ietf:params:oauth:token-type:id-jag"]
TOKEN_PARAMS = ["grant_type", "client_id", "client_secret", "client_assertion_type",
                "client_assertion", "scope", "code", "redirect_uri", "code_verifier",
                "refresh_token", "subject_token", "subject_token_type", "actor_token",
                "actor_token_type", "audience", "resource", "intent", "authorization_details",
                "requested_token_type", "dpop_jkt", "approval_id", "assertion"]
AUTHORIZE_PARAMS = ["response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                    "code_challenge", "code_challenge_method", "resource", "dpop_jkt",
                    "authorization_details", "prompt", "response_mode", "request",
                    "request_uri", "csrf_token", "decision", "max_age"]
CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded",
                 "application/x-www-form-urlencoded; charset=latin-1", "application/json",
                 "multipart/form-data; boundary=x", "text/plain", None]
GATEWAY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


# --- one app per database for the whole module (the fuzz tests only add rows) ---------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_database(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzzdb')}/fuzz.db"
        return
    with fresh_postgres_database() as url:
        yield url


@dataclass
class Target:
    app: Flask
    user_id: str
    #: (client_id, secret) of registered confidential clients, for Basic credentials.
    credentials: list[tuple[str, str]]
    client_ids: list[str]
    #: Values a well-behaved client would send: ids, URIs, token types, the CSRF tokens.
    known: list[str] = field(default_factory=list)
    #: A browser signed in as alice (once: sign-in is rate limited per address), and its
    #: CSRF token.
    browser: FlaskClient | None = None
    csrf: str = ""

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        token: str = self.app.extensions["authserver"].keyring.sign(claims, typ=typ)
        return token


@pytest.fixture(scope="module")
def target(fuzz_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    settings = {
        **base_settings(tmp_path_factory.mktemp("fuzzdata"), fuzz_database, "", issuer=ISSUER),
        "resources": (RESOURCE,),
        # Port 9 (discard) on loopback: a call that got this far fails at once, never hangs.
        "platforms": {"crm": crm_platform("http://127.0.0.1:9", "s3cret")},
    }
    with running_app(settings, TestClock()) as app:
        client = app.test_client()
        user_id = create_local_user(app, USERNAME, PASSWORD)
        everything = confidential_client(client, grant_types=list(SUPPORTED_GRANT_TYPES))
        posting = confidential_client(client, token_endpoint_auth_method="client_secret_post")
        public = public_client(client)
        key_jwt = register_client(client, token_endpoint_auth_method="private_key_jwt",
                                  grant_types=["client_credentials"],
                                  jwks={"keys": [public_jwk(_key())]})
        registered = [everything, posting, public, key_jwt]
        known = [c["client_id"] for c in registered] + [
            everything["client_secret"], posting["client_secret"], *SUPPORTED_GRANT_TYPES,
            *TOKEN_TYPES, "crm", RESOURCE, f"{ISSUER}/gateway/crm", ISSUER,
            "https://client.example.com/cb", "http://127.0.0.1:8765/cb", "S256", "plain", "code",
            "openid read", "read write offline_access", USERNAME, PASSWORD, user_id,
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "access_token",
            "refresh_token",
        ]
        browser = app.test_client()
        login(browser, USERNAME, PASSWORD)
        page = browser.get("/authorize", query_string={
            "response_type": "code", "client_id": everything["client_id"],
            "redirect_uri": "https://client.example.com/cb", "scope": "read", "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"})
        csrf = form_with(page.get_data(as_text=True), "csrf_token")["fields"]["csrf_token"]
        yield Target(app, user_id,
                     [(everything["client_id"], everything["client_secret"]),
                      (posting["client_id"], posting["client_secret"])],
                     [c["client_id"] for c in registered], [*known, csrf], browser, csrf)


def _key() -> Any:
    return KEYS[0]


# --- what to send ------------------------------------------------------------------------------


def signed_tokens(target: Target) -> st.SearchStrategy[str]:
    """JWTs signed by the server's own key: plausible claims, some replaced by random ones."""
    now = int(time.time())

    @st.composite
    def build(draw: st.DrawFn) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER, "sub": target.user_id,
            "aud": draw(st.sampled_from([ISSUER, f"{ISSUER}/gateway/crm", RESOURCE])),
            "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(8),
            "client_id": draw(st.sampled_from(target.client_ids)),
        }
        if draw(st.booleans()):
            claims["cnf"] = {"jkt": draw(st.sampled_from(["x" * 43, ""]) | any_text)}
        if draw(st.booleans()):
            claims["authorization_details"] = draw(
                st.just([{"type": "agent_mandate", "platforms": ["crm"]}]) | json_values)
        if draw(st.booleans()):
            claims["intent"] = draw(intents)
        claims.update(draw(st.dictionaries(st.sampled_from([
            *sorted(claims), "act", "may_act", "scope", "intent_hash", "ver", "epoch"]),
            json_values, max_size=3)))
        typ = draw(st.sampled_from(["at+jwt", "at+jwt", "JWT", "dpop+jwt",
                                    "oauth-id-jag+jwt"]))
        return target.sign(claims, typ)

    return build()


intents = st.fixed_dictionaries({
    "action": st.sampled_from(["read", "create", "update", "delete", "bulk_delete"]) | json_values,
    "resource": st.sampled_from(["deal:acme-123", "deals", "deal:../x", "deal:%2e%2e"])
    | json_values,
}, optional={"count": json_values, "context": json_values | st.just(
    {"request": "x", "channel": "chat", "environment": "prod"})})


#: Printable ASCII: values that pass the boundary's character checks and reach the grants.
clean_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                     max_size=64)


def values(target: Target, *, clean: bool = False) -> st.SearchStrategy[bytes]:
    plausible = st.one_of(
        st.sampled_from(target.known), jws(typ="at+jwt"), jws(typ="JWT"), jws(),
        signed_tokens(target), intents.map(json.dumps),
    )
    if clean:  # what a well-formed request carries: the grants' own checks decide
        return (plausible | plausible | clean_text).map(str.encode)
    as_bytes = (plausible | oversized | json_values.map(json.dumps)).map(
        lambda s: s.encode("utf-8", "surrogatepass"))
    return value_bytes | as_bytes | as_bytes


@st.composite
def request_parts(draw: st.DrawFn, target: Target, names: list[str], *, htm: str, htu: str,
                  fixed: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    """Body, content type and headers for one request. Half of them are well formed (a form,
    printable values, the real client's credentials), so the grants' own checks run too."""
    clean = draw(st.booleans())
    pairs = list(fixed)
    pairs += [pair for pair in draw(form_pairs(names, values(target, clean=clean), clean=clean))
              if not clean or pair[0] not in {name for name, _ in fixed}]
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    content_type = "application/x-www-form-urlencoded" if clean else draw(
        st.sampled_from(CONTENT_TYPES))
    shape = 2 if clean else draw(st.integers(0, 19))
    if shape == 0:
        body: bytes = draw(st.binary(max_size=256))
    elif shape == 19:  # past the body limit
        body = urlencode_bytes(pairs).encode("ascii") + b"&pad=" + b"a" * 300_000
    elif shape == 1:
        body = json.dumps({k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                           for k, v in pairs}).encode()
    else:
        body = urlencode_bytes(pairs).encode("ascii")
    if clean:
        client_id, secret = draw(st.sampled_from(target.credentials))
        headers = [("Authorization", basic_auth(client_id, secret)["Authorization"])]
    else:
        headers = [("Authorization", v) for v in draw(authorization_values(target.credentials))]
    headers += [("DPoP", header_safe(v)) for v in draw(dpop_headers(htm, htu))]
    if draw(st.integers(0, 4)) == 0:
        headers.append((draw(st.sampled_from(["X-Request-ID", "Accept", "X-Forwarded-For",
                                              "Origin", "Content-Encoding"])),
                        header_safe(draw(any_text))))
    address = f"10.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}.1"
    return {"data": body, "content_type": content_type, "headers": headers,
            "environ_base": {"REMOTE_ADDR": address}}


def query_string(draw: Callable[..., Any], target: Target, names: list[str],
                 fixed: Sequence[tuple[bytes, bytes]] = ()) -> str:
    pairs = list(fixed) + draw(form_pairs(names, values(target)))
    query = urlencode_bytes(pairs)
    if draw(st.integers(0, 4)) == 0:  # raw bytes as a server hands them over (latin-1)
        query += "&" + header_safe(draw(any_text)).replace("#", "")
    return query


# --- the token endpoint: each grant type -----------------------------------------------------


GRANTS = [*SUPPORTED_GRANT_TYPES, None]


@pytest.mark.parametrize("grant_type", GRANTS, ids=[*SUPPORTED_GRANT_TYPES, "other"])
@PROFILE
@given(data=st.data())
def test_token_endpoint(target: Target, grant_type: str | None, data: st.DataObject) -> None:
    if grant_type is None:  # missing, repeated, empty or unknown
        fixed = data.draw(st.lists(st.tuples(st.just(b"grant_type"), value_bytes
                                             | st.sampled_from(SUPPORTED_GRANT_TYPES)
                                             .map(str.encode)), max_size=3))
    else:
        fixed = [(b"grant_type", grant_type.encode())]
    parts = data.draw(request_parts(target, TOKEN_PARAMS, htm="POST", htu=f"{ISSUER}/token",
                                    fixed=fixed))
    check_api(target.app.test_client().post("/token", **parts))


# --- introspection and revocation ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
@PROFILE
@given(data=st.data())
def test_introspect_and_revoke(target: Target, path: str, data: st.DataObject) -> None:
    parts = data.draw(request_parts(
        target, ["token", "token_type_hint", "client_id", "client_secret",
                 "client_assertion_type", "client_assertion"], htm="POST", htu=ISSUER + path))
    check_api(target.app.test_client().post(path, **parts))


# --- dynamic registration ----------------------------------------------------------------------


METADATA = ["redirect_uris", "grant_types", "response_types", "token_endpoint_auth_method",
            "jwks", "jwks_uri", "client_name", "client_uri", "logo_uri", "scope", "contacts",
            "tos_uri", "policy_uri", "software_id", "software_version",
            "dpop_bound_access_tokens", "authorization_details_types", "application_type"]


@st.composite
def metadata(draw: st.DrawFn) -> Any:
    plausible = {
        "redirect_uris": st.lists(st.sampled_from(
            ["https://client.example.com/cb", "http://127.0.0.1/cb", "http://evil.example/cb",
             "javascript:alert(1)", "com.example.app:/cb", "https://x/#f"]) | any_text,
            max_size=3),
        "grant_types": st.lists(st.sampled_from([*SUPPORTED_GRANT_TYPES, "implicit", "password"])
                                | any_text, max_size=3),
        "token_endpoint_auth_method": st.sampled_from(
            ["client_secret_basic", "client_secret_post", "none", "private_key_jwt",
             "tls_client_auth"]),
        "jwks": st.just({"keys": [public_jwk(_key())]}) | json_values,
        "jwks_uri": st.sampled_from(["https://127.0.0.1:1/jwks", "http://169.254.169.254/"]),
    }
    doc: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(METADATA), max_size=8, unique=True)):
        doc[name] = draw(plausible.get(name, json_values) | json_values | oversized)
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    return doc


@PROFILE
@given(data=st.data())
def test_register(target: Target, data: st.DataObject) -> None:
    shape = data.draw(st.integers(0, 5))
    if shape == 0:
        body = data.draw(st.binary(max_size=256))
    else:
        body = json.dumps(data.draw(metadata())).encode()
    content_type = data.draw(st.sampled_from(["application/json", "application/json",
                                              "application/json; charset=utf-8",
                                              "application/x-www-form-urlencoded",
                                              "text/plain", None]))
    headers = [("Authorization", v) for v in data.draw(authorization_values(target.credentials))]
    address = f"10.{data.draw(st.integers(0, 255))}.{data.draw(st.integers(0, 255))}.2"
    check_api(target.app.test_client().post("/register", data=body, content_type=content_type,
                                            headers=headers,
                                            environ_base={"REMOTE_ADDR": address}))


# --- the authorization endpoint and sign-in (user routes: HTML pages) -------------------------


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
@PROFILE
@given(data=st.data())
def test_authorize(target: Target, signed_in: bool, data: st.DataObject) -> None:
    client = target.browser if signed_in and target.browser else target.app.test_client()
    known_client = data.draw(st.sampled_from(target.client_ids))
    fixed = [(b"client_id", known_client.encode())] if data.draw(st.booleans()) else []
    if data.draw(st.booleans()):
        response = client.get("/authorize?" + query_string(data.draw, target, AUTHORIZE_PARAMS,
                                                           fixed))
    else:
        if data.draw(st.booleans()):  # past the CSRF check (signed in) or not
            fixed = [*fixed, (b"csrf_token", target.csrf.encode())]
        parts = data.draw(request_parts(target, AUTHORIZE_PARAMS, htm="POST",
                                        htu=f"{ISSUER}/authorize", fixed=fixed))
        response = client.post("/authorize", **parts)
    check_page(response)


@PROFILE
@given(data=st.data())
def test_login(target: Target, data: st.DataObject) -> None:
    client = target.app.test_client()
    names = ["username", "password", "csrf_token", "next"]
    kind = data.draw(st.sampled_from(["get", "post", "post_with_csrf", "idp"]))
    if kind == "get":
        response = client.get("/login?" + query_string(data.draw, target, names))
    elif kind == "idp":
        name = data.draw(any_text | st.just("corp")).replace("/", "%2F").replace("?", "%3F")
        parts = data.draw(request_parts(target, names, htm="POST", htu=f"{ISSUER}/login"))
        response = client.post("/login/" + (header_safe(name).replace("#", "") or "x"),
                               **parts)
    else:
        fixed: list[tuple[bytes, bytes]] = []
        if kind == "post_with_csrf":
            page = client.get("/login")
            form = form_with(page.get_data(as_text=True), "username", action="/login")
            fixed = [(b"csrf_token", form["fields"]["csrf_token"].encode())]
        parts = data.draw(request_parts(target, names, htm="POST", htu=f"{ISSUER}/login",
                                        fixed=fixed))
        response = client.post("/login", **parts)
    check_page(response)


# --- the gateway -------------------------------------------------------------------------------


_SEGMENTS = st.sampled_from(["deals", "acme-123", "..", ".", "", "%2e%2e", "%2F", "%00", "%ff",
                             "deals?stage=x", "notes", "a;b", "%252e"])


@PROFILE
@given(data=st.data())
def test_gateway(target: Target, data: st.DataObject) -> None:
    platform = data.draw(st.sampled_from(["crm", "crm", "nope", "%63rm"]))
    segments = data.draw(st.lists(_SEGMENTS | any_text.map(
        lambda s: "".join(f"%{b:02X}" for b in s.encode("utf-8", "surrogatepass"))),
        min_size=1, max_size=4))
    path = f"/gateway/{platform}/" + "/".join(segments)
    method = data.draw(st.sampled_from(GATEWAY_METHODS))
    htu = ISSUER + path.partition("?")[0]
    headers = [("Authorization", v) for v in data.draw(authorization_values(target.credentials))]
    if data.draw(st.booleans()):  # a token the server really signed, with random claims
        scheme = data.draw(st.sampled_from(["DPoP", "Bearer", "dpop"]))
        headers.append(("Authorization", f"{scheme} {data.draw(signed_tokens(target))}"))
    headers += [("DPoP", header_safe(v)) for v in data.draw(dpop_headers(method, htu))]
    body = data.draw(value_bytes | st.just(b""))
    response = target.app.test_client().open(
        path, method=method, data=body, headers=headers,
        content_type=data.draw(st.sampled_from(["application/json", "text/plain", None])))
    check_api(response)
