"""RFC 6749 §4.1 authorization code + RFC 7636 PKCE (BCP-02), RFC 9207 iss, DPoP for codes.

Signing a test user in needs `--authorize-cmd`: a hook that receives the authorization URL as its
last argument and prints the final redirect URL. Without it these checks skip (except GEN-04,
which needs no user).
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from conformance.dpop import DpopKey, b64url
from conformance.runner import (
    Client,
    Context,
    Fail,
    Result,
    Skip,
    check,
    expect_error,
    expect_token,
    passed,
)

GROUP = "RFC 6749 Authorization code + PKCE"
REDIRECT_URI = "http://127.0.0.1:9/conformance/callback"  # loopback, discard port: never served


@dataclass
class Authorization:
    client: Client
    code: str
    verifier: str | None
    params: dict[str, str]


def code_client(ctx: Context, *, public: bool = False) -> Client:
    methods = ctx.metadata.get("token_endpoint_auth_methods_supported", [])
    if public and "none" not in methods:
        raise Skip("public clients (token_endpoint_auth_method none) not advertised")
    grants = ["authorization_code"] + (["refresh_token"] if ctx.grant_supported("refresh_token")
                                       else [])
    return ctx.new_client({"grant_types": grants, "response_types": ["code"],
                           "redirect_uris": [REDIRECT_URI], "application_type": "native"},
                          auth_method="none" if public else None)


def authorize(ctx: Context, client: Client, *, pkce: bool = True,
              extra: dict[str, str] | None = None) -> Authorization:
    verifier = secrets.token_urlsafe(48) if pkce else None
    state = secrets.token_urlsafe(12)
    query = {"response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT_URI,
             "state": state, **(extra or {})}
    if ctx.metadata.get("scopes_supported") and "scope" not in query:
        query["scope"] = " ".join(s for s in ctx.metadata["scopes_supported"][:1])
    if verifier:
        query["code_challenge"] = b64url(hashlib.sha256(verifier.encode()).digest())
        query["code_challenge_method"] = "S256"
    url = ctx.endpoint("authorization_endpoint") + "?" + urlencode(query)
    out = ctx.run_cmd(f"{ctx.options.authorize_cmd} {shlex.quote(url)}")
    params = {k: v[0] for k, v in parse_qs(urlsplit(out).query).items()}
    if params.get("state") != state:
        raise Fail("authorization response did not echo state")
    if "code" not in params:
        raise Fail(f"authorization response has no code (error={params.get('error')!r})")
    return Authorization(client, params["code"], verifier, params)


def redeem(ctx: Context, auth: Authorization, *, verifier: str | None = None,
           dpop: DpopKey | None = None, extra: dict[str, Any] | None = None) -> Any:
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": REDIRECT_URI,
            **(extra or {})}
    v = auth.verifier if verifier is None else verifier
    if v:
        data["code_verifier"] = v
    return ctx.token(data, client=auth.client, dpop=dpop)


@check("GEN-04", "unregistered redirect_uri is not redirected to", group=GROUP,
       needs=("dcr",))
def no_open_redirect(ctx: Context) -> Result:
    if not ctx.metadata.get("authorization_endpoint") or not ctx.grant_supported(
        "authorization_code"
    ):
        raise Skip("authorization_code not advertised")
    client = code_client(ctx)
    evil = "https://attacker.example/cb"
    query = {"response_type": "code", "client_id": client.client_id, "redirect_uri": evil,
             "state": "s", "code_challenge": b64url(hashlib.sha256(b"x" * 43).digest()),
             "code_challenge_method": "S256"}
    resp = ctx.request("GET", ctx.endpoint("authorization_endpoint") + "?" + urlencode(query))
    location = resp.headers.get("Location", "")
    if 300 <= resp.status_code < 400 and location.startswith(evil):
        raise Fail("redirected to an unregistered redirect_uri")
    if resp.status_code < 400:
        raise Fail(f"expected an error page (4xx), got {resp.status_code}")
    return passed(f"{resp.status_code} error page")


@check("MCP-07", "authorization response carries iss", group=GROUP, needs=("authcode",))
def iss_in_response(ctx: Context) -> Result:
    auth = authorize(ctx, code_client(ctx))
    if ctx.metadata.get("authorization_response_iss_parameter_supported") is not True:
        raise Skip("iss parameter not advertised")
    if auth.params.get("iss") != ctx.issuer:
        raise Fail(f"iss is {auth.params.get('iss')!r}")
    return passed()


@check("BCP-02", "PKCE verifier mismatch refused", group=GROUP, needs=("authcode",))
def pkce_mismatch(ctx: Context) -> Result:
    auth = authorize(ctx, code_client(ctx))
    expect_error(redeem(ctx, auth, verifier=secrets.token_urlsafe(48)), 400, "invalid_grant")
    return passed()


@check("BCP-02", "code_verifier without code_challenge refused", group=GROUP,
       needs=("authcode",))
def pkce_downgrade(ctx: Context) -> Result:
    try:
        auth = authorize(ctx, code_client(ctx), pkce=False)
    except Fail as e:
        return passed(f"authorization without PKCE refused ({e})")
    expect_error(redeem(ctx, auth, verifier=secrets.token_urlsafe(48)), 400, "invalid_grant")
    return passed()


@check("DPOP-20", "code redeemed with a proof yields a DPoP token", group=GROUP,
       needs=("authcode", "dpop"))
def code_dpop(ctx: Context) -> Result:
    auth = authorize(ctx, code_client(ctx))
    body = expect_token(redeem(ctx, auth, dpop=ctx.dpop_key()))
    if body.get("token_type") != "DPoP":
        raise Fail(f"token_type is {body.get('token_type')!r}")
    return passed()


@check("DPOP-26", "dpop_jkt mismatch at the token request refused", group=GROUP,
       needs=("authcode", "dpop"))
def dpop_jkt(ctx: Context) -> Result:
    bound = ctx.dpop_key()
    auth = authorize(ctx, code_client(ctx), extra={"dpop_jkt": bound.thumbprint})
    resp = redeem(ctx, auth, dpop=ctx.dpop_key())
    codes = ("invalid_grant",) if ctx.local_profile else (
        "invalid_grant", "invalid_dpop_proof", "invalid_request")
    body = expect_error(resp, 400, codes)
    return passed(str(body["error"]))
