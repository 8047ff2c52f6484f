"""RFC 6749 §2.3/§5 token endpoint basics and RFC 7523 §2.2 client authentication."""

from __future__ import annotations

import secrets
import time

import requests
from joserfc.jwk import ECKey

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
    passed,
)

GROUP = "RFC 6749 Token endpoint & client auth"


@check("GEN-02", "bad Basic credentials get 401 with WWW-Authenticate", group=GROUP,
       needs=("token_endpoint",))
def basic_invalid_client(ctx: Context) -> Result:
    if "client_secret_basic" not in ctx.metadata.get("token_endpoint_auth_methods_supported",
                                                     ["client_secret_basic"]):
        raise Skip("client_secret_basic not advertised")
    probes = [Client("conformance-unknown-" + secrets.token_hex(8), "client_secret_basic", "x")]
    if ctx.need_client() is None and ctx.client().auth_method == "client_secret_basic":
        probes.append(Client(ctx.client().client_id, "client_secret_basic",
                             "wrong-" + secrets.token_hex(16)))
    for probe in probes:
        resp = ctx.token({"grant_type": "client_credentials"}, client=probe)
        expect_error(resp, 401, "invalid_client")
        if not resp.headers.get("WWW-Authenticate"):
            raise Fail("401 invalid_client without WWW-Authenticate")
    return passed(f"{len(probes)} probe(s): unknown client" + (", wrong secret" if len(probes) > 1
                                                                else ""))


@check("GEN-01", "unknown grant type is a 400 JSON error", group=GROUP, needs=("client",))
def unknown_grant(ctx: Context) -> Result:
    resp = ctx.token({"grant_type": "urn:example:conformance:no-such-grant"}, client=ctx.client())
    expect_error(resp, 400, "unsupported_grant_type")
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if ctype != "application/json":
        raise Fail(f"error Content-Type is {ctype!r}")
    return passed()


@check("GEN-03", "token response is Cache-Control no-store", group=GROUP, needs=("client",))
def no_store(ctx: Context) -> Result:
    resp = ctx.client_credentials()
    body = expect_token(resp)
    if "no-store" not in resp.headers.get("Cache-Control", "").lower():
        raise Fail(f"Cache-Control is {resp.headers.get('Cache-Control')!r}")
    if not isinstance(body.get("token_type"), str):
        raise Fail("token response has no token_type")
    return passed(f"token_type {body['token_type']}")


@check("BCP-04", "password grant refused", group=GROUP, needs=("client",))
def password_grant(ctx: Context) -> Result:
    if ctx.grant_supported("password"):
        raise Fail("password is listed in grant_types_supported")
    resp = ctx.token({"grant_type": "password", "username": "conformance", "password": "x"},
                     client=ctx.client())
    expect_error(resp, 400, ("unsupported_grant_type", "unauthorized_client"))
    return passed(describe(resp))


def _pkjwt_client(ctx: Context) -> Client:
    if "private_key_jwt" not in ctx.metadata.get("token_endpoint_auth_methods_supported", []):
        raise Skip("private_key_jwt not advertised")
    if not ctx.grant_supported("client_credentials"):
        raise Skip("client_credentials not advertised")
    return ctx.new_client(auth_method="private_key_jwt")


def _assert(ctx: Context, client: Client, assertion: str, *, send_client_id: bool = True
            ) -> requests.Response:
    # client_id is OPTIONAL with an assertion (RFC 7521 §4.2); omitting it keeps a sub/iss
    # mismatch from being reported as a conflicting parameter instead of a bad assertion.
    data = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    if send_client_id:
        data["client_id"] = client.client_id
    return ctx.post_form("token_endpoint", data)


@check("JWTB-02", "private_key_jwt client authenticates", group=GROUP, needs=("dcr",))
def pkjwt_ok(ctx: Context) -> Result:
    client = _pkjwt_client(ctx)
    # rfc7523bis wants aud = issuer; RFC 7523 / OIDC Core used the token endpoint URL.
    tried = []
    auds = (("issuer", ctx.issuer), ("token endpoint URL", ctx.endpoint("token_endpoint")))
    for label, aud in auds:
        resp = _assert(ctx, client, ctx.client_assertion(client, aud))
        if resp.status_code == 200:
            return passed(f"aud = {label}")
        tried.append(f"aud={label}: {describe(resp)}")
    raise Fail("; ".join(tried))


@check("JWTB-04", "client assertion with aud = issuer accepted", group=GROUP, needs=("dcr",))
def pkjwt_aud_issuer(ctx: Context) -> Result:
    client = _pkjwt_client(ctx)
    expect_token(_assert(ctx, client, ctx.client_assertion(client, ctx.issuer)))
    return passed()


@check("JWTB-03", "bad client assertions get 401 invalid_client", group=GROUP, needs=("dcr",))
def pkjwt_bad(ctx: Context) -> Result:
    client = _pkjwt_client(ctx)
    aud = ctx.issuer
    now = int(time.time())
    stranger = Client(client.client_id, "private_key_jwt", None,
                      ECKey.import_key(dict(ECKey.generate_key("P-256").as_dict(private=True),
                                            kid=client.signing_key.kid)), "ES256")
    cases = {
        "expired": ctx.client_assertion(client, aud, iat=now - 600, exp=now - 300),
        "foreign aud": ctx.client_assertion(client, "https://other-as.example/"),
        "sub != iss": ctx.client_assertion(client, aud, sub="conformance-someone-else"),
        "unregistered key": ctx.client_assertion(stranger, aud),
    }
    for label, assertion in cases.items():
        try:
            resp = _assert(ctx, client, assertion, send_client_id=label != "sub != iss")
            expect_error(resp, 401, "invalid_client")
        except Fail as e:
            raise Fail(f"{label}: {e}") from None
    return passed(", ".join(cases))
