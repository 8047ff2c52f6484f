"""RFC 9449 DPoP at the token endpoint: proof validation (§4.3), binding (§5, §6) and nonces (§8).

Every proof is sent with the client_credentials grant of the run's client, so a rejection can
only come from the proof. Expected rejection at the AS: 400 `invalid_dpop_proof` (§5).
"""

from __future__ import annotations

import http.client
import re
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from conformance.dpop import DROP, SIGNABLE_ALGS, DpopKey, hmac_proof, unsigned_proof
from conformance.runner import (
    Context,
    Fail,
    Result,
    Skip,
    check,
    decode_jwt_unverified,
    describe,
    expect_error,
    expect_token,
    json_body,
    passed,
)

GROUP = "RFC 9449 DPoP"
NEEDS = ("dpop",)
CC = {"grant_type": "client_credentials"}
# RFC 9449 §8.1: nonce = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E
NQCHAR = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
STALE_SECONDS = 3600


def _reject(ctx: Context, label: str, **kw: Any) -> None:
    resp = ctx.client_credentials(**kw)
    try:
        expect_error(resp, 400, "invalid_dpop_proof")
    except Fail as e:
        raise Fail(f"{label}: {e}") from None


def _rejects(ctx: Context, cases: dict[str, dict[str, Any]]) -> Result:
    for label, kw in cases.items():
        _reject(ctx, label, **kw)
    return passed("rejected: " + ", ".join(cases))


@check("DPOP-21", "valid proof yields token_type DPoP", group=GROUP, needs=NEEDS)
def bound_token(ctx: Context) -> Result:
    body = ctx.fresh_access_token(dpop=ctx.dpop_key())
    if str(body.get("token_type", "")).lower() == "bearer":
        raise Skip("server issued an unbound Bearer token despite the proof (RFC 9449 §5 allows)")
    if body.get("token_type") != "DPoP":
        raise Fail(f"token_type is {body.get('token_type')!r}, expected 'DPoP'")
    return passed()


@check("DPOP-24", "JWT access token carries cnf.jkt of the proof key", group=GROUP, needs=NEEDS)
def cnf_jkt(ctx: Context) -> Result:
    key = ctx.dpop_key()
    body = ctx.fresh_access_token(dpop=key)
    decoded = decode_jwt_unverified(str(body["access_token"]))
    if decoded is None:
        raise Skip("access token is opaque; binding is checked via introspection (DPOP-25)")
    jkt = (decoded[1].get("cnf") or {}).get("jkt")
    if jkt != key.thumbprint:
        raise Fail(f"cnf.jkt is {jkt!r}, expected the RFC 7638 thumbprint of the proof key")
    return passed()


@check("DPOP-25", "introspection returns cnf.jkt", group=GROUP,
       needs=(*NEEDS, "introspection"))
def introspect_cnf(ctx: Context) -> Result:
    key = ctx.dpop_key()
    token = str(ctx.fresh_access_token(dpop=key)["access_token"])
    resp = ctx.post_form("introspection_endpoint", {"token": token}, client=ctx.client())
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or body.get("active") is not True:
        raise Fail(f"expected 200 active:true, got {describe(resp)}")
    jkt = (body.get("cnf") or {}).get("jkt")
    if jkt != key.thumbprint:
        raise Fail(f"cnf.jkt is {jkt!r}, expected the proof key thumbprint")
    if "token_type" in body and body["token_type"] != "DPoP":
        raise Fail(f"token_type is {body['token_type']!r}, expected 'DPoP'")
    return passed()


