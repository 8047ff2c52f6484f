"""RFC 7662 token introspection (INT-*)."""

from __future__ import annotations

import secrets

from conformance.runner import Client, Context, Fail, Result, check, describe, json_body, passed

GROUP = "RFC 7662 Introspection"
NEEDS = ("client", "introspection")


@check("INT-01", "introspection requires authorization", group=GROUP, needs=NEEDS)
def requires_auth(ctx: Context) -> Result:
    token = str(ctx.fresh_access_token()["access_token"])
    resp = ctx.post_form("introspection_endpoint", {"token": token})
    body = json_body(resp)
    if resp.status_code == 200 and isinstance(body, dict) and body.get("active") is True:
        raise Fail("unauthenticated caller got active:true")
    if resp.status_code not in (400, 401):
        raise Fail(f"expected 401 (or 400 invalid_request), got {describe(resp)}")
    return passed(describe(resp))


@check("INT-02", "bad client credentials get 401", group=GROUP, needs=NEEDS)
def bad_credentials(ctx: Context) -> Result:
    token = str(ctx.fresh_access_token()["access_token"])
    me = ctx.client()
    if me.auth_method not in ("client_secret_basic", "client_secret_post"):
        probe = Client("conformance-unknown-" + secrets.token_hex(8), "client_secret_basic", "x")
    else:
        probe = Client(me.client_id, me.auth_method, "wrong-" + secrets.token_hex(16))
    resp = ctx.post_form("introspection_endpoint", {"token": token}, client=probe)
    if resp.status_code != 401:
        raise Fail(f"expected 401, got {describe(resp)}")
    return passed()


@check("INT-03", "active token introspects as active with sane members", group=GROUP,
       needs=NEEDS)
def active(ctx: Context) -> Result:
    token = str(ctx.fresh_access_token()["access_token"])
    resp = ctx.post_form("introspection_endpoint", {"token": token,
                                                    "token_type_hint": "access_token"},
                         client=ctx.client())
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict):
        raise Fail(f"expected 200 JSON, got {describe(resp)}")
    if body.get("active") is not True:
        raise Fail(f"active is {body.get('active')!r}")
    problems = [k for k in ("exp", "iat", "nbf") if k in body and not isinstance(body[k], int)]
    problems += [k for k in ("scope", "client_id", "sub", "iss", "jti", "token_type")
                 if k in body and not isinstance(body[k], str)]
    if problems:
        raise Fail(f"wrongly typed members: {', '.join(problems)}")
    if "client_id" in body and body["client_id"] != ctx.client().client_id:
        raise Fail("client_id is not the client the token was issued to")
    if "iss" in body and body["iss"] != ctx.issuer:
        raise Fail("iss is not the issuer")
    return passed(", ".join(sorted(body)))


@check("INT-04", "unknown token introspects as active:false", group=GROUP, needs=NEEDS)
def unknown(ctx: Context) -> Result:
    unknown_token = "conformance-" + secrets.token_hex(24)
    resp = ctx.post_form("introspection_endpoint", {"token": unknown_token},
                         client=ctx.client())
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or body.get("active") is not False:
        raise Fail(f"expected 200 {{\"active\": false}}, got {describe(resp)}")
    extra = sorted(set(body) - {"active"})
    return passed("extra members: " + ", ".join(extra) if extra else "")
