"""Part A5 gateway as an RFC 9449 §7 / RFC 6750 resource server: DPoP challenges and binding."""

from __future__ import annotations

import http.client
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


def _nonce_challenge(resp: object) -> str | None:
    """RFC 9449 §9: the RS's fresh nonce if `resp` is its use_dpop_nonce challenge."""
    if getattr(resp, "status_code", 0) != 401 or 'error="use_dpop_nonce"' not in _challenge(resp):
        return None
    return getattr(resp, "headers", {}).get("DPoP-Nonce") or None


def _call(ctx: Context, method: str, url: str, token: str | None, key: DpopKey | None, *,
          scheme: str = "DPoP", ath: str | None = None, retry_nonce: bool = True) -> object:
    """Call the gateway; a proof is rebuilt once with the RS nonce after a use_dpop_nonce
    challenge (RFC 9449 §9), so a refusal comes from the rule under test, not the nonce."""
    resp: object = None
    for _ in range(2 if (key is not None and retry_nonce) else 1):
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"{scheme} {token}"
        if key is not None:
            headers["DPoP"] = key.proof(method, url.split("?")[0], ath=ath,
                                        nonce=ctx.cache.get("rs_nonce"))
        resp = ctx.request(method, url, headers=headers)
        nonce = _nonce_challenge(resp)
        if nonce is None:
            break
        ctx.cache["rs_nonce"] = nonce
    return resp


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


@check("A5", "capability token with a bound proof reaches the platform", group=GROUP,
       needs=NEEDS)
def forwarded(ctx: Context) -> Result:
    """The positive control for the refusals below: a correct request gets the platform's
    answer, so a gateway that refuses everything cannot pass them."""
    url, token, key = _setup(ctx)
    resp = _call(ctx, "GET", url, token, key, ath=ath_for(token))
    status = getattr(resp, "status_code", 0)
    if status != 200:
        raise Fail(f"expected 200 from the platform, got {status} {_challenge(resp)!r}".rstrip())
    leaked = [h for h in ("Authorization", "Set-Cookie")
              if getattr(resp, "headers", {}).get(h)]
    if leaked:
        raise Fail(f"platform headers passed through: {', '.join(leaked)}")
    return passed(f"GET {url.split('/gateway/', 1)[1]} -> 200")


@check("A5", "token without an intent (client_credentials) refused", group=GROUP,
       needs=(*NEEDS, "dpop"))
def not_a_capability(ctx: Context) -> Result:
    """Only capability tokens from an approved exchange open the gateway (A4, A5): a client's
    own token audience-restricted to the gateway must not reach the platform."""
    from conformance.checks.token_exchange import subject

    url = _gateway_url(ctx, subject(ctx))
    key = ctx.dpop_key()
    resource = url.split("/gateway/", 1)[0] + "/gateway/" + url.split("/gateway/", 1)[1].split(
        "/", 1)[0]
    resp = ctx.client_credentials(dpop=key, extra={"resource": resource})
    body = resp.json() if resp.headers.get("Content-Type", "").startswith(
        "application/json") else {}
    if resp.status_code != 200 or "access_token" not in body:
        return passed(f"not issued ({resp.status_code} {body.get('error', '')})".rstrip())
    token = str(body["access_token"])
    answer = _call(ctx, "GET", url, token, key, ath=ath_for(token))
    status = getattr(answer, "status_code", 0)
    if status not in (401, 403):
        raise Fail(f"gateway answered {status} to a token carrying no intent")
    return passed(f"{status} {_challenge(answer)}".rstrip())


@check("DPOP-31", "RS nonce challenge: 401 use_dpop_nonce with DPoP-Nonce", group=GROUP,
       needs=NEEDS)
def rs_nonce(ctx: Context) -> Result:
    url, token, key = _setup(ctx)
    ctx.cache.pop("rs_nonce", None)
    resp = _call(ctx, "GET", url, token, key, ath=ath_for(token), retry_nonce=False)
    if getattr(resp, "status_code", 0) == 200:
        raise Skip("the gateway does not require DPoP nonces")
    nonce = _nonce_challenge(resp)
    if nonce is None:
        raise Fail(f"proof without nonce: expected 200 or a 401 use_dpop_nonce challenge with a "
                   f"DPoP-Nonce header, got {getattr(resp, 'status_code', '?')} "
                   f"{_challenge(resp)!r}")
    ctx.cache["rs_nonce"] = nonce
    retry = _call(ctx, "GET", url, token, key, ath=ath_for(token), retry_nonce=False)
    if getattr(retry, "status_code", 0) != 200:
        raise Fail(f"proof with the RS nonce: expected 200, got "
                   f"{getattr(retry, 'status_code', '?')} {_challenge(retry)!r}")
    return passed("challenge, then 200 with the nonce")


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
        http.client.HTTPSConnection(parts.netloc, context=ctx.tls_context(),
                                    timeout=ctx.options.timeout)
        if parts.scheme == "https" else
        http.client.HTTPConnection(parts.netloc, timeout=ctx.options.timeout))
    try:
        conn.putrequest("GET", parts.path or "/")
        conn.putheader("Authorization", f"DPoP {token}")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("DPoP", key.proof("GET", url, ath=ath_for(token),
                                         nonce=ctx.cache.get("rs_nonce")))
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    if resp.status != 400:
        raise Fail(f"expected 400 invalid_request, got {resp.status}")
    return passed()