def _post_two_dpop_headers(ctx: Context, proofs: list[str]) -> tuple[int, Any]:
    """requests cannot repeat a header; send the raw request with http.client."""
    url = ctx.endpoint("token_endpoint")
    problem = ctx.transport_problem(url)
    if problem:
        raise Skip(problem)
    parts = urlsplit(url)
    data: dict[str, Any] = dict(CC)
    headers: dict[str, str] = {"Accept": "application/json"}
    ctx.authenticate(ctx.client(), data, headers)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.netloc, timeout=ctx.options.timeout,
                                           context=ctx.tls_context())
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=ctx.options.timeout)
    try:
        conn.putrequest("POST", parts.path + (f"?{parts.query}" if parts.query else ""))
        body = urlencode(data).encode()
        for name, value in {**headers, "Content-Type": "application/x-www-form-urlencoded",
                            "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        for proof in proofs:
            conn.putheader("DPoP", proof)
        conn.endheaders(body)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    import json

    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, None


@check("DPOP-01", "two DPoP headers rejected", group=GROUP, needs=NEEDS)
def two_headers(ctx: Context) -> Result:
    key = ctx.dpop_key()
    url = ctx.endpoint("token_endpoint")
    ctx.client_credentials(dpop=key)  # learn the current nonce, if any
    status, body = _post_two_dpop_headers(
        ctx, [key.proof("POST", url, nonce=ctx.as_nonce) for _ in range(2)]
    )
    error = body.get("error") if isinstance(body, dict) else None
    if status != 400 or error != "invalid_dpop_proof":
        raise Fail(f"expected 400 invalid_dpop_proof, got {status} {error or ''}".rstrip())
    return passed()


@check("DPOP-02", "malformed proof rejected", group=GROUP, needs=NEEDS)
def malformed(ctx: Context) -> Result:
    return _rejects(ctx, {
        "not a JWT": {"proof": lambda nonce: "not-a-jwt"},
        "two segments": {"proof": lambda nonce: "eyJhbGciOiJFUzI1NiJ9.e30"},
    })


@check("DPOP-03", "proof missing jti/htm/htu/iat rejected", group=GROUP, needs=NEEDS)
def missing_claims(ctx: Context) -> Result:
    key = ctx.dpop_key()
    return _rejects(ctx, {f"no {c}": {"dpop": key, "proof_kwargs": {"claims": {c: DROP}}}
                          for c in ("jti", "htm", "htu", "iat")})


@check("DPOP-04", "typ other than dpop+jwt rejected", group=GROUP, needs=NEEDS)
def wrong_typ(ctx: Context) -> Result:
    key = ctx.dpop_key()
    return _rejects(ctx, {
        "typ JWT": {"dpop": key, "proof_kwargs": {"header": {"typ": "JWT"}}},
        "no typ": {"dpop": key, "proof_kwargs": {"header": {"typ": DROP}}},
    })


@check("DPOP-05", "alg none, HMAC and unlisted algs rejected", group=GROUP, needs=NEEDS)
def bad_alg(ctx: Context) -> Result:
    key = ctx.dpop_key()
    url = ctx.endpoint("token_endpoint")
    cases: dict[str, dict[str, Any]] = {
        "alg none": {"proof": lambda n: unsigned_proof(key.public_jwk, "POST", url, n)},
        "HS256": {"proof": lambda n: hmac_proof("POST", url, n)},
    }
    supported = ctx.metadata.get("dpop_signing_alg_values_supported") or []
    unlisted = [a for a in SIGNABLE_ALGS if a not in supported and a not in ("EdDSA", "Ed25519")]
    if unlisted:
        cases[f"{unlisted[0]} (not advertised)"] = {"dpop": DpopKey(unlisted[0])}
    return _rejects(ctx, cases)


@check("DPOP-06", "jwk with private members rejected", group=GROUP, needs=NEEDS)
def private_jwk(ctx: Context) -> Result:
    key = ctx.dpop_key()
    return _rejects(ctx, {"jwk includes private key": {
        "dpop": key, "proof_kwargs": {"header": {"jwk": key.private_jwk}}}})


@check("DPOP-07", "signature not made by jwk rejected", group=GROUP, needs=NEEDS)
def bad_signature(ctx: Context) -> Result:
    key = ctx.dpop_key()
    other = DpopKey(key.alg)
    return _rejects(ctx, {"signed by another key": {
        "dpop": key, "proof_kwargs": {"signer": other}}})


@check("DPOP-08", "htm mismatch rejected (case-sensitive)", group=GROUP, needs=NEEDS)
def htm_mismatch(ctx: Context) -> Result:
    key = ctx.dpop_key()
    return _rejects(ctx, {"htm GET": {"dpop": key, "proof_kwargs": {"htm": "GET"}},
                          "htm post": {"dpop": key, "proof_kwargs": {"htm": "post"}}})


@check("DPOP-09", "htu mismatch rejected", group=GROUP, needs=NEEDS)
def htu_mismatch(ctx: Context) -> Result:
    key = ctx.dpop_key()
    url = ctx.endpoint("token_endpoint")
    parts = urlsplit(url)
    other_path = parts._replace(path=parts.path.rstrip("/") + "-other").geturl()
    other_host = parts._replace(netloc="as.invalid").geturl()
    return _rejects(ctx, {"other path": {"dpop": key, "proof_kwargs": {"htu": other_path}},
                          "other host": {"dpop": key, "proof_kwargs": {"htu": other_host}}})


@check("DPOP-09", "htu ignores query and fragment", group=GROUP, needs=NEEDS)
def htu_query(ctx: Context) -> Result:
    key = ctx.dpop_key()
    url = ctx.endpoint("token_endpoint")
    for label, htu in (("query", url + ("&" if "?" in url else "?") + "x=1"),
                       ("fragment", url + "#frag")):
        resp = ctx.client_credentials(dpop=key, proof_kwargs={"htu": htu})
        try:
            expect_token(resp)
        except Fail as e:
            raise Fail(f"htu with {label}: {e}") from None
    return passed()


@check("DPOP-11", "stale or future iat rejected", group=GROUP, needs=NEEDS)
def stale_iat(ctx: Context) -> Result:
    key = ctx.dpop_key()
    now = int(time.time())
    for label, iat in (("iat 1h old", now - STALE_SECONDS), ("iat 1h ahead", now + STALE_SECONDS)):
        ctx.client_credentials(dpop=key)  # learn whether nonces are required
        # Without a nonce the only freshness signal is iat; with a required nonce, send it.
        nonce = ctx.as_nonce if ctx.nonce_required else None
        resp = ctx.client_credentials(dpop=key, retry_nonce=False,
                                      proof_kwargs={"claims": {"iat": iat}, "nonce": nonce})
        body = json_body(resp)
        if resp.status_code == 400 and isinstance(body, dict) and body.get("error") in (
            "invalid_dpop_proof", "use_dpop_nonce"
        ):
            continue
        if resp.status_code == 200 and ctx.nonce_required:
            raise Skip(f"{label} accepted with a valid server nonce; freshness may come from the "
                       "nonce (RFC 9449 §4.3 (11))")
        raise Fail(f"{label}: expected 400 invalid_dpop_proof or use_dpop_nonce, got "
                   f"{describe(resp)}")
    return passed()


@check("DPOP-12", "replayed proof rejected", group=GROUP, needs=NEEDS)
def replay(ctx: Context) -> Result:
    key = ctx.dpop_key()
    url = ctx.endpoint("token_endpoint")
    proof = key.proof("POST", url, nonce=ctx.as_nonce)
    first = ctx.client_credentials(proof=lambda n: proof, retry_nonce=False)
    if json_body(first) and (json_body(first) or {}).get("error") == "use_dpop_nonce":
        proof = key.proof("POST", url, nonce=ctx.as_nonce)
        first = ctx.client_credentials(proof=lambda n: proof, retry_nonce=False)
    expect_token(first)
    second = ctx.client_credentials(proof=lambda n: proof, retry_nonce=False)
    body = json_body(second)
    if second.status_code == 400 and isinstance(body, dict) and body.get("error") not in (
        "invalid_dpop_proof", None
    ):
        raise Fail(f"replay rejected, but with {body.get('error')} instead of invalid_dpop_proof "
                   "(RFC 9449 §5: an invalid proof gets invalid_dpop_proof)")
    expect_error(second, 400, "invalid_dpop_proof")
    return passed()


@check("DPOP-23", "dpop_bound_access_tokens client needs a proof", group=GROUP,
       needs=(*NEEDS, "dcr"))
def bound_client(ctx: Context) -> Result:
    client = ctx.new_client({"dpop_bound_access_tokens": True})
    if client.registration.get("dpop_bound_access_tokens") is not True:
        raise Skip("server did not register dpop_bound_access_tokens (metadata not supported)")
    resp = ctx.client_credentials(client=client)
    # RFC 9449 §5.2 names no error code; Part A pins invalid_dpop_proof for this server family.
    codes = ("invalid_dpop_proof",) if ctx.local_profile else (
        "invalid_dpop_proof", "invalid_request", "invalid_grant", "invalid_client")
    body = expect_error(resp, 400, codes)
    expect_token(ctx.client_credentials(client=client, dpop=ctx.dpop_key()))
    return passed(f"without proof: {body['error']}; with proof: token issued")


@check("DPOP-30", "unknown nonce gets use_dpop_nonce + one DPoP-Nonce", group=GROUP, needs=NEEDS)
def bad_nonce(ctx: Context) -> Result:
    key = ctx.dpop_key()
    ctx.client_credentials(dpop=key)
    if not ctx.nonces_seen:
        raise Skip("server has not issued a DPoP-Nonce")
    resp = ctx.client_credentials(dpop=key, retry_nonce=False,
                                  proof_kwargs={"nonce": "conformance-" + secrets.token_hex(12)})
    expect_error(resp, 400, "use_dpop_nonce")
    values = resp.raw.headers.getlist("DPoP-Nonce") if hasattr(resp.raw, "headers") else []
    if len(values) != 1 or not values[0]:
        raise Fail(f"expected exactly one DPoP-Nonce header, got {len(values)}")
    return passed()


@check("DPOP-32", "DPoP-Nonce values are 1*NQCHAR", group=GROUP, needs=NEEDS)
def nonce_syntax(ctx: Context) -> Result:
    ctx.client_credentials(dpop=ctx.dpop_key())
    if not ctx.nonces_seen:
        raise Skip("server has not issued a DPoP-Nonce")
    bad = [n for n in ctx.nonces_seen if not NQCHAR.match(n)]
    if bad:
        raise Fail(f"{len(bad)} nonce(s) outside the NQCHAR syntax")
    return passed(f"{len(set(ctx.nonces_seen))} distinct nonce(s) seen")


@check("DPOP-33", "nonce-requiring server refuses proofs without nonce", group=GROUP, needs=NEEDS)
def nonce_downgrade(ctx: Context) -> Result:
    key = ctx.dpop_key()
    ctx.client_credentials(dpop=key)
    if not ctx.nonce_required:
        raise Skip("server does not require DPoP nonces")
    resp = ctx.client_credentials(dpop=key, retry_nonce=False,
                                  proof_kwargs={"nonce": None, "claims": {"nonce": DROP}})
    expect_error(resp, 400, "use_dpop_nonce")
    if not resp.headers.get("DPoP-Nonce"):
        raise Fail("use_dpop_nonce without a DPoP-Nonce header")
    return passed()
