"""RFC 8414 authorization server metadata, plus the transport rule GEN-06 (RFC 9449 §2)."""

from __future__ import annotations

from urllib.parse import urlsplit

from conformance.runner import Context, Fail, Result, Skip, check, passed

GROUP = "RFC 8414 Metadata"
ASYMMETRIC_PREFIXES = ("RS", "PS", "ES", "Ed")
URL_FIELDS = ("authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint",
              "introspection_endpoint", "revocation_endpoint",
              "pushed_authorization_request_endpoint", "userinfo_endpoint")


@check("GEN-06", "issuer and endpoints use HTTPS", group=GROUP)
def https_only(ctx: Context) -> Result:
    urls = [ctx.issuer]
    if ctx.need_metadata() is None:
        urls += [ctx.metadata[f] for f in URL_FIELDS if isinstance(ctx.metadata.get(f), str)]
    plain = [u for u in urls if urlsplit(u).scheme.lower() != "https"]
    if not plain:
        return passed(f"{len(urls)} URLs are https")
    problems = [p for p in (ctx.transport_problem(u) for u in plain) if p]
    if problems:
        raise Fail("; ".join(problems))
    raise Skip("plain-HTTP loopback allowed by --insecure-http-loopback; HTTPS not verified")


@check("META-03", "metadata served at a well-known URL as JSON", group=GROUP, needs=("metadata",))
def well_known(ctx: Context) -> Result:
    resp = ctx.metadata_response
    assert resp is not None
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Fail(f"Content-Type is {ctype!r}, not application/json")
    empty = [k for k, v in ctx.metadata.items() if isinstance(v, list) and not v]
    if empty:
        raise Fail(f"empty arrays should be omitted: {', '.join(sorted(empty))}")
    return passed(f"found at {ctx.metadata_url}")


@check("META-01", "issuer identical to the discovery issuer", group=GROUP, needs=("metadata",))
def issuer_identical(ctx: Context) -> Result:
    issuer = ctx.metadata.get("issuer")
    if issuer != ctx.issuer:
        raise Fail(f"metadata issuer {issuer!r} != {ctx.issuer!r}")
    parts = urlsplit(issuer)
    if parts.query or parts.fragment or "?" in issuer or "#" in issuer:
        raise Fail("issuer has a query or fragment")
    return passed()


@check("META-02", "required members present", group=GROUP, needs=("metadata",))
def required_members(ctx: Context) -> Result:
    md = ctx.metadata
    grants = md.get("grant_types_supported", ["authorization_code", "implicit"])
    missing = []
    if not md.get("token_endpoint") and grants != ["implicit"]:
        missing.append("token_endpoint")
    if not md.get("response_types_supported"):
        missing.append("response_types_supported")
    if not md.get("authorization_endpoint") and {"authorization_code", "implicit"} & set(grants):
        missing.append("authorization_endpoint")
    if missing:
        raise Fail(f"missing: {', '.join(missing)}")
    return passed()


@check("META-04", "grant types and auth methods published explicitly", group=GROUP,
       needs=("metadata",))
def explicit_lists(ctx: Context) -> Result:
    md = ctx.metadata
    missing = [f for f in ("grant_types_supported", "token_endpoint_auth_methods_supported")
               if not isinstance(md.get(f), list)]
    if missing:
        raise Fail(f"not published (RFC 8414 defaults then apply): {', '.join(missing)}")
    bad = [f for f, v in md.items() if f.endswith("auth_signing_alg_values_supported")
           and isinstance(v, list) and "none" in v]
    if bad:
        raise Fail(f"'none' listed in {', '.join(bad)}")
    return passed()


@check("META-05", "PKCE S256 advertised", group=GROUP, needs=("metadata",))
def pkce_advertised(ctx: Context) -> Result:
    if not ctx.grant_supported("authorization_code"):
        raise Skip("authorization_code not advertised; PKCE not applicable")
    methods = ctx.metadata.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise Fail(f"code_challenge_methods_supported is {methods!r}; must include S256")
    return passed(f"{methods}")


@check("DPOP-28", "dpop_signing_alg_values_supported asymmetric", group=GROUP,
       needs=("metadata",))
def dpop_algs(ctx: Context) -> Result:
    algs = ctx.metadata.get("dpop_signing_alg_values_supported")
    if algs is None:
        raise Skip("server does not advertise DPoP")
    if not isinstance(algs, list) or not algs:
        raise Fail(f"not a non-empty array: {algs!r}")
    bad = [a for a in algs if not isinstance(a, str) or a == "none"
           or not a.startswith(ASYMMETRIC_PREFIXES)]
    if bad:
        raise Fail(f"non-asymmetric algs listed: {bad}")
    return passed(" ".join(algs))


@check("RAR-12", "authorization_details_types_supported well-formed", group=GROUP,
       needs=("metadata",))
def rar_types(ctx: Context) -> Result:
    types = ctx.metadata.get("authorization_details_types_supported")
    if types is None:
        raise Skip("server does not advertise RFC 9396 authorization_details types")
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        raise Fail(f"not an array of strings: {types!r}")
    return passed(" ".join(types))


@check("MCP-07", "iss response parameter advertised", group=GROUP, needs=("metadata",))
def iss_parameter(ctx: Context) -> Result:
    if not ctx.metadata.get("authorization_endpoint"):
        raise Skip("no authorization endpoint")
    if ctx.metadata.get("authorization_response_iss_parameter_supported") is not True:
        raise Fail("authorization_response_iss_parameter_supported is not true (RFC 9207)")
    return passed()
