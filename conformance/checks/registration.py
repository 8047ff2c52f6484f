"""RFC 7591 Dynamic Client Registration (DCR-*), plus RFC 9700 §2.6 redirect URI rules."""

from __future__ import annotations

import secrets
from typing import Any

from conformance.runner import (
    Context,
    Fail,
    Result,
    Skip,
    check,
    describe,
    expect_error,
    json_body,
    passed,
)

GROUP = "RFC 7591 Registration"


def _basic_metadata(ctx: Context) -> dict[str, Any]:
    return {"client_name": "conformance registration probe", "grant_types": ["client_credentials"],
            "response_types": [], "token_endpoint_auth_method": ctx.preferred_auth_method()}


def _code_metadata(ctx: Context, redirect_uri: str) -> dict[str, Any]:
    if not ctx.grant_supported("authorization_code"):
        raise Skip("authorization_code not advertised; redirect URIs not applicable")
    return {"client_name": "conformance redirect probe", "grant_types": ["authorization_code"],
            "response_types": ["code"], "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": ctx.preferred_auth_method()}


@check("DCR-01", "initial access token enforced", group=GROUP, needs=("dcr",))
def initial_access_token(ctx: Context) -> Result:
    if not ctx.options.registration_token:
        raise Skip("no --registration-token given; cannot tell whether one is required")
    for label, token in (("missing", None), ("wrong", "conformance-" + secrets.token_hex(16))):
        resp = ctx.register(_basic_metadata(ctx), token=token)
        if resp.status_code != 401:
            raise Fail(f"{label} initial access token: expected 401, got {describe(resp)}")
    return passed("missing and wrong tokens both get 401")


@check("DCR-06", "registration returns 201 with client_id and metadata", group=GROUP,
       needs=("dcr",))
def registration_success(ctx: Context) -> Result:
    sent = _basic_metadata(ctx)
    resp = ctx.register(sent)
    body = json_body(resp)
    if resp.status_code != 201 or not isinstance(body, dict):
        raise Fail(f"expected 201 JSON, got {describe(resp)}")
    if not isinstance(body.get("client_id"), str) or not body["client_id"]:
        raise Fail("no client_id")
    if "client_secret" in body and "client_secret_expires_at" not in body:
        raise Fail("client_secret issued without client_secret_expires_at")
    missing = [k for k in ("client_name", "grant_types", "token_endpoint_auth_method")
               if k not in body]
    if missing:
        raise Fail(f"registered metadata not echoed: {', '.join(missing)}")
    return passed()


@check("DCR-03", "jwks together with jwks_uri refused", group=GROUP, needs=("dcr",))
def jwks_and_jwks_uri(ctx: Context) -> Result:
    from conformance.dpop import DpopKey

    md = _basic_metadata(ctx)
    md["jwks"] = {"keys": [DpopKey("ES256").public_jwk]}
    md["jwks_uri"] = "https://client.example/jwks.json"
    resp = ctx.register(md)
    expect_error(resp, 400, "invalid_client_metadata")
    return passed()


@check("DCR-04", "redirect URI with fragment refused", group=GROUP, needs=("dcr",))
def redirect_fragment(ctx: Context) -> Result:
    uri = "https://client.example/cb#frag"
    resp = ctx.register(_code_metadata(ctx, uri))
    body = json_body(resp)
    if resp.status_code == 201 and isinstance(body, dict):
        if uri in body.get("redirect_uris", []):
            raise Fail("registered a redirect URI with a fragment")
        return passed("server replaced the invalid value (RFC 7591 §3.2.2 allows this)")
    expect_error(resp, 400, "invalid_redirect_uri")
    return passed()


@check("BCP-09", "plain-HTTP non-loopback redirect URI refused", group=GROUP, needs=("dcr",))
def redirect_plain_http(ctx: Context) -> Result:
    uri = "http://client.example/cb"
    resp = ctx.register(_code_metadata(ctx, uri))
    body = json_body(resp)
    if resp.status_code == 201 and isinstance(body, dict) and uri in body.get("redirect_uris", []):
        if ctx.local_profile:
            raise Fail("registered an http redirect URI that is not loopback (DCR-04 pinned)")
        raise Skip("accepted an http non-loopback redirect URI: RFC 6749 §3.1.2.1 only says "
                   "SHOULD require TLS; a failure only for servers claiming the Part A profile")
    if resp.status_code == 201:
        return passed("server replaced the invalid value")
    expect_error(resp, 400, ("invalid_redirect_uri", "invalid_client_metadata"))
    return passed()


@check("DCR-07", "registrant cannot choose its client_id", group=GROUP, needs=("dcr",))
def chosen_client_id(ctx: Context) -> Result:
    wanted = "conformance-chosen-" + secrets.token_hex(6)
    md = dict(_basic_metadata(ctx), client_id=wanted)
    resp = ctx.register(md)
    body = json_body(resp)
    if resp.status_code == 201 and isinstance(body, dict):
        if body.get("client_id") == wanted:
            raise Fail("server issued the client_id the registrant asked for")
        return passed("requested client_id ignored")
    expect_error(resp, 400, "invalid_client_metadata")
    return passed("refused with invalid_client_metadata")
