"""Step-up approvals over real HTTP (shared/STANDARDS.md Part A3; CIBA-style polling): the agent
gets `approval_required`, polls, the user decides on the approvals page, the same exchange then
succeeds exactly once. The test clock is frozen (or moved) so polling windows are exact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.stack import Stack, correlation, intent, make_stack, mandate

USER = "alice"
DELETE_MANDATE = mandate({"platform": "crm", "actions": ["read", "delete"],
                          "resources": ["deal:*"], "max_count": 1},
                         request="Delete the Acme deal")
DELETE = intent("delete", "deal:acme-123", request="Delete the Acme deal")


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Any]]:
    s = make_stack(tmp_path_factory.mktemp("approvals"))
    alice = s.signed_in_and_connected(USER, ("crm",))
    yield s, alice
    s.close()


@pytest.fixture
def stack(module_stack: tuple[Stack, Any], monkeypatch: pytest.MonkeyPatch) -> Stack:
    s, _ = module_stack
    s.freeze_clock(monkeypatch)
    return s


@pytest.fixture
def alice(module_stack: tuple[Stack, Any]) -> requests.Session:
    return module_stack[1]  # type: ignore[no-any-return]


def assert_error(resp: requests.Response, status: int, error: str) -> dict[str, Any]:
    body = resp.json()
    assert resp.status_code == status, (resp.status_code, body)
    assert body["error"] == error, body
    assert resp.headers["Cache-Control"] == "no-store"
    return body  # type: ignore[no-any-return]


def step_up(stack: Stack) -> tuple[str, Any, str]:
    """(assertion, key, approval_id) after a delete intent was sent to the user."""
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    body = assert_error(stack.agent_exchange(assertion, key, intent=DELETE), 403,
                        "approval_required")
    assert body["approval_uri"] == f"{stack.issuer}/approvals/{body['approval_id']}"
    assert body["expires_in"] == 600
    assert body["interval"] == 2
    return assertion, key, body["approval_id"]


def test_approval_pending_then_slow_down(stack: Stack) -> None:
    assertion, key, approval_id = step_up(stack)
    poll = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(poll, 400, "authorization_pending")
    again = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(again, 400, "slow_down")


def test_approve_then_success_once_then_replay_invalid_grant(stack: Stack,
                                                            alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    page = alice.get(f"{stack.issuer}/approvals/{approval_id}", timeout=10)
    assert page.status_code == 200
    assert "delete" in page.text.lower()
    decided = stack.approve(alice, approval_id, "approve")
    assert decided.status_code == 200 and decided.url == f"{stack.issuer}/approvals"
    assert decided.history[0].status_code == 303
    cid = correlation()
    ok = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id,
                              headers={"X-Request-ID": cid})
    assert ok.status_code == 200, ok.text
    assert ok.json()["authorization_details"][0]["actions"] == ["delete"]
    [record] = stack.audit_for(cid)
    assert record["outcome"] == "allowed" and record["approval_id"] == approval_id
    replay = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(replay, 400, "invalid_grant")


def test_decline_is_access_denied(stack: Stack, alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    assert stack.approve(alice, approval_id, "decline").status_code == 200
    resp = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(resp, 400, "access_denied")


def test_expired_approval(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, approval_id = step_up(stack)
    stack.shift_clock(monkeypatch, 601)
    # The first assertion has expired by now too: the edge mints a fresh one (same agent).
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    resp = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(resp, 400, "expired_token")


def test_approval_with_different_intent_is_invalid_grant(stack: Stack,
                                                         alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    assert stack.approve(alice, approval_id, "approve").status_code == 200
    other = intent("delete", "deal:globex-7", request="Delete the Acme deal")
    resp = stack.agent_exchange(assertion, key, intent=other, approval_id=approval_id)
    assert_error(resp, 400, "invalid_grant")
    # The approval is still there for the intent it was given for.
    ok = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert ok.status_code == 200, ok.text


def test_approval_by_another_agent_is_invalid_grant(stack: Stack,
                                                    alice: requests.Session) -> None:
    _, _, approval_id = step_up(stack)
    assert stack.approve(alice, approval_id, "approve").status_code == 200
    other_agent = stack.register_agent()
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE, agent=other_agent)
    resp = stack.agent_exchange(assertion, key, agent=other_agent, intent=DELETE,
                                approval_id=approval_id)
    assert_error(resp, 400, "invalid_grant")


def test_unknown_approval_id_is_invalid_grant(stack: Stack) -> None:
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    resp = stack.agent_exchange(assertion, key, intent=DELETE, approval_id="x" * 43)
    assert_error(resp, 400, "invalid_grant")


def test_another_user_cannot_approve(stack: Stack) -> None:
    assertion, key, approval_id = step_up(stack)
    bob = stack.browser("bob")
    assert bob.get(f"{stack.issuer}/approvals/{approval_id}", timeout=10).status_code == 404
    page = bob.get(f"{stack.issuer}/approvals", timeout=10)
    from authserver.demo.browser import csrf_from

    resp = bob.post(f"{stack.issuer}/approvals/{approval_id}", timeout=10,
                    data={"csrf_token": csrf_from(page.text), "decision": "approve"})
    assert resp.status_code == 404
    poll = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(poll, 400, "authorization_pending")


def test_decision_needs_csrf_token(stack: Stack, alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    resp = alice.post(f"{stack.issuer}/approvals/{approval_id}", timeout=10,
                      data={"decision": "approve"})
    assert resp.status_code in (400, 403)
    poll = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_error(poll, 400, "authorization_pending")
