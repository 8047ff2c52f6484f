"""Reading intents and mandates from the wire, strictly (RAR-04): the `intent` form parameter
and `authorization_details` (at most MAX_JSON_CHARS, strict JSON: no repeated member, no
NaN/Infinity), every field's type, syntax and bounds, and the rule that `intent` and an
`agent_intent` entry may both be sent only if they agree. Anything malformed or unknown is
`invalid_authorization_details`. Each mandate grant is the cross-product of its actions and
resources, and several may name one platform (RAR-02). The limits are in
docs/wire-formats.md; the values read are `intent.model`'s.
"""

from __future__ import annotations

import re
from typing import Any

from authserver.encoding import loads_strict_json
from authserver.errors import InvalidAuthorizationDetailsError
from authserver.intent.model import (
    ACTIONS,
    INTENT_TYPE,
    MANDATE_TYPE,
    SEPARATORS,
    Intent,
    IntentContext,
    Mandate,
    MandateGrant,
    hash_request_text,
)

# Bounds: everything here ends up in tokens, Cedar contexts and audit rows.
MAX_JSON_CHARS = 16_384  # raw `intent` / `authorization_details` text
MAX_REQUEST_CHARS = 2_000  # the user's request text
MAX_RESOURCE_CHARS = 256
MAX_COUNT = 10_000
MAX_LOCATIONS = 4
MAX_LOCATION_CHARS = 512
MAX_MANDATE_GRANTS = 16
MAX_MANDATE_RESOURCES = 32

DEFAULT_COUNT = 1

# Resource: printable ASCII without spaces, quotes, backslash, `*`, `#` or `<>`; starts with an
# alphanumeric so it can never look like a path traversal or an option.
_RESOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:/?=&%+@,;!$()\[\]-]*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # platform, channel, environment
_HASH = re.compile(r"^[A-Za-z0-9_-]{43}$")  # b64url SHA-256, no padding
_LOCATION = re.compile(r"^https?://[^\s\"<>\\]+$")
# C0 controls other than TAB/LF/CR, DEL, and C1 controls.
_BAD_TEXT_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_INTENT_PARAM_FIELDS = frozenset({"action", "resource", "count", "context"})
_INTENT_RAR_FIELDS = frozenset({"type", "actions", "identifier", "locations", "count", "context"})
_CONTEXT_FIELDS = frozenset({"request", "channel", "environment"})
_MANDATE_FIELDS = frozenset({"type", "platforms", "channel", "request", "request_hash"})
_GRANT_FIELDS = frozenset({"platform", "actions", "resources", "max_count"})


def _reject(debug: str) -> InvalidAuthorizationDetailsError:
    return InvalidAuthorizationDetailsError("Malformed or unsupported authorization details",
                                            debug=debug)


def _loads(text: str, what: str) -> Any:
    if len(text) > MAX_JSON_CHARS:
        raise _reject(f"{what} longer than {MAX_JSON_CHARS} characters")
    try:
        return loads_strict_json(text)
    except (ValueError, RecursionError) as e:
        # A repeated member, NaN/Infinity, or not JSON at all (encoding.loads_strict_json).
        raise _reject(f"{what} is not valid strict JSON: {e}") from e


# --- field checks -----------------------------------------------------------------------------


