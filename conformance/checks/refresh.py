"""Refresh tokens: RFC 9700 §4.14.2 rotation and reuse detection (BCP-06), a retried rotation
(BCP-07), RFC 9449 §5 binding."""

from __future__ import annotations

from typing import Any

from conformance.checks.authcode import authorize, code_client, redeem
from conformance.dpop import DpopKey
from conformance.runner import (
    Client,
    Context,
    Fail,
    Result,
    Skip,
    check,
    describe,
    expect_error,
    expect_token,
    json_body,
    passed,
)

GROUP = "RFC 9700 Refresh tokens"
NEEDS = ("refresh",)


def _grant(ctx: Context, dpop: DpopKey | None = None) -> tuple[Client, dict[str, Any]]:
    client = code_client(ctx, public="none" in ctx.metadata.get(
        "token_endpoint_auth_methods_supported", []))
    body = expect_token(redeem(ctx, authorize(ctx, client), dpop=dpop))
    if "refresh_token" not in body:
        raise Skip("no refresh_token issued for an authorization_code grant")
    return client, body


def _refresh(ctx: Context, client: Client, rt: str, dpop: DpopKey | None = None) -> Any:
    return ctx.token({"grant_type": "refresh_token", "refresh_token": rt}, client=client,
                     dpop=dpop)


@check("BCP-06", "refresh token rotated", group=GROUP, needs=NEEDS)
def rotation(ctx: Context) -> Result:
    client, first = _grant(ctx)
    second = expect_token(_refresh(ctx, client, first["refresh_token"]))
    new_rt = second.get("refresh_token")
    if client.auth_method == "none" and (not new_rt or new_rt == first["refresh_token"]):
        raise Fail("public client refresh token was not rotated (MCP-10, BCP-06)")
    if not new_rt or new_rt == first["refresh_token"]:
        raise Skip("confidential client refresh token not rotated (allowed)")
    return passed()


@check("BCP-06", "reuse of a rotated refresh token revokes the family", group=GROUP, needs=NEEDS)
def reuse(ctx: Context) -> Result:
    # The old token is presented after its successor was used, so no reuse interval (BCP-07)
    # can make it a retry: whoever presents it is not the client that went on refreshing.
    client, first = _grant(ctx)
    second = expect_token(_refresh(ctx, client, first["refresh_token"]))
    new_rt = second.get("refresh_token")
    if not new_rt or new_rt == first["refresh_token"]:
        raise Skip("refresh tokens are not rotated")
    newest = expect_token(_refresh(ctx, client, new_rt)).get("refresh_token") or new_rt
    expect_error(_refresh(ctx, client, first["refresh_token"]), 400, "invalid_grant")
    resp = _refresh(ctx, client, newest)
    if resp.status_code == 200:
        raise Fail("after reuse was detected, the newest refresh token still works")
    expect_error(resp, 400, "invalid_grant")
    return passed()


@check("BCP-07", "a retried rotation never yields a second successor", group=GROUP,
       needs=(*NEEDS, "dpop"))
def retry(ctx: Context) -> Result:
    # A client that lost a refresh response retries with the old token and the same DPoP key:
    # the answer is that rotation's successor again (a reuse interval) or invalid_grant (none),
    # never another refresh token.
    key = ctx.dpop_key()
    client, first = _grant(ctx, dpop=key)
    lost = expect_token(_refresh(ctx, client, first["refresh_token"], dpop=key))
    successor = lost.get("refresh_token")
    if not successor or successor == first["refresh_token"]:
        raise Skip("refresh tokens are not rotated")
    resp = _refresh(ctx, client, first["refresh_token"], dpop=key)
    if resp.status_code != 200:
        expect_error(resp, 400, "invalid_grant")
        raise Skip("no reuse interval: a retried rotation is treated as reuse")
    again = expect_token(resp).get("refresh_token")
    if again != successor:
        raise Fail("a retried rotation returned a different refresh token")
    expect_token(_refresh(ctx, client, successor, dpop=key))
    return passed()


@check("DPOP-22", "public client refresh needs the same DPoP key", group=GROUP,
       needs=(*NEEDS, "dpop"))
def bound_refresh(ctx: Context) -> Result:
    key = ctx.dpop_key()
    client, first = _grant(ctx, dpop=key)
    if client.auth_method != "none":
        raise Skip("public clients not supported; confidential refresh tokens are not key-bound")
    resp = _refresh(ctx, client, first["refresh_token"], dpop=ctx.dpop_key())
    codes = ("invalid_grant",) if ctx.local_profile else ("invalid_grant", "invalid_dpop_proof")
    expect_error(resp, 400, codes)
    expect_token(_refresh(ctx, client, first["refresh_token"], dpop=key))
    return passed()


@check("REV-05", "revoking a refresh token invalidates its access tokens", group=GROUP,
       needs=(*NEEDS, "revocation", "introspection"))
def revoke_family(ctx: Context) -> Result:
    client, first = _grant(ctx)
    resp = ctx.post_form("revocation_endpoint", {"token": first["refresh_token"],
                                                 "token_type_hint": "refresh_token"},
                         client=client)
    if resp.status_code != 200:
        raise Fail(f"revocation: expected 200, got {describe(resp)}")
    expect_error(_refresh(ctx, client, first["refresh_token"]), 400, "invalid_grant")
    intro = ctx.post_form("introspection_endpoint", {"token": first["access_token"]},
                          client=ctx.client())
    body = json_body(intro)
    if isinstance(body, dict) and body.get("active") is True:
        if ctx.local_profile:
            raise Fail("access token from the revoked grant is still active")
        raise Skip("refresh token revoked; its access token stays active (SHOULD, not MUST)")
    return passed()
