"""RFC 8707 resource indicators at the token endpoint (RI-*), with RFC 9068 §3 audience."""

from __future__ import annotations

from conformance.runner import (
    Context,
    Fail,
    Result,
    Skip,
    check,
    decode_jwt_unverified,
    expect_error,
    expect_token,
    passed,
)

GROUP = "RFC 8707 Resource indicators"
NEEDS = ("client",)


@check("RI-01", "resource with fragment or relative URI refused", group=GROUP, needs=NEEDS)
def malformed_resource(ctx: Context) -> Result:
    for value in ("https://rs.example/api#frag", "relative/path"):
        resp = ctx.client_credentials(extra={"resource": value})
        try:
            expect_error(resp, 400, "invalid_target")
        except Fail as e:
            raise Fail(f"resource={value!r}: {e}") from None
    return passed()


@check("RI-02", "unknown resource refused", group=GROUP, needs=NEEDS)
def unknown_resource(ctx: Context) -> Result:
    resp = ctx.client_credentials(extra={"resource": "https://unknown-resource.invalid/api"})
    expect_error(resp, 400, "invalid_target")
    return passed()


def _known_resource(ctx: Context) -> str:
    if ctx.options.resource:
        return ctx.options.resource
    listed = ctx.metadata.get("protected_resources")
    if isinstance(listed, list) and listed and isinstance(listed[0], str):
        return listed[0]
    raise Skip("no --resource given and metadata lists no protected_resources")


@check("RI-03", "token audience-restricted to the requested resource", group=GROUP, needs=NEEDS)
def audience(ctx: Context) -> Result:
    resource = _known_resource(ctx)
    body = expect_token(ctx.client_credentials(extra={"resource": resource}))
    decoded = decode_jwt_unverified(str(body["access_token"]))
    if decoded is None:
        raise Skip("access token is opaque; audience not observable")
    aud = decoded[1].get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if resource not in auds:
        raise Fail(f"aud {aud!r} does not contain the requested resource")
    return passed()
