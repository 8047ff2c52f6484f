"""Plain words for the user pages (authserver/presentation.py): times, actions, risk, the
second step's phrase, client identity and audit sentences."""

from __future__ import annotations

from types import SimpleNamespace

from authserver.presentation import (
    client_identity,
    confirm_phrase,
    event_sentence,
    iso_utc,
    phrase_matches,
    readable_utc,
    relative,
    risk_of,
    what_in_words,
)

T = 1_790_000_000  # 21 Sep 2026, 14:13:20 UTC


def test_times_are_exact_utc_and_relative_to_now() -> None:
    assert iso_utc(T) == "2026-09-21T14:13:20Z"
    assert readable_utc(T) == "21 Sep 2026, 14:13 UTC"
    assert relative(T, T + 3) == "just now"
    assert relative(T, T + 180) == "3 minutes ago"
    assert relative(T + 600, T) == "in 10 minutes"
    assert relative(T, T + 86_400) == "1 day ago"


def test_actions_in_words_and_their_risk() -> None:
    delete = {"action": "delete", "resource": "deal:acme-123", "count": 1}
    assert what_in_words(delete) == "Delete deal acme-123"
    assert risk_of(delete) == "destructive" and confirm_phrase(delete) == "acme-123"
    create = {"action": "create", "resource": "board:launch/tasks", "count": 3}
    assert what_in_words(create) == "Create 3 records (board launch/tasks)"
    assert risk_of(create) == "write" and confirm_phrase(create) is None
    bulk = {"action": "bulk_update", "resource": "deals?stage=stale", "count": 40}
    assert what_in_words(bulk) == "Change 40 records (deals where stage = stale)"
    assert risk_of(bulk) == "bulk" and confirm_phrase(bulk) == "40"
    large = {"action": "update", "resource": "deal:x", "count": 11}
    assert risk_of(large) == "bulk"
    assert risk_of({"action": "read", "resource": "deal:x", "count": 500}) == "read"


def test_the_phrase_must_match_but_not_its_case_or_spacing() -> None:
    assert phrase_matches("acme-123", "  ACME-123 ")
    assert not phrase_matches("acme-123", "acme-12")
    assert not phrase_matches("acme-123", None)


def test_a_self_registered_client_is_unverified() -> None:
    row = SimpleNamespace(client_id="cli_1", attributes={"registration": "open"},
                          client_metadata={"client_name": "Notes",
                                           "redirect_uris": ["https://notes.example.net/cb"]})
    identity = client_identity(row)
    assert (identity.name, identity.domain, identity.verified) == \
        ("Notes", "notes.example.net", False)
    admin = SimpleNamespace(client_id="cli_2", attributes={}, client_metadata={})
    assert client_identity(admin).verified and client_identity(admin).name == "cli_2"


def _event(**kw: object) -> SimpleNamespace:
    base = {"event": "token_exchange", "outcome": "allowed", "reason": None, "intent": None,
            "detail": {}, "approval_id": None}
    return SimpleNamespace(**{**base, **kw})


def test_audit_events_read_as_sentences() -> None:
    read = {"action": "read", "resource": "deal:acme-123", "count": 1}
    assert event_sentence(_event(intent=read), agent="Bot", platform="Acme CRM") == \
        "Bot was allowed to read deal acme-123 at Acme CRM."
    injected = _event(outcome="denied", reason="intent_mismatch",
                      intent={"action": "bulk_delete", "resource": "deals", "count": 5})
    assert "possible prompt injection" in event_sentence(injected, agent="Bot", platform=None)
    declined = _event(outcome="denied", reason="access_denied", approval_id="a", intent=read)
    assert event_sentence(declined, agent="Bot", platform=None).endswith(
        ": you had declined it.")
    assert event_sentence(_event(event="gateway_call", intent=read), agent="Bot",
                          platform="Acme CRM") == "Bot read deal acme-123 at Acme CRM."
