"""Refusals before anyone is authenticated are counted, not audited (issue 13, item 8).

Every audit append takes the chain head's lock, so an anonymous client that could make us
append could throttle every exchange. A gateway request without a verified capability token
and a failed client authentication at the token exchange or the jwt-bearer grant add no
record: they increment `authserver_unauthenticated_rejections_total{event,reason}` and are
logged rate-limited.
Decisions about authenticated principals (a verified capability token, an authenticated
client) are still appended to the chain.

One stack for the module (SQLite, embedded store); metrics are read from this process's
Prometheus registry, where the stack's authserver runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from authserver.models.audit import AuditEvent
from tests.gateway_helpers import capability
from tests.stack import (
    GRANT_TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    Stack,
    correlation,
    intent,
)

METRIC = "authserver_unauthenticated_rejections_total"
TIMEOUT = 30

#: The module's `stack` (tests/conftest.py): alice signed in and connected to the CRM.
pytestmark = pytest.mark.stack(connected=("alice",))


def records(stack: Stack) -> int:
    with stack.services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def counted(event: str, reason: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"event": event, "reason": reason}) or 0.0


def assert_counted_not_audited(stack: Stack, before: tuple[int, float], event: str,
                               reason: str) -> None:
    assert records(stack) == before[0], "an unauthenticated refusal was appended to the chain"
    assert counted(event, reason) == before[1] + 1


# --- the gateway: no verified capability token -> counted --------------------------------------


def test_gateway_request_without_a_token_is_counted_not_audited(stack: Stack) -> None:
    before = (records(stack), counted("gateway_call", "invalid_token"))
    resp = requests.get(f"{stack.issuer}/gateway/crm/deals/acme-123",
                        headers={"X-Request-ID": correlation()}, timeout=TIMEOUT)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("DPoP ")
    assert resp.headers["Cache-Control"] == "no-store"
    assert_counted_not_audited(stack, before, "gateway_call", "invalid_token")


def test_gateway_request_with_a_forged_token_is_counted_not_audited(stack: Stack) -> None:
    before = (records(stack), counted("gateway_call", "invalid_token"))
    resp = requests.get(f"{stack.issuer}/gateway/crm/deals/acme-123",
                        headers={"Authorization": "DPoP not.a.token", "DPoP": "not.a.proof"},
                        timeout=TIMEOUT)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert_counted_not_audited(stack, before, "gateway_call", "invalid_token")


def test_gateway_request_for_an_unknown_platform_is_counted_not_audited(stack: Stack) -> None:
    before = (records(stack), counted("gateway_call", "invalid_token"))
    resp = requests.get(f"{stack.issuer}/gateway/nowhere/x", timeout=TIMEOUT)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_token"
    assert "WWW-Authenticate" in resp.headers
    assert_counted_not_audited(stack, before, "gateway_call", "invalid_token")


def test_refused_call_with_a_verified_token_is_still_audited(stack: Stack) -> None:
    token, key = capability(stack, "alice", intent("read", "deal:acme-123"))
    before = (records(stack), counted("gateway_call", "insufficient_scope"))
    cid = correlation()
    resp = stack.gateway(token, key, "DELETE", "crm/deals/acme-123",
                         headers={"X-Request-ID": cid})
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"
    [event] = stack.audit_for(cid)
    assert (event["event"], event["outcome"], event["reason"], event["user_id"]) == \
        ("gateway_call", "denied", "insufficient_scope", stack.user_id("alice"))
    assert records(stack) == before[0] + 1
    assert counted("gateway_call", "insufficient_scope") == before[1]


# --- the token exchange: failed client authentication -> counted --------------------------------


def exchange_with_bad_client_auth(stack: Stack, **form: Any) -> requests.Response:
    return requests.post(f"{stack.issuer}/token", data={
        "grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": "x",
        "subject_token_type": TT_ACCESS_TOKEN, "audience": "crm", **form,
    }, auth=(stack.edge_id, "wrong-secret"), headers={"X-Request-ID": correlation()},
        timeout=TIMEOUT)


def test_exchange_with_failed_client_authentication_is_counted_not_audited(stack: Stack) -> None:
    before = (records(stack), counted("token_exchange", "invalid_client"))
    resp = exchange_with_bad_client_auth(stack)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert resp.headers["Cache-Control"] == "no-store"
    assert_counted_not_audited(stack, before, "token_exchange", "invalid_client")


def test_jwt_bearer_with_failed_client_authentication_is_counted_not_audited(
        stack: Stack) -> None:
    # The RFC 7523 grant (ID-JAG) audits its refusals too; not before the client is known.
    before = (records(stack), counted("id_jag", "invalid_client"))
    resp = requests.post(f"{stack.issuer}/token", data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "x.y.z",
    }, auth=(stack.edge_id, "wrong-secret"), timeout=TIMEOUT)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert_counted_not_audited(stack, before, "id_jag", "invalid_client")


def test_exchange_by_an_authenticated_agent_is_still_audited(stack: Stack) -> None:
    # The client is authenticated; its subject token is junk: a decision about a principal.
    before = (records(stack), counted("token_exchange", "invalid_request"))
    cid = correlation()
    resp = stack.agent_exchange("not-an-assertion", stack.dpop_key(),
                                headers={"X-Request-ID": cid})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request"
    [event] = stack.audit_for(cid)
    assert (event["event"], event["outcome"], event["agent_id"]) == \
        ("token_exchange", "invalid", stack.agent.client_id)
    assert records(stack) == before[0] + 1
    assert counted("token_exchange", "invalid_request") == before[1]
