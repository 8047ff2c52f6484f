"""Hypothesis strategies, settings profiles and the response invariant for the HTTP fuzz tests
(tests/test_http_fuzz.py, tests/test_openapi.py; issue 13, "Prove it stays that way").

Profiles (`HYPOTHESIS_PROFILE`, default `ci`):

- `ci`: 50 examples per test, derandomized (the same examples on every run, so CI is
  deterministic), no deadline (PostgreSQL on 2 shared cores has slow moments), no example
  database.
- `long`: for a release, `HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest
  tests/test_http_fuzz.py tests/test_openapi.py`: 5,000 random (not derandomized) examples per
  test, failures saved in `.hypothesis/` so the next run tries them first.

The invariant (`check_api`, `check_page`): never a 5xx; on an API route every error is JSON
with a documented `error` code and `Cache-Control: no-store`; on a user route every error is
an HTML page; and no body carries internal detail (a traceback, SQL, a driver or exception
class name).
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any
from urllib.parse import quote_from_bytes

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True)
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
#: Decorate each fuzz test with this (it does not change hypothesis's global profile).
PROFILE = settings(parent=settings.get_profile(PROFILE_NAME))

#: Every `error` code the project documents (docs/standards.md GEN-01, A3, DPOP-*, RFC 7591,
#: RFC 8707, RFC 9396, RFC 6750), plus the routing answers (404/405/413) of
#: authserver/http/errors.py.
DOCUMENTED_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "unsupported_response_type", "invalid_scope", "access_denied",
    "invalid_target", "invalid_authorization_details", "invalid_redirect_uri",
    "invalid_client_metadata", "invalid_dpop_proof", "use_dpop_nonce", "authorization_pending",
    "slow_down", "expired_token", "approval_required", "connection_required", "rate_limited",
    "temporarily_unavailable", "invalid_token", "insufficient_scope",
    "not_found", "method_not_allowed", "request_entity_too_large",
})

#: What must never reach a client: Python tracebacks and exception class names, SQL, driver
#: and library names.
INTERNAL_DETAIL = re.compile(
    r"Traceback|File \"|\b[A-Z][A-Za-z]*(?:Error|Exception)\b|sqlalchemy|psycopg|sqlite3|"
    r"\b(?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|werkzeug|authlib|joserfc|"
    r"\bat 0x[0-9a-f]+|/site-packages/|authserver/",
)


def _no_internal_detail(response: Any) -> None:
    text = response.get_data().decode("utf-8", "replace")
    found = INTERNAL_DETAIL.search(text)
    assert found is None, (response.status_code, found.group(0), text[:2000])


def check_api(response: Any) -> None:
    """The invariant on an API route (JSON errors)."""
    status = response.status_code
    body_text = response.get_data().decode("utf-8", "replace")
    assert status < 500, (status, body_text[:2000])
    _no_internal_detail(response)
    if status < 400:
        return
    assert response.mimetype == "application/json", (status, response.mimetype, body_text[:500])
    assert response.headers.get("Cache-Control") == "no-store", (status, body_text[:500],
                                                                 dict(response.headers))
    if response.request.method == "HEAD":  # the headers of a GET, no body
        assert body_text == "", body_text[:500]
        return
    body = json.loads(body_text)
    assert isinstance(body, dict), body
    if not body:  # RFC 6750 §3.1 / RFC 9449 §7.1: no credentials, a bare challenge
        assert status == 401 and response.headers.get("WWW-Authenticate"), (status, body)
        return
    assert body.get("error") in DOCUMENTED_ERRORS, body
    if status == 401:
        assert response.headers.get("WWW-Authenticate"), body


def check_page(response: Any) -> None:
    """The invariant on a user route (HTML error pages)."""
    status = response.status_code
    assert status < 500, (status, response.get_data(as_text=True)[:2000])
    _no_internal_detail(response)
    if status >= 400:
        assert response.mimetype == "text/html", (status, response.mimetype)


# --- strategies ---------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


#: Text of every kind: control characters, surrogate-free unicode, long runs.
any_text = st.text(max_size=64)
control_text = st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=16)
#: An oversized value: past the lengths the server checks, within the body limit (256 KiB;
#: `over_the_limit` bodies test that limit).
oversized = st.sampled_from([1_025, 4_097, 20_000]).map(lambda n: "a" * n)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)

#: Raw bytes for a value: valid UTF-8, not UTF-8 at all, or control bytes.
value_bytes = st.one_of(
    any_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=32),
    control_text.map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"\xff", b"\xc3(", b"\x00", b"%00", b"\xed\xa0\x80", b"\xef\xbb\xbf"]),
)


def urlencode_bytes(pairs: list[tuple[bytes, bytes]]) -> str:
    """An application/x-www-form-urlencoded string from raw bytes (any byte, %-encoded)."""
    return "&".join(f"{quote_from_bytes(k, safe='')}={quote_from_bytes(v, safe='')}"
                    for k, v in pairs)


KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]


def _es256(key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big"))}


def _mutated_jwk(draw: st.DrawFn, key: ec.EllipticCurvePrivateKey) -> Any:
    jwk: dict[str, Any] = public_jwk(key)
    mutation = draw(st.sampled_from(["none", "drop", "set", "private", "oct", "garbage"]))
    if mutation == "drop":
        jwk.pop(draw(st.sampled_from(sorted(jwk))))
    elif mutation == "set":
        jwk[draw(st.sampled_from(["kty", "crv", "x", "y", "kid", "use", "alg", "n", "e"]))] = \
            draw(json_values)
    elif mutation == "private":
        d = key.private_numbers().private_value.to_bytes(32, "big")
        jwk["d"] = b64url(d)
    elif mutation == "oct":
        jwk = {"kty": "oct", "k": b64url(draw(st.binary(max_size=32)))}
    elif mutation == "garbage":
        return draw(json_values)
    return jwk


@st.composite
def jws(draw: st.DrawFn, *, typ: str = "dpop+jwt", claims: dict[str, Any] | None = None) -> str:
    """A compact JWS: well signed or not, with a header and claims that are plausible,
    mutated, or random."""
    key = draw(st.sampled_from(KEYS))
    header: Any = {"typ": typ, "alg": "ES256", "jwk": _mutated_jwk(draw, key)}
    body: Any = dict(claims or {})
    if draw(st.booleans()):
        header[draw(st.sampled_from(["typ", "alg", "kid", "crit", "jku", "x5c", "b64"]))] = \
            draw(json_values | st.sampled_from(["none", "HS256", "RS256", "EdDSA", "dpop+jwt"]))
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(
            st.sampled_from(["htm", "htu", "iat", "jti", "ath", "nonce", "exp", "iss", "sub",
                             "aud", "cnf", "client_id", "act", "scope", "intent",
                             "authorization_details", "may_act"]), json_values, max_size=5)))
    if draw(st.integers(0, 9)) == 0:
        header = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        body = draw(json_values)
    head = b64url(json.dumps(header).encode())
    payload = b64url(json.dumps(body).encode())
    signing_input = f"{head}.{payload}".encode("ascii")
    kind = draw(st.sampled_from(["valid", "valid", "random", "empty", "garbage"]))
    if kind == "valid":
        sig = b64url(_es256(key, signing_input))
    elif kind == "random":
        sig = b64url(draw(st.binary(min_size=64, max_size=64)))
    elif kind == "empty":
        sig = ""
    else:
        sig = draw(any_text)
    token = f"{head}.{payload}.{sig}"
    shape = draw(st.integers(0, 9))
    if shape == 0:  # not three parts
        token = draw(st.sampled_from([f"{head}.{payload}", f"{token}.x", f"{head}..{sig}"]))
    elif shape == 1:  # not base64url
        token = token.replace("-", "+", 1) + draw(st.sampled_from(["=", "!", " ", "\u00e9"]))
    return token


@st.composite
def dpop_proof_for(draw: st.DrawFn, htm: str, htu: str) -> str:
    """A DPoP proof for the request, mostly right, often a little wrong."""
    claims: dict[str, Any] = {"htm": htm, "htu": htu, "iat": draw(st.sampled_from(
        [None, 0, -1, 2**40, "now"])), "jti": draw(any_text)}
    if claims["iat"] is None or claims["iat"] == "now":
        import time

        claims["iat"] = int(time.time()) if claims["iat"] == "now" else None
    return draw(jws(claims={k: v for k, v in claims.items() if v is not None}))


def dpop_headers(htm: str, htu: str) -> st.SearchStrategy[list[str]]:
    """Zero, one or several DPoP header values."""
    one = dpop_proof_for(htm, htu) | any_text | st.just("")
    return st.lists(one, max_size=3)


def header_safe(value: str) -> str:
    """What a WSGI server can hand over in a header: latin-1, no CR, LF or NUL."""
    return "".join(c for c in value if c not in "\r\n\x00" and ord(c) < 256)


@st.composite
def authorization_values(draw: st.DrawFn, known: list[tuple[str, str]]) -> list[str]:
    """Zero, one or two Authorization header values: Basic (random bytes, the real client's
    id with any secret, malformed base64), Bearer/DPoP with a JWS, or anything."""
    out: list[str] = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        kind = draw(st.sampled_from(["basic_bytes", "basic_known", "basic_raw", "bearer",
                                     "dpop", "text"]))
        if kind == "basic_bytes":
            raw = draw(st.binary(max_size=48))
            if draw(st.booleans()):
                raw = draw(st.binary(max_size=16)) + b":" + raw
            out.append("Basic " + base64.b64encode(raw).decode())
        elif kind == "basic_known" and known:
            client_id, secret = draw(st.sampled_from(known))
            secret = draw(st.sampled_from([secret, ""]) | any_text)
            user = draw(st.sampled_from([client_id, client_id + "%00", client_id.upper()]))
            raw = f"{user}:{secret}".encode("utf-8", "surrogatepass")
            out.append("Basic " + base64.b64encode(raw).decode())
        elif kind == "basic_raw":
            out.append("Basic " + header_safe(draw(any_text)))
        elif kind in ("bearer", "dpop"):
            out.append(f"{kind.capitalize() if kind == 'bearer' else 'DPoP'} " + draw(jws(
                typ="at+jwt")))
        else:
            out.append(draw(st.sampled_from(["", " ", "Basic", "Basic ", "Bearer ", " DPoP",
                                             "DPoP  x y", "Basic =", "Negotiate abc"])
                            | any_text.map(header_safe)))
    return [header_safe(v) for v in out]


def form_pairs(names: list[str], values: st.SearchStrategy[bytes], *,
               clean: bool = False) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """Form fields: known names (sometimes repeated) and random ones, with any values; with
    `clean`, known names only, each at most once."""
    if clean:
        return st.lists(st.tuples(st.sampled_from(names).map(str.encode), values), max_size=8,
                        unique_by=lambda pair: pair[0])
    name = st.sampled_from(names).map(str.encode) | value_bytes
    return st.lists(st.tuples(name, values), max_size=10)
