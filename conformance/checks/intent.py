"""Part A local decisions: the `intent` parameter (A1), its errors (A3), capability tokens (A4).

Runs only against servers advertising `agent_intent` in authorization_details_types_supported,
with a `--subject-token-cmd` fixture naming intents the deployment allows, denies, or steps up.
"""

from __future__ import annotations

import json
from typing import Any

from conformance.checks.token_exchange import ACCESS_TOKEN, exchange, holder_key, subject, target
from conformance.runner import (
    Context,
    Fail,
    Result,
    Skip,
    check,
    decode_jwt_unverified,
    describe,
    expect_error,
    expect_token,
    passed,
)

GROUP = "Part A Agent intent (local)"
NEEDS = ("local", "subject_token")
CAPABILITY_MAX_SECONDS = 60


def _fixture(ctx: Context, intent_kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    fx = subject(ctx)
    intent = (fx.get("intents") or {}).get(intent_kind)
    if not isinstance(intent, dict):
        raise Skip(f"the subject token fixture names no '{intent_kind}' intent")
    return fx, intent


def _exchange(ctx: Context, fx: dict[str, Any], intent: Any, **kw: Any) -> Any:
    params = {"subject_token": fx["subject_token"],
              "subject_token_type": fx.get("subject_token_type", ACCESS_TOKEN), **target(fx),
              **kw.pop("params", {})}
    return exchange(ctx, params, dpop=kw.pop("dpop", holder_key(fx)), intent=intent, **kw)


@check("A1", "unknown action is invalid_authorization_details", group=GROUP, needs=NEEDS)
def unknown_action(ctx: Context) -> Result:
    fx, intent = _fixture(ctx, "allow")
    bad = dict(intent, action="conformance_launch")
    expect_error(_exchange(ctx, fx, bad), 400, "invalid_authorization_details")
    return passed()


@check("A1", "malformed intent JSON is invalid_authorization_details", group=GROUP, needs=NEEDS)
def malformed_intent(ctx: Context) -> Result:
    fx, _ = _fixture(ctx, "allow")
    for label, raw in (("not JSON", "{"), ("count 0", None)):
        params: dict[str, Any] = {}
        if raw is None:
            _, intent = _fixture(ctx, "allow")
            params["intent"] = json.dumps(dict(intent, count=0))
        else:
            params["intent"] = raw
        resp = _exchange(ctx, fx, False, params=params)
        try:
            expect_error(resp, 400, "invalid_authorization_details")
        except Fail as e:
            raise Fail(f"{label}: {e}") from None
    return passed()


@check("A1", "intent and authorization_details that disagree refused", group=GROUP, needs=NEEDS)
def disagreeing(ctx: Context) -> Result:
    fx, intent = _fixture(ctx, "allow")
    other = {"type": "agent_intent", "actions": ["delete"], "identifier": str(intent["resource"])}
    if intent.get("action") == "delete":
        other["actions"] = ["read"]
    resp = _exchange(ctx, fx, intent, params={"authorization_details": json.dumps([other])})
    expect_error(resp, 400, "invalid_authorization_details")
    return passed()


@check("A3", "missing DPoP proof is invalid_dpop_proof", group=GROUP, needs=NEEDS)
def no_proof(ctx: Context) -> Result:
    fx, intent = _fixture(ctx, "allow")
    expect_error(_exchange(ctx, fx, intent, dpop=False), 400, "invalid_dpop_proof")
    return passed()


@check("A3", "denied intent is 403 access_denied", group=GROUP, needs=NEEDS)
def denied(ctx: Context) -> Result:
    fx, intent = _fixture(ctx, "deny")
    body = expect_error(_exchange(ctx, fx, intent), 403, "access_denied")
    leaked = [k for k in body if "polic" in k.lower()]
    if leaked:
        raise Fail(f"policy details returned to the client: {leaked}")
    return passed()


@check("A3", "step-up returns approval_required and polling is pending", group=GROUP,
       needs=NEEDS)
def approval(ctx: Context) -> Result:
    fx, intent = _fixture(ctx, "approval")
    key = holder_key(fx)
    body = expect_error(_exchange(ctx, fx, intent, dpop=key), 403, "approval_required")
    wanted = ("approval_id", "approval_uri", "expires_in", "interval")
    missing = [k for k in wanted if k not in body]
    if missing:
        raise Fail(f"approval_required without {', '.join(missing)}")
    poll = _exchange(ctx, fx, intent, dpop=key, params={"approval_id": body["approval_id"]})
    expect_error(poll, 400, ("authorization_pending", "slow_down"))
    _, other = _fixture(ctx, "allow")
    resp = _exchange(ctx, fx, other, dpop=key, params={"approval_id": body["approval_id"]})
    expect_error(resp, 400, "invalid_grant")
    return passed("pending, then invalid_grant for a different intent")


@check("A3", "no connection to the platform is 403 connection_required", group=GROUP,
       needs=NEEDS)
def connection_required(ctx: Context) -> Result:
    fx = subject(ctx)
    intent = (fx.get("intents") or {}).get("unconnected")
    audience = fx.get("unconnected_audience")
    if not isinstance(intent, dict) or not isinstance(audience, str) or not audience:
        raise Skip("the subject token fixture names no unconnected platform "
                   "(unconnected_audience + intents.unconnected)")
    params = {"subject_token": fx["subject_token"],
              "subject_token_type": fx.get("subject_token_type", ACCESS_TOKEN),
              "audience": audience}
    body = expect_error(exchange(ctx, params, dpop=holder_key(fx), intent=intent), 403,
                        "connection_required")
    uri = body.get("connect_uri")
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise Fail(f"connection_required without an absolute connect_uri ({uri!r})")
    return passed()


@check("A3", "rate limit gives 429 rate_limited with Retry-After", group=GROUP, needs=NEEDS)
def rate_limit(ctx: Context) -> Result:
    if ctx.options.rate_limit_attempts <= 0:
        raise Skip("no --rate-limit-attempts given (probing sends many exchanges)")
    fx, intent = _fixture(ctx, "allow")
    key = holder_key(fx)
    for _ in range(ctx.options.rate_limit_attempts):
        resp = _exchange(ctx, fx, intent, dpop=key)
        if resp.status_code == 429:
            expect_error(resp, 429, "rate_limited")
            if not resp.headers.get("Retry-After", "").isdigit():
                raise Fail("429 without a numeric Retry-After")
            return passed()
        if resp.status_code != 200:
            raise Fail(f"unexpected {describe(resp)} before the limit")
    raise Fail(f"no 429 after {ctx.options.rate_limit_attempts} exchanges")


@check("A4", "capability token is DPoP-bound, gateway-scoped and short", group=GROUP,
       needs=NEEDS)
def capability(ctx: Context) -> Result:
    fx, intent = _fixture(ctx, "allow")
    key = holder_key(fx)
    body = expect_token(_exchange(ctx, fx, intent, dpop=key))
    if body.get("token_type") != "DPoP":
        raise Fail(f"token_type {body.get('token_type')!r}")
    if body.get("issued_token_type") != ACCESS_TOKEN:
        raise Fail(f"issued_token_type {body.get('issued_token_type')!r}")
    decoded = decode_jwt_unverified(str(body["access_token"]))
    if decoded is None:
        raise Fail("capability token is not a JWT")
    claims = decoded[1]
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a.startswith(ctx.issuer.rstrip("/") + "/gateway/")
               for a in auds):
        raise Fail(f"aud {aud!r} is not a gateway URI")
    if (claims.get("cnf") or {}).get("jkt") != key.thumbprint:
        raise Fail("cnf.jkt is not the caller's key")
    if not isinstance(claims.get("act"), dict):
        raise Fail("no act claim naming the agent")
    if not isinstance(claims.get("authorization_details"), list):
        raise Fail("no authorization_details carrying the intent")
    life = int(claims.get("exp", 0)) - int(claims.get("iat", 0))
    if life > CAPABILITY_MAX_SECONDS:
        raise Fail(f"lifetime {life}s > {CAPABILITY_MAX_SECONDS}s")
    return passed(f"lifetime {life}s")


def capability_token(ctx: Context) -> tuple[dict[str, Any], str, Any]:
    """(fixture, capability token, holder key) for the gateway checks."""
    fx, intent = _fixture(ctx, "allow")
    key = holder_key(fx)
    body = expect_token(_exchange(ctx, fx, intent, dpop=key))
    return fx, str(body["access_token"]), key
