"""RFC 7009 token revocation (REV-*)."""

from __future__ import annotations

import secrets

from conformance.runner import (
    Client,
    Context,
    Fail,
    Result,
    Skip,
    check,
    describe,
    json_body,
    passed,
)

GROUP = "RFC 7009 Revocation"
NEEDS = ("client", "revocation")


def _active(ctx: Context, token: str) -> bool:
    resp = ctx.post_form("introspection_endpoint", {"token": token}, client=ctx.client())
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or "active" not in body:
        raise Fail(f"introspection: expected 200 JSON, got {describe(resp)}")
    return body["active"] is True


@check("REV-01", "revocation requires client authentication", group=GROUP, needs=NEEDS)
def requires_auth(ctx: Context) -> Result:
    me = ctx.client()
    if me.auth_method not in ("client_secret_basic", "client_secret_post"):
        raise Skip("the run's client does not use a shared secret")
    token = str(ctx.fresh_access_token()["access_token"])
    probe = Client(me.client_id, me.auth_method, "wrong-" + secrets.token_hex(16))
    resp = ctx.post_form("revocation_endpoint", {"token": token}, client=probe)
    if resp.status_code != 401 or (json_body(resp) or {}).get("error") != "invalid_client":
        raise Fail(f"expected 401 invalid_client, got {describe(resp)}")
    if ctx.need_introspection() is None and not _active(ctx, token):
        raise Fail("the token was revoked by an unauthenticated request")
    return passed()


@check("REV-02", "unknown token and unknown hint get 200", group=GROUP, needs=NEEDS)
def unknown(ctx: Context) -> Result:
    for hint in (None, "access_token", "conformance_bogus_hint"):
        data = {"token": "conformance-" + secrets.token_hex(24)}
        if hint:
            data["token_type_hint"] = hint
        resp = ctx.post_form("revocation_endpoint", data, client=ctx.client())
        if resp.status_code != 200:
            raise Fail(f"hint {hint!r}: expected 200, got {describe(resp)}")
    return passed()


@check("REV-02", "revoked access token becomes inactive", group=GROUP,
       needs=(*NEEDS, "introspection"))
def revoke_access_token(ctx: Context) -> Result:
    token = str(ctx.fresh_access_token()["access_token"])
    if not _active(ctx, token):
        raise Fail("fresh token is not active")
    resp = ctx.post_form("revocation_endpoint", {"token": token,
                                                 "token_type_hint": "access_token"},
                         client=ctx.client())
    if resp.status_code == 400 and (json_body(resp) or {}).get("error") == "unsupported_token_type":
        raise Skip("server does not revoke access tokens (REV-03 unsupported_token_type)")
    if resp.status_code != 200:
        raise Fail(f"expected 200, got {describe(resp)}")
    if _active(ctx, token):
        raise Fail("revocation answered 200 but the token is still active")
    return passed()


@check("REV-04", "another client cannot revoke my token", group=GROUP,
       needs=(*NEEDS, "introspection", "dcr"))
def foreign_revocation(ctx: Context) -> Result:
    token = str(ctx.fresh_access_token()["access_token"])
    other = ctx.new_client()
    resp = ctx.post_form("revocation_endpoint", {"token": token}, client=other)
    if resp.status_code not in (200, 400):
        raise Fail(f"expected 200 (ignored) or 400, got {describe(resp)}")
    if not _active(ctx, token):
        raise Fail("a different client revoked the token")
    return passed(f"answered {describe(resp)}; token still active")
