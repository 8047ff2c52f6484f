"""RFC 9068 JWT profile for access tokens (JAT-*), checked on a client_credentials token."""

from __future__ import annotations

import time

from joserfc import jws
from joserfc.errors import JoseError

from conformance.runner import Context, Fail, Result, Skip, check, decode_jwt_unverified, passed

GROUP = "RFC 9068 JWT access tokens"
NEEDS = ("client",)
REQUIRED = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")


def _jwt(ctx: Context) -> tuple[str, dict[str, object], dict[str, object]]:
    token = str(ctx.fresh_access_token()["access_token"])
    decoded = decode_jwt_unverified(token)
    if decoded is None:
        raise Skip("access token is opaque (RFC 9068 not used)")
    return token, decoded[0], decoded[1]


@check("JAT-01", "typ is at+jwt", group=GROUP, needs=NEEDS)
def typ(ctx: Context) -> Result:
    _, header, _ = _jwt(ctx)
    if header.get("typ") not in ("at+jwt", "application/at+jwt"):
        raise Fail(f"typ is {header.get('typ')!r}")
    return passed(str(header["typ"]))


@check("JAT-02", "signed with an asymmetric alg verifiable via jwks_uri", group=GROUP,
       needs=NEEDS)
def signature(ctx: Context) -> Result:
    token, header, _ = _jwt(ctx)
    alg = str(header.get("alg", ""))
    if alg == "none" or alg.startswith("HS"):
        raise Fail(f"alg is {alg!r}")
    try:
        jws.deserialize_compact(token, ctx.jwks(), algorithms=[alg])
    except (JoseError, ValueError) as e:
        raise Fail(f"signature does not verify with jwks_uri keys: {type(e).__name__}") from e
    return passed(alg)


@check("JAT-03", "required claims present and consistent", group=GROUP, needs=NEEDS)
def claims(ctx: Context) -> Result:
    _, _, body = _jwt(ctx)
    missing = [c for c in REQUIRED if c not in body]
    if missing:
        raise Fail(f"missing claims: {', '.join(missing)}")
    if body["iss"] != ctx.issuer:
        raise Fail("iss is not the issuer")
    if body["client_id"] != ctx.client().client_id:
        raise Fail("client_id is not the requesting client")
    now = int(time.time())
    exp, iat = body["exp"], body["iat"]
    if not isinstance(exp, int) or not isinstance(iat, int) or exp <= now or iat > now + 60:
        raise Fail("exp/iat are not sane integers around now")
    return passed(f"lifetime {exp - iat}s")
