"""authserver.intent: Part A1 intent and A2 mandate parsing (RAR-04), hashing, matching."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authserver.errors import InvalidAuthorizationDetailsError
from authserver.intent import (
    INTENT_TYPE,
    MANDATE_TYPE,
    MAX_COUNT,
    MAX_JSON_CHARS,
    MAX_REQUEST_CHARS,
    Intent,
    IntentContext,
    describe_mandate,
    hash_request_text,
    loads_authorization_details,
    parse_intent,
    parse_mandate,
    pattern_covers,
    pattern_matches,
)

CONTEXT = {"request": "Move the Acme deal to negotiation", "channel": "chat",
           "environment": "production"}
LOCATION = "https://as.example.com/gateway/crm"


def param(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "update", "resource": "deal:acme-123", "count": 1,
                            "context": dict(CONTEXT)}
    body.update(overrides)
    return body


def rar(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": INTENT_TYPE, "actions": ["update"],
                             "identifier": "deal:acme-123", "locations": [LOCATION],
                             "count": 1, "context": dict(CONTEXT)}
    entry.update(overrides)
    return entry


def parse_param(body: Any) -> Intent | None:
    return parse_intent(json.dumps(body), None)


def assert_rejected(excinfo: pytest.ExceptionInfo[InvalidAuthorizationDetailsError]) -> None:
    assert excinfo.value.error == "invalid_authorization_details"
    assert excinfo.value.status_code == 400


# --- intent: accepted forms -------------------------------------------------------------------


def test_intent_param_form_parses() -> None:
    intent = parse_param(param())
    assert intent == Intent("update", "deal:acme-123", 1, IntentContext(**CONTEXT))
    assert intent.action_class == "write"
    assert not intent.is_destructive and not intent.is_bulk


def test_intent_count_defaults_to_one() -> None:
    body = param()
    del body["count"]
    intent = parse_param(body)
    assert intent is not None and intent.count == 1


def test_intent_rar_form_parses_with_locations() -> None:
    intent = parse_intent(None, [rar()])
    assert intent is not None
    assert intent.locations == (LOCATION,)
    assert intent == parse_param(param())


def test_intent_rar_form_accepts_raw_json_text() -> None:
    assert parse_intent(None, json.dumps([rar()])) == parse_param(param())


def test_intent_both_forms_agreeing_parse() -> None:
    intent = parse_intent(json.dumps(param()), [rar()])
    assert intent is not None and intent.locations == (LOCATION,)


def test_intent_absent_is_none() -> None:
    assert parse_intent(None, None) is None


def test_intent_classes() -> None:
    read = parse_param(param(action="read"))
    bulk_delete = parse_param(param(action="bulk_delete", resource="deals?stage=stale"))
    assert read is not None and read.action_class == "read"
    assert bulk_delete is not None and bulk_delete.is_destructive and bulk_delete.is_bulk
    assert bulk_delete.record_type == "deals"


def test_intent_to_authorization_details_round_trips() -> None:
    intent = parse_param(param(count=3))
    assert intent is not None
    entry = intent.to_authorization_details(LOCATION)
    assert entry == rar(count=3)
    assert parse_intent(None, [entry]) == intent
    assert "locations" not in intent.to_authorization_details(None)


# --- intent: canonical hash -------------------------------------------------------------------


def test_intent_hash_is_canonical_and_stable() -> None:
    intent = parse_param(param())
    assert intent is not None
    reordered = json.dumps(dict(reversed(list(param().items()))), indent=4)
    from_rar = parse_intent(reordered, [rar()])
    assert from_rar is not None and from_rar.hash() == intent.hash()
    # Pinned: approvals stored by one release must still match after an upgrade. The hash is
    # SHA-256 over this exact text (sorted keys, no spaces), base64url without padding.
    canonical = ('{"action":"update","context":{"channel":"chat","environment":"production",'
                 '"request":"Move the Acme deal to negotiation"},"count":1,'
                 '"resource":"deal:acme-123"}')
    assert intent.hash() == hash_request_text(canonical)
    assert intent.hash() == "AJrlHUka9E09KQ6j3my0P8VH5BCtRdoR2jMp50dnrRE"


def test_intent_hash_changes_with_any_field() -> None:
    base = parse_param(param())
    assert base is not None
    for changed in (param(count=2), param(action="delete"), param(resource="deal:acme-124"),
                    param(context={**CONTEXT, "request": "something else"})):
        other = parse_param(changed)
        assert other is not None and other.hash() != base.hash()


def test_intent_hash_is_computed_once_and_is_no_field() -> None:
    # Issue 18: the hash is kept on the (frozen) value after its first use; it takes no part
    # in equality or repr, and an equal intent parsed again hashes the same.
    intent = parse_param(param())
    assert intent is not None
    first = intent.hash()
    assert intent.hash() is first
    again = parse_param(param())
    assert again == intent and again.hash() == first
    assert "_hash" not in repr(intent) and first not in repr(intent)
    assert intent == parse_param(param()) and hash(intent) == hash(again)


# --- intent: one test per rejection -----------------------------------------------------------


def test_intent_rejects_unknown_action() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(action="export"))
    assert_rejected(excinfo)


def test_intent_rejects_non_integer_count() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(count=1.0))
    assert_rejected(excinfo)


def test_intent_rejects_string_count() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(count="1"))
    assert_rejected(excinfo)


def test_intent_rejects_bool_count() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(count=True))
    assert_rejected(excinfo)


def test_intent_rejects_count_below_one() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(count=0))
    assert_rejected(excinfo)


def test_intent_rejects_count_above_max() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(count=MAX_COUNT + 1))
    assert_rejected(excinfo)


def test_intent_rejects_oversize_request_text() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(context={**CONTEXT, "request": "x" * (MAX_REQUEST_CHARS + 1)}))
    assert_rejected(excinfo)


def test_intent_rejects_oversize_json() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(" " * (MAX_JSON_CHARS + 1), None)
    assert_rejected(excinfo)


def test_intent_rejects_control_characters_in_request() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(context={**CONTEXT, "request": "hi\x00there"}))
    assert_rejected(excinfo)


def test_intent_rejects_unknown_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(priority="high"))
    assert_rejected(excinfo)


def test_intent_rejects_unknown_context_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(context={**CONTEXT, "tool": "x"}))
    assert_rejected(excinfo)


def test_intent_rejects_unknown_rar_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [rar(datatypes=["deal"])])
    assert_rejected(excinfo)


def test_intent_rejects_forms_that_disagree() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(json.dumps(param(count=2)), [rar(count=1)])
    assert_rejected(excinfo)


def test_intent_rejects_wrong_type_of_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(resource=["deal:acme-123"]))
    assert_rejected(excinfo)


def test_intent_rejects_non_object() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param([param()])
    assert_rejected(excinfo)


def test_intent_rejects_bad_json() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent('{"action": "read",', None)
    assert_rejected(excinfo)


def test_intent_rejects_empty_param() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent("", None)
    assert_rejected(excinfo)


def test_intent_rejects_duplicate_json_member() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent('{"action": "read", "action": "delete", "resource": "deal:1", '
                     '"context": {"request": "r", "channel": "chat", "environment": "p"}}', None)
    assert_rejected(excinfo)


def test_intent_rejects_nan() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(json.dumps(param()).replace('"count": 1', '"count": NaN'), None)
    assert_rejected(excinfo)


def test_intent_rejects_missing_required_field() -> None:
    body = param()
    del body["resource"]
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(body)
    assert_rejected(excinfo)


def test_intent_rejects_missing_context_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(context={"request": "r", "channel": "chat"}))
    assert_rejected(excinfo)


def test_intent_rejects_wildcard_resource() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(resource="deal:*"))
    assert_rejected(excinfo)


def test_intent_rejects_resource_with_spaces() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(resource="deal: acme"))
    assert_rejected(excinfo)


def test_intent_rejects_bad_channel_name() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_param(param(context={**CONTEXT, "channel": "Chat Window"}))
    assert_rejected(excinfo)


def test_intent_rejects_unknown_rar_type() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [rar(type="payment_initiation")])
    assert_rejected(excinfo)


def test_intent_rejects_mandate_entry_in_request() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [rar(), mandate_entry()])
    assert_rejected(excinfo)


def test_intent_rejects_two_intent_entries() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [rar(), rar(identifier="deal:other")])
    assert_rejected(excinfo)


def test_intent_rejects_empty_authorization_details() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [])
    assert_rejected(excinfo)


def test_intent_rejects_authorization_details_not_array() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, json.dumps(rar()))
    assert_rejected(excinfo)


def test_intent_rejects_entry_without_type() -> None:
    entry = rar()
    del entry["type"]
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [entry])
    assert_rejected(excinfo)


def test_intent_rejects_several_actions() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [rar(actions=["read", "update"])])
    assert_rejected(excinfo)


def test_intent_rejects_non_uri_location() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_intent(None, [rar(locations=["crm"])])
    assert_rejected(excinfo)


# --- mandate ----------------------------------------------------------------------------------

REQUEST = "Update the Acme deals and read the board"


def grant(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"platform": "crm", "actions": ["read", "update"],
                            "resources": ["deal:acme-123", "deal:acme-123/*", "deals?stage=stale"],
                            "max_count": 5}
    body.update(overrides)
    return body


def mandate_entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": MANDATE_TYPE,
        "platforms": [grant(), {"platform": "tasks", "actions": ["read"], "resources": ["board:*"],
                                "max_count": 1}],
        "channel": "chat", "request": REQUEST, "request_hash": hash_request_text(REQUEST)}
    entry.update(overrides)
    return entry


def intent(action: str = "update", resource: str = "deal:acme-123", count: int = 1) -> Intent:
    return Intent(action, resource, count, IntentContext(REQUEST, "chat", "production"))


def test_mandate_parses_and_round_trips() -> None:
    mandate = parse_mandate([mandate_entry()])
    assert mandate.channel == "chat" and mandate.request_text == REQUEST
    assert mandate.grants[0].actions == frozenset({"read", "update"})
    assert mandate.to_authorization_details() == mandate_entry()
    assert parse_mandate([mandate.to_authorization_details()]) == mandate


def test_mandate_without_request_text_parses() -> None:
    entry = mandate_entry()
    del entry["request"]
    mandate = parse_mandate(json.dumps([entry]))
    assert mandate.request_text is None
    assert mandate.to_authorization_details() == entry


def test_mandate_allows_prefix_pattern() -> None:
    mandate = parse_mandate([mandate_entry()])
    assert mandate.allows("crm", intent(resource="deal:acme-123"))
    assert mandate.allows("crm", intent(resource="deal:acme-123/notes"))
    assert not mandate.allows("crm", intent(resource="deal:acme-1234"))
    assert mandate.allows("tasks", intent(action="read", resource="board:42"))


def test_mandate_allows_exact_pattern_only_exactly() -> None:
    mandate = parse_mandate([mandate_entry()])
    assert mandate.allows("crm", intent(resource="deals?stage=stale"))
    assert not mandate.allows("crm", intent(resource="deals?stage=stale&all=1"))


def test_mandate_does_not_allow_other_resource_action_or_platform() -> None:
    mandate = parse_mandate([mandate_entry()])
    assert not mandate.allows("crm", intent(resource="deal:globex-1"))
    assert not mandate.allows("crm", intent(action="delete"))
    assert not mandate.allows("tasks", intent(resource="deal:acme-123"))
    assert not mandate.allows("tasks", intent(action="update", resource="board:42"))


def test_mandate_allows_ignores_count_and_within_count_checks_it() -> None:
    mandate = parse_mandate([mandate_entry()])
    big = intent(count=6)
    assert mandate.allows("crm", big)
    assert not mandate.within_count("crm", big)
    assert mandate.within_count("crm", intent(count=5))
    assert mandate.max_count("crm", big) == 5
    assert not mandate.within_count("crm", intent(resource="deal:globex-1"))


def test_mandate_narrows_itself_and_a_narrower_grant() -> None:
    wider = parse_mandate([mandate_entry()])
    narrower = parse_mandate([mandate_entry(platforms=[grant(
        actions=["read"], resources=["deal:acme-123", "deal:acme-123/notes/*"], max_count=2)])])
    assert wider.narrows(wider)
    assert narrower.narrows(wider)
    assert not wider.narrows(narrower)


def test_mandate_narrows_rejects_wider_action() -> None:
    wider = parse_mandate([mandate_entry()])
    widened = parse_mandate([mandate_entry(platforms=[grant(actions=["read", "delete"])])])
    assert not widened.narrows(wider)


def test_mandate_narrows_rejects_wider_resource_pattern() -> None:
    wider = parse_mandate([mandate_entry()])
    widened = parse_mandate([mandate_entry(platforms=[grant(resources=["deal:*"])])])
    assert not widened.narrows(wider)


def test_mandate_narrows_rejects_higher_count() -> None:
    wider = parse_mandate([mandate_entry()])
    widened = parse_mandate([mandate_entry(platforms=[grant(max_count=6)])])
    assert not widened.narrows(wider)


def test_mandate_narrows_rejects_new_platform() -> None:
    wider = parse_mandate([mandate_entry()])
    widened = parse_mandate([mandate_entry(platforms=[grant(platform="warehouse")])])
    assert not widened.narrows(wider)


def test_mandate_narrows_rejects_other_request_or_channel() -> None:
    wider = parse_mandate([mandate_entry()])
    other = "Delete everything"
    assert not parse_mandate([mandate_entry(request=other, request_hash=hash_request_text(
        other))]).narrows(wider)
    assert not parse_mandate([mandate_entry(channel="email")]).narrows(wider)


def test_mandate_rejects_unknown_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(scope="all")])
    assert_rejected(excinfo)


def test_mandate_rejects_unknown_grant_field() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(privileges=["admin"])])])
    assert_rejected(excinfo)


def test_mandate_rejects_unknown_action() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(actions=["write"])])])
    assert_rejected(excinfo)


def test_mandate_rejects_inner_wildcard() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(resources=["deal:*:notes"])])])
    assert_rejected(excinfo)


def test_mandate_rejects_bool_max_count() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(max_count=True)])])
    assert_rejected(excinfo)


def test_mandate_rejects_hash_not_matching_request() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(request_hash=hash_request_text("something else"))])
    assert_rejected(excinfo)


def test_mandate_rejects_missing_request_hash() -> None:
    entry = mandate_entry()
    del entry["request_hash"]
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([entry])
    assert_rejected(excinfo)


def test_mandate_rejects_oversize_request_text() -> None:
    text = "x" * (MAX_REQUEST_CHARS + 1)
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(request=text, request_hash=hash_request_text(text))])
    assert_rejected(excinfo)


def test_mandate_rejects_too_many_grants() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(max_count=i) for i in range(1, 18)])])
    assert_rejected(excinfo)


def test_mandate_rejects_empty_platforms() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[])])
    assert_rejected(excinfo)


def test_mandate_rejects_two_mandates() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(), mandate_entry()])
    assert_rejected(excinfo)


def test_mandate_rejects_other_entry_types() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(), rar()])
    assert_rejected(excinfo)


def test_mandate_rejects_duplicate_actions() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(actions=["read", "read"])])])
    assert_rejected(excinfo)


def test_describe_mandate_lists_each_grant_and_the_request() -> None:
    lines = describe_mandate([mandate_entry()])
    assert lines == [
        "crm: read, update on deal:acme-123, deal:acme-123/*, deals?stage=stale "
        "(up to 5 records at a time)",
        "tasks: read on board:* (up to 1 record at a time)",
        f"Your request (chat): {REQUEST}",
    ]


def test_describe_mandate_rejects_malformed_mandate() -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        describe_mandate([mandate_entry(platforms=[])])
    assert_rejected(excinfo)


# --- resource patterns: a `*` stands for whole segments (issue 20, finding 3) -----------------


@pytest.mark.parametrize("pattern", ["deal:acme-123*", "deal:acme-*", "deals?stage=*",
                                     "deal*", "deal:acme-123/no*"])
def test_mandate_rejects_star_inside_a_segment(pattern: str) -> None:
    # `deal:acme-123*` would also grant `deal:acme-1234`: refused, never reinterpreted.
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate([mandate_entry(platforms=[grant(resources=[pattern])])])
    assert_rejected(excinfo)


@pytest.mark.parametrize(("pattern", "resource", "expected"), [
    ("deal:*", "deal:acme-123", True),
    ("deal:*", "deal:acme-123/notes", True),
    ("deal:*", "deal:", False),  # `*` stands for at least one segment
    ("deal:*", "deals:x", False),
    ("deal:*", "deal:x/../y", False),  # never a dot segment
    ("deal:*", "deal:x/./y", False),
    ("deal:*", "deal:x//y", False),  # never an empty segment
    ("deal:acme-123/*", "deal:acme-123/notes", True),
    ("deal:acme-123/*", "deal:acme-123", False),
    ("deal:acme-123/*", "deal:acme-1234/notes", False),
    ("deal:acme-123", "deal:acme-1234", False),
    ("*", "deal:acme-123", True),
    ("*", "..", False),
])
def test_pattern_star_matches_whole_segments_only(pattern: str, resource: str,
                                                  expected: bool) -> None:
    assert pattern_matches(pattern, resource) is expected


@pytest.mark.parametrize(("wider", "narrower", "expected"), [
    ("deal:*", "deal:acme-123", True),
    ("deal:*", "deal:acme-123/*", True),
    ("deal:acme-123/*", "deal:*", False),
    ("deal:*", "*", False),
    ("*", "deal:*", True),
    ("deal:acme-123/*", "deal:acme-123", False),
    ("deal:*", "deal:x/../y", False),
])
def test_pattern_covers_follows_segment_matching(wider: str, narrower: str,
                                                 expected: bool) -> None:
    assert pattern_covers(wider, narrower) is expected


def test_mandate_for_one_deal_and_its_sub_resources_does_not_reach_a_longer_id() -> None:
    mandate = parse_mandate([mandate_entry(platforms=[grant(
        resources=["deal:acme-123", "deal:acme-123/*"])])])
    assert mandate.allows("crm", intent(resource="deal:acme-123"))
    assert mandate.allows("crm", intent(resource="deal:acme-123/notes"))
    assert not mandate.allows("crm", intent(resource="deal:acme-1234"))
    assert not mandate.allows("crm", intent(resource="deal:acme-1234/notes"))


# --- strict JSON for authorization_details as for intent (issue 20, finding 5) ----------------


@pytest.mark.parametrize("text", [
    '[{"type": "agent_mandate", "type": "agent_intent"}]',
    '[{"type": "agent_mandate", "channel": "chat", "channel": "email"}]',
    '[{"type": "agent_mandate", "platforms": [{"max_count": 1, "max_count": 5}]}]',
    '[{"type": "agent_mandate", "max_count": NaN}]',
])
def test_authorization_details_text_is_parsed_strictly(text: str) -> None:
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        loads_authorization_details(text)
    assert_rejected(excinfo)


def test_authorization_details_text_parses_to_its_entries() -> None:
    entries = [mandate_entry()]
    assert loads_authorization_details(json.dumps(entries)) == entries


def test_mandate_text_with_a_duplicate_member_is_rejected_even_when_both_values_are_valid(
        ) -> None:
    text = json.dumps([mandate_entry()])[:-2] + ', "channel": "email"}]'
    with pytest.raises(InvalidAuthorizationDetailsError) as excinfo:
        parse_mandate(text)
    assert_rejected(excinfo)
