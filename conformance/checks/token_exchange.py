"""RFC 8693 token exchange (TX-*): request validation, and the response for a given subject token.

Every exchange carries a DPoP proof (RFC 9449 §5 applies to every grant) and, when the server
advertises agent intents (Part A1), a well-formed `intent`, so a rejection comes from the rule
under test. Subject tokens come from `--subject-token-cmd`, which prints JSON:
{"subject_token", "subject_token_type", "dpop_private_jwk"?, "audience"?, "resource"?,
 "intents"?: {"allow", "deny", "approval", "unconnected"}, "unconnected_audience"?,
 "gateway_path"?}.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

from conformance.dpop import DpopKey
from conformance.runner import (
    TOKEN_EXCHANGE,
    Client,
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

GROUP = "RFC 8693 Token exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
PROBE_INTENT = {"action": "read", "resource": "conformance:probe", "count": 1,
                "context": {"request": "conformance probe", "channel": "conformance",
                            "environment": "conformance"}}


def subject(ctx: Context) -> dict[str, Any]:
    """A fresh subject token fixture from --subject-token-cmd."""
    if not ctx.options.subject_token_cmd:
        raise Skip("no --subject-token-cmd given")
    try:
        fixture = json.loads(ctx.run_cmd(ctx.options.subject_token_cmd))
    except ValueError as e:
        raise Skip("--subject-token-cmd did not print JSON") from e
    if not isinstance(fixture, dict) or "subject_token" not in fixture:
        raise Skip("--subject-token-cmd JSON has no subject_token")
    return fixture


def holder_key(fixture: dict[str, Any]) -> DpopKey:
    """The key the subject token is bound to (cnf.jkt), or a fresh one if it is unbound."""
    jwk = fixture.get("dpop_private_jwk")
    if not jwk:
        return DpopKey("ES256")
    key = DpopKey.__new__(DpopKey)
    kty = jwk.get("kty")
    key_types: dict[str, Any] = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}
    key.key = key_types[kty].import_key(jwk)
    key.alg = jwk.get("alg") or {"EC": "ES256", "OKP": "Ed25519", "RSA": "PS256"}[kty]
    return key


def exchange(ctx: Context, params: dict[str, Any], *, dpop: DpopKey | bool | None = True,
             intent: dict[str, Any] | bool | None = True, **kw: Any) -> Any:
    data: dict[str, Any] = {"grant_type": TOKEN_EXCHANGE, **params}
    if intent is True and ctx.local_profile:
        data["intent"] = json.dumps(PROBE_INTENT)
    elif isinstance(intent, dict):
        data["intent"] = json.dumps(intent)
    key = ctx.dpop_key() if dpop is True else (dpop or None)
    return ctx.token(data, client=exchange_client(ctx), dpop=key, **kw)


def exchange_client(ctx: Context) -> Client:
    """A client registered for token exchange (DCR), else the run's client."""
    if "exchange_client" not in ctx.cache:
        client = ctx.client()
        if ctx.need_dcr() is None and not ctx.options.client_id:
            try:
                client = ctx.new_client({"grant_types": ["client_credentials", TOKEN_EXCHANGE]})
            except Skip:
                client = ctx.client()
        ctx.cache["exchange_client"] = client
    cached: Client = ctx.cache["exchange_client"]
    return cached


def target(fixture: dict[str, Any]) -> dict[str, str]:
    out = {k: fixture[k] for k in ("audience", "resource") if fixture.get(k)}
    return out


@check("TX-01", "token exchange grant accepted as a grant type", group=GROUP,
       needs=("token_exchange",))
def grant_known(ctx: Context) -> Result:
    resp = exchange(ctx, {"subject_token": "x", "subject_token_type": ACCESS_TOKEN})
    body = expect_error(resp, (400, 401, 403), tuple(["invalid_request", "invalid_grant",
                                                      "invalid_target", "invalid_dpop_proof",
                                                      "unauthorized_client", "access_denied",
                                                      "invalid_client"]))
    return passed(f"garbage subject token -> {body['error']} (not unsupported_grant_type)")


@check("TX-02", "missing subject_token or subject_token_type refused", group=GROUP,
       needs=("token_exchange",))