def _object(value: Any, allowed: frozenset[str], required: frozenset[str],
            what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _reject(f"{what} must be a JSON object")
    unknown = set(value) - allowed
    if unknown:
        # RAR-04: unknown fields in a known type are rejected.
        raise _reject(f"{what} has unknown fields {sorted(unknown)}")
    missing = required - set(value)
    if missing:
        raise _reject(f"{what} lacks required fields {sorted(missing)}")
    return value


def _string(value: Any, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _reject(f"{what} must be a string")
    if not value or len(value) > max_chars:
        raise _reject(f"{what} must have 1..{max_chars} characters")
    return value


def _name(value: Any, what: str) -> str:
    text = _string(value, what, 64)
    if not _NAME.match(text):
        raise _reject(f"{what} must match {_NAME.pattern}")
    return text


def _request_text(value: Any, what: str) -> str:
    text = _string(value, what, MAX_REQUEST_CHARS)
    if _BAD_TEXT_CHARS.search(text):
        raise _reject(f"{what} contains control characters")
    return text


def _resource(value: Any, what: str) -> str:
    text = _string(value, what, MAX_RESOURCE_CHARS)
    if not _RESOURCE.match(text):
        raise _reject(f"{what} has characters outside the resource syntax")
    return text


def _pattern(value: Any, what: str) -> str:
    text = _string(value, what, MAX_RESOURCE_CHARS)
    if text == "*":
        return text
    body = text[:-1] if text.endswith("*") else text
    if not _RESOURCE.match(body) or (text.endswith("*") and not body.endswith(SEPARATORS)):
        raise _reject(f"{what}: '*' only as the last character of a resource pattern, "
                      "right after ':' or '/'")
    return text


def _count(value: Any, what: str) -> int:
    # bool is a subclass of int in Python; JSON `true` must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _reject(f"{what} must be an integer")
    if not 1 <= value <= MAX_COUNT:
        raise _reject(f"{what} must be in 1..{MAX_COUNT}")
    return value


def _string_list(value: Any, what: str, max_items: int) -> list[Any]:
    if not isinstance(value, list) or not value or len(value) > max_items:
        raise _reject(f"{what} must be a non-empty array of at most {max_items} items")
    if len(set(map(repr, value))) != len(value):
        raise _reject(f"{what} has duplicate items")
    return value


def _action(value: Any, what: str) -> str:
    if not isinstance(value, str) or value not in ACTIONS:
        raise _reject(f"{what} is not one of {ACTIONS}")
    return value


def _intent_context(value: Any) -> IntentContext:
    obj = _object(value, _CONTEXT_FIELDS, _CONTEXT_FIELDS, "intent context")
    return IntentContext(
        request=_request_text(obj["request"], "context.request"),
        channel=_name(obj["channel"], "context.channel"),
        environment=_name(obj["environment"], "context.environment"),
    )


def _intent_from_param(text: str) -> Intent:
    obj = _object(_loads(text, "intent"), _INTENT_PARAM_FIELDS,
                  frozenset({"action", "resource", "context"}), "intent")
    return Intent(
        action=_action(obj["action"], "intent.action"),
        resource=_resource(obj["resource"], "intent.resource"),
        count=_count(obj.get("count", DEFAULT_COUNT), "intent.count"),
        context=_intent_context(obj["context"]),
    )


def _intent_from_rar(entry: dict[str, Any]) -> Intent:
    obj = _object(entry, _INTENT_RAR_FIELDS,
                  frozenset({"type", "actions", "identifier", "context"}), "agent_intent")
    actions = _string_list(obj["actions"], "agent_intent.actions", 1)
    locations: tuple[str, ...] = ()
    if "locations" in obj:
        raw = _string_list(obj["locations"], "agent_intent.locations", MAX_LOCATIONS)
        for item in raw:
            if not _LOCATION.match(_string(item, "location", MAX_LOCATION_CHARS)):
                raise _reject("agent_intent.locations must be absolute http(s) URIs")
        locations = tuple(raw)
    return Intent(
        action=_action(actions[0], "agent_intent.actions[0]"),
        resource=_resource(obj["identifier"], "agent_intent.identifier"),
        count=_count(obj.get("count", DEFAULT_COUNT), "agent_intent.count"),
        context=_intent_context(obj["context"]),
        locations=locations,
    )


def _details_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = _loads(value, "authorization_details")
    # RAR-01: a JSON array of objects, each with a string `type`.
    if not isinstance(value, list) or not value:
        raise _reject("authorization_details must be a non-empty JSON array")
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise _reject("authorization_details entries must be objects with a string type")
    return value


def loads_authorization_details(text: str) -> list[dict[str, Any]]:
    """The raw `authorization_details` parameter, parsed as strictly as `intent`: at most
    MAX_JSON_CHARS, no duplicate member at any depth (RFC 8259 §4: a parser that kept the
    first value would disagree with us), no NaN/Infinity, and a non-empty array of objects
    with a string `type` (RAR-01). Raises InvalidAuthorizationDetailsError otherwise.

    Every endpoint that receives the parameter parses it with this (or hands the text to
    `parse_intent`/`parse_mandate`, which do), never with a bare `json.loads`."""
    return _details_list(text)


def parse_intent(intent_param: str | None,
                 authorization_details: list[dict[str, Any]] | str | None) -> Intent | None:
    """Parse the intent from the `intent` parameter and/or `authorization_details`.

    Returns None when neither is sent. `authorization_details` may be the raw parameter text or
    its decoded array; it must hold exactly one `agent_intent` entry and nothing else.
    Raises InvalidAuthorizationDetailsError on anything malformed, unknown or disagreeing.
    """
    from_param = _intent_from_param(intent_param) if intent_param is not None else None
    from_rar = None
    if authorization_details is not None:
        entries = _details_list(authorization_details)
        for entry in entries:
            if entry["type"] != INTENT_TYPE:
                # RAR-04: unknown types are rejected; a mandate only comes from the assertion.
                raise _reject(f"authorization_details type {entry['type']!r} not accepted here")
        if len(entries) != 1:
            raise _reject("exactly one agent_intent entry is allowed")
        from_rar = _intent_from_rar(entries[0])
    if from_param is not None and from_rar is not None:
        if from_param != from_rar:
            raise _reject("intent and authorization_details disagree")
        return from_rar  # keeps the validated `locations`
    return from_param or from_rar


def _mandate_grant(value: Any, index: int) -> MandateGrant:
    what = f"agent_mandate.platforms[{index}]"
    obj = _object(value, _GRANT_FIELDS, _GRANT_FIELDS, what)
    actions = _string_list(obj["actions"], f"{what}.actions", len(ACTIONS))
    resources = _string_list(obj["resources"], f"{what}.resources", MAX_MANDATE_RESOURCES)
    return MandateGrant(
        platform=_name(obj["platform"], f"{what}.platform"),
        actions=frozenset(_action(a, f"{what}.actions") for a in actions),
        resources=tuple(_pattern(r, f"{what}.resources") for r in resources),
        max_count=_count(obj["max_count"], f"{what}.max_count"),
    )


def parse_mandate(authorization_details: list[dict[str, Any]] | str) -> Mandate:
    """Parse the single `agent_mandate` entry of a user assertion's `authorization_details`.

    Raises InvalidAuthorizationDetailsError on anything malformed or unknown (RAR-04).
    """
    entries = _details_list(authorization_details)
    for entry in entries:
        if entry["type"] != MANDATE_TYPE:
            raise _reject(f"authorization_details type {entry['type']!r} not accepted here")
    if len(entries) != 1:
        raise _reject("exactly one agent_mandate entry is allowed")
    obj = _object(entries[0], _MANDATE_FIELDS,
                  frozenset({"type", "platforms", "channel", "request_hash"}), "agent_mandate")
    raw_grants = obj["platforms"]
    if not isinstance(raw_grants, list) or not 1 <= len(raw_grants) <= MAX_MANDATE_GRANTS:
        raise _reject(f"agent_mandate.platforms must hold 1..{MAX_MANDATE_GRANTS} entries")
    grants = tuple(_mandate_grant(g, i) for i, g in enumerate(raw_grants))
    hash_value = obj["request_hash"]
    if not isinstance(hash_value, str) or not _HASH.match(hash_value):
        raise _reject("agent_mandate.request_hash must be a base64url SHA-256")
    text = None
    if "request" in obj:
        text = _request_text(obj["request"], "agent_mandate.request")
        if hash_request_text(text) != hash_value:
            raise _reject("agent_mandate.request_hash does not match request")
    return Mandate(grants=grants, channel=_name(obj["channel"], "agent_mandate.channel"),
                   request_hash=hash_value, request_text=text)


def describe_mandate(authorization_details: list[dict[str, Any]] | str) -> list[str]:
    """Plain-language lines for a consent or activity page, one per grant.

    Raises InvalidAuthorizationDetailsError like `parse_mandate`. The lines hold user-supplied
    text (the request): the page must escape them.
    """
    mandate = parse_mandate(authorization_details)
    lines = []
    for g in mandate.grants:
        actions = ", ".join(a.replace("_", " ") for a in ACTIONS if a in g.actions)
        noun = "record" if g.max_count == 1 else "records"
        lines.append(f"{g.platform}: {actions} on {', '.join(g.resources)} "
                     f"(up to {g.max_count} {noun} at a time)")
    if mandate.request_text is not None:
        lines.append(f"Your request ({mandate.channel}): {mandate.request_text}")
    else:
        lines.append(f"Your request came from: {mandate.channel}")
    return lines
