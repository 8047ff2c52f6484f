"""Step-up approvals over real HTTP (docs/standards.md A3; CIBA-style polling): the agent
gets `approval_required`, polls, the user decides on the approvals page, the same exchange then
succeeds exactly once. The test clock is frozen (or moved) so polling windows are exact."""

from __future__ import annotations

import html
from typing import Any

import pytest
import requests

from tests.http_helpers import assert_refusal
from tests.stack import Stack, correlation, intent, make_stack, mandate

USER = "alice"
DELETE_MANDATE = mandate({"platform": "crm", "actions": ["read", "delete"],
                          "resources": ["deal:*"], "max_count": 1},
                         request="Delete the Acme deal")
DELETE = intent("delete", "deal:acme-123", request="Delete the Acme deal")


#: The module's tests all step up for alice within a minute: budgets that do not get in the way
#: (the tests of the rate limit itself run on a stack with the default limits).
ROOMY_LIMITS = {"rate_limits": {"destructive": {"limit": 1000, "window": 60},
                                "write": {"limit": 1000, "window": 60}}}

#: The module's `stack` (tests/conftest.py): roomy limits, alice signed in and connected.
pytestmark = pytest.mark.stack(extra_settings=ROOMY_LIMITS, connected=(USER,))


@pytest.fixture
def stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The module's stack, its clock frozen and a fresh agent for each test: pending approvals
    are deduplicated and capped per (user, agent), so tests must not share one."""
    stack.freeze_clock(monkeypatch)
    monkeypatch.setattr(stack, "agent", stack.register_agent())
    return stack


@pytest.fixture
def alice(stack: Stack) -> requests.Session:
    return stack.browsers[USER]


def step_up(stack: Stack) -> tuple[str, Any, str]:
    """(assertion, key, approval_id) after a delete intent was sent to the user."""
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    body = assert_refusal(stack.agent_exchange(assertion, key, intent=DELETE), 403,
                        "approval_required", "User confirmation required")
    assert body["approval_uri"] == f"{stack.issuer}/approvals/{body['approval_id']}"
    assert body["expires_in"] == 600
    assert body["interval"] == 2
    return assertion, key, body["approval_id"]


def test_approval_pending_then_slow_down(stack: Stack) -> None:
    assertion, key, approval_id = step_up(stack)
    poll = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_refusal(poll, 400, "authorization_pending", "Waiting for the user to confirm")
    again = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_refusal(again, 400, "slow_down", "Poll at most every 2 seconds")


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
    assert_refusal(replay, 400, "invalid_grant", "approval_id was already used")


def test_decline_is_access_denied(stack: Stack, alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    assert stack.approve(alice, approval_id, "decline").status_code == 200
    resp = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_refusal(resp, 400, "access_denied", "The user declined the request")


def test_expired_approval(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, approval_id = step_up(stack)
    stack.shift_clock(monkeypatch, 601)
    # The first assertion has expired by now too: the edge mints a fresh one (same agent).
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    resp = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_refusal(resp, 400, "expired_token", "The approval request has expired")


def test_approval_with_different_intent_is_invalid_grant(stack: Stack,
                                                         alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    assert stack.approve(alice, approval_id, "approve").status_code == 200
    other = intent("delete", "deal:globex-7", request="Delete the Acme deal")
    resp = stack.agent_exchange(assertion, key, intent=other, approval_id=approval_id)
    assert_refusal(resp, 400, "invalid_grant", "approval_id does not match this request")
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
    assert_refusal(resp, 400, "invalid_grant", "approval_id does not match this request")


def test_unknown_approval_id_is_invalid_grant(stack: Stack) -> None:
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    resp = stack.agent_exchange(assertion, key, intent=DELETE, approval_id="x" * 43)
    assert_refusal(resp, 400, "invalid_grant", "Unknown approval_id")


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
    assert_refusal(poll, 400, "authorization_pending", "Waiting for the user to confirm")


def test_decision_needs_csrf_token(stack: Stack, alice: requests.Session) -> None:
    assertion, key, approval_id = step_up(stack)
    resp = alice.post(f"{stack.issuer}/approvals/{approval_id}", timeout=10,
                      data={"decision": "approve"})
    assert resp.status_code in (400, 403)
    poll = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_refusal(poll, 400, "authorization_pending", "Waiting for the user to confirm")


# --- issue 20, finding 2: approval flooding, and the agent's words shown as the user's ---------


def test_the_same_intent_again_returns_the_pending_approval(stack: Stack) -> None:
    assertion, key, approval_id = step_up(stack)
    again = assert_refusal(stack.agent_exchange(assertion, key, intent=DELETE), 403,
                         "approval_required", "User confirmation required")
    assert again["approval_id"] == approval_id
    assert again["approval_uri"] == f"{stack.issuer}/approvals/{approval_id}"
    assert again["expires_in"] == 600 and again["interval"] == 2
    # A new assertion (the same user asking the same thing again) does not add a card either.
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    third = assert_refusal(stack.agent_exchange(assertion, key, intent=DELETE), 403,
                         "approval_required", "User confirmation required")
    assert third["approval_id"] == approval_id
    assert pending_of(stack, stack.agent.client_id) == [approval_id]


def pending_of(stack: Stack, agent_id: str) -> list[str]:
    from authserver.approvals import pending_for_user

    with stack.services.db.session() as session:
        return [a.id for a in pending_for_user(session, stack.user_id(USER), stack.clock())
                if a.agent_id == agent_id]


def test_pending_approvals_are_capped_per_user_and_agent(stack: Stack) -> None:
    from authserver.approvals import MAX_PENDING_APPROVALS

    mandate_many = mandate({"platform": "crm", "actions": ["delete"], "resources": ["deal:*"],
                            "max_count": 1}, request="Delete the Acme deal")
    assertion, key = stack.edge_mint(USER, mandate_many)
    for n in range(MAX_PENDING_APPROVALS):
        assert_refusal(stack.agent_exchange(assertion, key, intent=intent(
            "delete", f"deal:old-{n}", request="Delete the Acme deal")), 403,
            "approval_required", "User confirmation required")
    cid = correlation()
    over = stack.agent_exchange(assertion, key, headers={"X-Request-ID": cid}, intent=intent(
        "delete", "deal:one-too-many", request="Delete the Acme deal"))
    assert_refusal(over, 429, "rate_limited",
                   "Too many requests are waiting for the user's confirmation")
    assert int(over.headers["Retry-After"]) == 600  # when the oldest pending one expires
    assert len(pending_of(stack, stack.agent.client_id)) == MAX_PENDING_APPROVALS
    [record] = stack.audit_for(cid)
    assert record["outcome"] == "rate_limited" and record["approval_id"] is None
    # Repeating an intent that is already waiting is not one more: it gets its approval back.
    again = stack.agent_exchange(assertion, key, intent=intent(
        "delete", "deal:old-0", request="Delete the Acme deal"))
    assert_refusal(again, 403, "approval_required", "User confirmation required")
    # The cap is per agent: another agent of the same user still gets its own.
    other = stack.register_agent()
    assertion, key = stack.edge_mint(USER, mandate_many, agent=other)
    assert_refusal(stack.agent_exchange(assertion, key, agent=other, intent=DELETE), 403,
                 "approval_required", "User confirmation required")


def test_step_up_spends_the_rate_limit_budget(tmp_path: Any) -> None:
    """Before the fix, 40 destructive requests made 40 pending approvals and no 429."""
    from authserver.ratelimit import DESTRUCTIVE_LIMIT

    s = make_stack(tmp_path)
    try:
        s.signed_in_and_connected(USER, ("crm",))
        assertion, key = s.edge_mint(USER, DELETE_MANDATE)
        # The same intent each time (one card, so the cap on pending approvals is not what
        # answers): each request still spends the destructive budget.
        for _ in range(DESTRUCTIVE_LIMIT.limit):
            assert_refusal(s.agent_exchange(assertion, key, intent=DELETE), 403,
                         "approval_required", "User confirmation required")
        resp = s.agent_exchange(assertion, key, intent=DELETE)
        body = assert_refusal(resp, 429, "rate_limited", "Rate limit exceeded")
        assert "approval_id" not in body
        assert int(resp.headers["Retry-After"]) >= 1
        assert len(pending_of(s, s.agent.client_id)) == 1
    finally:
        s.close()


def test_denied_exchanges_spend_the_rate_limit_budget(tmp_path: Any) -> None:
    from authserver.ratelimit import DESTRUCTIVE_LIMIT

    s = make_stack(tmp_path)
    try:
        s.signed_in_and_connected(USER, ("crm",))
        assertion, key = s.edge_mint(USER)  # read deal:* only
        outside = intent("delete", "deal:acme-123")  # not in the mandate: denied
        for _ in range(DESTRUCTIVE_LIMIT.limit):
            assert_refusal(s.agent_exchange(assertion, key, intent=outside), 403,
                         "access_denied", "The intent is not allowed")
        resp = s.agent_exchange(assertion, key, intent=outside)
        assert_refusal(resp, 429, "rate_limited", "Rate limit exceeded")
        assert int(resp.headers["Retry-After"]) >= 1
    finally:
        s.close()


INJECTED = "Alice said: yes, clean up the old record #8 (already approved by IT)"


def test_approval_card_shows_the_signed_request_and_labels_the_agents_words(
        stack: Stack, alice: requests.Session) -> None:
    assertion, key = stack.edge_mint(USER, DELETE_MANDATE)
    body = assert_refusal(stack.agent_exchange(assertion, key, intent=intent(
        "delete", "deal:acme-123", request=INJECTED)), 403, "approval_required",
        "User confirmation required")
    for url in (f"{stack.issuer}/approvals/{body['approval_id']}", f"{stack.issuer}/approvals"):
        page = alice.get(url, timeout=10)
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert "Your request (chat): “Delete the Acme deal”" in text
        assert f"The agent says: “{INJECTED}”" in text
        assert "Because of the request" not in text
        # The agent's words appear once, and only under the agent's label.
        assert text.count(INJECTED) == 1


def test_approval_card_without_the_request_text(stack: Stack, alice: requests.Session) -> None:
    private = mandate({"platform": "crm", "actions": ["delete"], "resources": ["deal:*"],
                       "max_count": 1}, request="Delete the Acme deal")
    del private[0]["request"]  # the edge may keep the text private; the hash stays signed
    assertion, key = stack.edge_mint(USER, private)
    body = assert_refusal(stack.agent_exchange(assertion, key, intent=intent(
        "delete", "deal:acme-123", request=INJECTED)), 403, "approval_required",
        "User confirmation required")
    page = alice.get(f"{stack.issuer}/approvals/{body['approval_id']}", timeout=10)
    text = html.unescape(page.text)
    assert "Your request came from: chat (its text was not shared)" in text
    assert f"The agent says: “{INJECTED}”" in text


def test_a_delete_is_approved_only_with_the_records_name_typed(
        stack: Stack, alice: requests.Session) -> None:
    """The second step of a destructive approval: Approve without (or with the wrong) record
    name decides nothing; Decline needs no name; the page says what happened afterwards."""
    from authserver.demo.browser import confirm_phrase_from
    from tests.stack import csrf_from

    assertion, key, approval_id = step_up(stack)
    page = alice.get(f"{stack.issuer}/approvals/{approval_id}", timeout=10)
    assert confirm_phrase_from(page.text) == "acme-123"
    for typed in (None, "acme-124", "deal:acme-123"):
        data = {"csrf_token": csrf_from(page.text), "decision": "approve"}
        if typed is not None:
            data["confirm"] = typed
        refused = alice.post(f"{stack.issuer}/approvals/{approval_id}", data=data, timeout=10)
        assert refused.status_code == 400 and "nothing was approved" in refused.text, typed
    poll = stack.agent_exchange(assertion, key, intent=DELETE, approval_id=approval_id)
    assert_refusal(poll, 400, "authorization_pending", "Waiting for the user to confirm")
    ok = alice.post(f"{stack.issuer}/approvals/{approval_id}", data={
        "csrf_token": csrf_from(page.text), "decision": "approve", "confirm": " ACME-123 "},
        timeout=10)
    assert ok.status_code == 200 and ok.url == f"{stack.issuer}/approvals"
    assert "You approved: Delete deal acme-123." in html.unescape(ok.text)
    assert "Decided" in ok.text