def missing_subject(ctx: Context) -> Result:
    for label, params in (("no subject_token", {"subject_token_type": ACCESS_TOKEN}),
                          ("no subject_token_type", {"subject_token": "x" * 32})):
        try:
            expect_error(exchange(ctx, params), 400, "invalid_request")
        except Fail as e:
            raise Fail(f"{label}: {e}") from None
    return passed()


@check("TX-03", "actor_token and actor_token_type must come together", group=GROUP,
       needs=("token_exchange",))
def actor_pairing(ctx: Context) -> Result:
    base = {"subject_token": "x" * 32, "subject_token_type": ACCESS_TOKEN}
    for label, extra in (("actor_token without type", {"actor_token": "y" * 32}),
                         ("actor_token_type without token",
                          {"actor_token_type": "urn:ietf:params:oauth:token-type:jwt"})):
        try:
            expect_error(exchange(ctx, {**base, **extra}), 400, "invalid_request")
        except Fail as e:
            raise Fail(f"{label}: {e}") from None
    return passed()


@check("TX-06", "invalid subject token or unknown type is invalid_request", group=GROUP,
       needs=("token_exchange",))
def invalid_subject(ctx: Context) -> Result:
    cases = {
        "garbage subject token": {"subject_token": "conformance-" + secrets.token_hex(24),
                                  "subject_token_type": ACCESS_TOKEN},
        "unknown subject_token_type": {"subject_token": "x" * 32,
                                       "subject_token_type": "urn:example:conformance:unknown"},
    }
    for label, params in cases.items():
        try:
            expect_error(exchange(ctx, params), 400, "invalid_request")
        except Fail as e:
            raise Fail(f"{label}: {e}") from None
    return passed()


def _allow_intent(fixture: dict[str, Any]) -> dict[str, Any] | bool:
    return (fixture.get("intents") or {}).get("allow") or True


@check("TX-10", "successful exchange returns the required members", group=GROUP,
       needs=("subject_token",))
def success(ctx: Context) -> Result:
    fx = subject(ctx)
    key = holder_key(fx)
    body = expect_token(exchange(ctx, {"subject_token": fx["subject_token"],
                                       "subject_token_type": fx.get("subject_token_type",
                                                                    ACCESS_TOKEN),
                                       **target(fx)}, dpop=key, intent=_allow_intent(fx)))
    missing = [k for k in ("access_token", "issued_token_type", "token_type") if k not in body]
    if missing:
        raise Fail(f"missing: {', '.join(missing)}")
    if body["token_type"] != "DPoP":  # TX-16: a proof was sent and the result is an AT
        raise Fail(f"token_type {body['token_type']!r}; a proof was sent so expected DPoP")
    decoded = decode_jwt_unverified(str(body["access_token"]))
    if decoded is not None:
        claims = decoded[1]
        if (claims.get("cnf") or {}).get("jkt") != key.thumbprint:
            raise Fail("issued token's cnf.jkt is not the proof key (TX-16)")
        if ctx.local_profile and not isinstance(claims.get("act"), dict):
            raise Fail("issued token has no act claim (TX-12, TX-15)")
    return passed(f"issued_token_type {body['issued_token_type']}")


@check("TX-16", "proof key other than the subject token's cnf.jkt refused", group=GROUP,
       needs=("subject_token",))
def wrong_holder(ctx: Context) -> Result:
    fx = subject(ctx)
    if not fx.get("dpop_private_jwk"):
        raise Skip("the subject token fixture is not DPoP-bound")
    resp = exchange(ctx, {"subject_token": fx["subject_token"],
                          "subject_token_type": fx.get("subject_token_type", ACCESS_TOKEN),
                          **target(fx)}, dpop=DpopKey("ES256"), intent=_allow_intent(fx))
    expect_error(resp, 400, "invalid_request")
    return passed()


@check("TX-05", "unknown audience is invalid_target", group=GROUP, needs=("subject_token",))
def unknown_audience(ctx: Context) -> Result:
    fx = subject(ctx)
    resp = exchange(ctx, {"subject_token": fx["subject_token"],
                          "subject_token_type": fx.get("subject_token_type", ACCESS_TOKEN),
                          "audience": "conformance-no-such-audience-" + secrets.token_hex(4)},
                    dpop=holder_key(fx), intent=_allow_intent(fx))
    expect_error(resp, 400, "invalid_target")
    return passed()
