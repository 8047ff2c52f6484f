"""RFC 7517 JWK Set at jwks_uri, as RFC 9068 §4 resource servers use it (JAT-02, JAT-05)."""

from __future__ import annotations

from conformance.runner import Context, Fail, Result, check, describe, json_body, passed

GROUP = "RFC 7517 JWKS"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def _keys(ctx: Context) -> list[dict[str, object]]:
    resp = ctx.request("GET", ctx.endpoint("jwks_uri"))
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or not isinstance(
        body.get("keys"), list
    ):
        raise Fail(f"jwks_uri: expected 200 JSON with a keys array, got {describe(resp)}")
    return [k for k in body["keys"] if isinstance(k, dict)]


@check("JAT-05", "jwks_uri serves a JWK Set", group=GROUP, needs=("metadata",))
def jwks_served(ctx: Context) -> Result:
    keys = _keys(ctx)
    if not keys:
        raise Fail("JWK Set is empty")
    no_kid = [k.get("kty") for k in keys if "kid" not in k]
    if len(keys) > 1 and no_kid:
        raise Fail("several keys but some have no kid (RS cannot select the key)")
    ctx.jwks()  # must also parse as a key set
    return passed(f"{len(keys)} key(s)")


@check("JAT-02", "JWKS holds only public asymmetric keys", group=GROUP, needs=("metadata",))
def jwks_public(ctx: Context) -> Result:
    keys = _keys(ctx)
    leaked = [str(k.get("kid", k.get("kty"))) for k in keys if PRIVATE_MEMBERS & set(k)]
    if leaked:
        raise Fail(f"private or symmetric key material published: {leaked}")
    bad = [str(k.get("kty")) for k in keys if k.get("kty") not in ("RSA", "EC", "OKP")]
    if bad:
        raise Fail(f"non-asymmetric key types: {bad}")
    return passed(", ".join(sorted({f"{k.get('kty')}/{k.get('alg', '?')}" for k in keys})))
