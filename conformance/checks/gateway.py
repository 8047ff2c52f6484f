"""Part A5 gateway as an RFC 9449 §7 / RFC 6750 resource server: DPoP challenges and binding."""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

from conformance.checks.intent import capability_token
from conformance.dpop import DpopKey, ath_for
from conformance.runner import Context, Fail, Result, Skip, check, passed

GROUP = "Part A Gateway (RFC 9449 §7)"
NEEDS = ("local", "subject_token")


def _gateway_url(ctx: Context, fx: dict[str, object] | None = None) -> str:
    fx = fx or {}
    platform = fx.get("audience")
    path = str(fx.get("gateway_path") or "")
    if not isinstance(platform, str) or not platform:
        raise Skip("the subject token fixture names no platform (audience)")
    return f"{ctx.issuer.rstrip('/')}/gateway/{platform}/{path.lstrip('/')}"


def _challenge(resp: object) -> str:
    return str(getattr(resp, "headers", {}).get("WWW-Authenticate", ""))


def _call(ctx: Context, method: str, url: str, token: str | None, key: DpopKey | None, *,
          scheme: str = "DPoP", ath: str | None = None) -> object:
    headers: dict[str, str] = {}
    if token:
        headers["Authorization"] = f"{scheme} {token}"
    if key is not None:
        headers["DPoP"] = key.proof(method, url.split("?")[0], ath=ath)
    return ctx.request(method, url, headers=headers)


def _setup(ctx: Context) -> tuple[str, str, DpopKey]:
    from conformance.checks.token_exchange import subject

    fx = subject(ctx)
    url = _gateway_url(ctx, fx)
    _, token, key = capability_token(ctx)
    return url, token, key


@check("DPOP-41", "no credentials: 401 DPoP challenge with algs, no error", group=GROUP,
       needs=NEEDS)
def no_credentials(ctx: Context) -> Result:
    from conformance.checks.token_exchange import subject

    url = _gateway_url(ctx, subject(ctx))
    resp = ctx.request("GET", url)
    challenge = _challenge(resp)
    if resp.status_code != 401 or "dpop" not in challenge.lower():
        raise Fail(f"expected 401 with a DPoP challenge, got {resp.status_code} {challenge!r}")
    if "error=" in challenge:
        raise Fail("challenge carries an error although no credentials were sent")
    if "algs=" not in challenge:
        raise Fail("DPoP challenge has no algs parameter (SHOULD)")
    return passed(challenge)


@check("DPOP-42", "DPoP token sent as Bearer refused", group=GROUP, needs=NEEDS)
def bearer_downgrade(ctx: Context) -> Result:
    url, token, _ = _setup(ctx)
    resp = _call(ctx, "GET", url, token, None, scheme="Bearer")
    if getattr(resp, "status_code", 0) != 401 or "invalid_token" not in _challenge(resp):
        raise Fail(f"expected 401 invalid_token, got {getattr(resp, 'status_code', '?')} "
                   f"{_challenge(resp)!r}")
    return passed()


@check("DPOP-13", "missing or wrong ath refused", group=GROUP, needs=NEEDS)
def ath(ctx: Context) -> Result:
    url, token, key = _setup(ctx)
    for label, value in (("no ath", None), ("wrong ath", ath_for(token + "x"))):
        resp = _call(ctx, "GET", url, token, key, ath=value)
        if getattr(resp, "status_code", 0) != 401 or "invalid_dpop_proof" not in _challenge(resp):
            raise Fail(f"{label}: expected 401 invalid_dpop_proof, got "
                       f"{getattr(resp, 'status_code', '?')} {_challenge(resp)!r}")
    return passed()


@check("DPOP-14", "proof key other than cnf.jkt refused", group=GROUP, needs=NEEDS)
def other_key(ctx: Context) -> Result:
    url, token, _ = _setup(ctx)
    resp = _call(ctx, "GET", url, token, DpopKey("ES256"), ath=ath_for(token))
    if getattr(resp, "status_code", 0) != 401 or "invalid_token" not in _challenge(resp):
        raise Fail(f"expected 401 invalid_token, got {getattr(resp, 'status_code', '?')} "
                   f"{_challenge(resp)!r}")
    return passed()


@check("A5", "read intent refuses unsafe methods", group=GROUP, needs=NEEDS)
def read_only(ctx: Context) -> Result:
    from conformance.checks.token_exchange import subject

    fx = subject(ctx)
    allow = (fx.get("intents") or {}).get("allow") or {}
    if allow.get("action") != "read":
        raise Skip("the fixture's allowed intent is not a read")
    url, token, key = _setup(ctx)
    resp = _call(ctx, "POST", url, token, key, ath=ath_for(token))
    if getattr(resp, "status_code", 0) not in (401, 403):
        raise Fail(f"POST with a read capability: expected 403, got "
                   f"{getattr(resp, 'status_code', '?')}")
    return passed(str(getattr(resp, "status_code", "")))


@check("DPOP-43", "two Authorization headers are 400 invalid_request", group=GROUP, needs=NEEDS)
def two_authorization(ctx: Context) -> Result:
    url, token, key = _setup(ctx)
    problem = ctx.transport_problem(url)
    if problem:
        raise Skip(problem)
    parts = urlsplit(url)
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(parts.netloc, context=ssl.create_default_context(),
                                    timeout=ctx.options.timeout)
        if parts.scheme == "https" else
        http.client.HTTPConnection(parts.netloc, timeout=ctx.options.timeout))
    try:
        conn.putrequest("GET", parts.path or "/")
        conn.putheader("Authorization", f"DPoP {token}")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("DPoP", key.proof("GET", url, ath=ath_for(token)))
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    if resp.status != 400:
        raise Fail(f"expected 400 invalid_request, got {resp.status}")
    return passed()
