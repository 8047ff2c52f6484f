"""RFC 9396 (RAR) types `agent_intent` and `agent_mandate` (docs/standards.md A1, A2).

The intent is what the agent asks to do now: the `intent` form parameter or an `agent_intent`
`authorization_details` entry, which may both be sent only if they agree. The mandate is what
the user's request allows, minted by the trusted edge into the user assertion. Their wire
formats, limits, the intent hash, `request_hash`, resource patterns and narrowing are in
docs/wire-formats.md; anything malformed or unknown is `invalid_authorization_details` (RAR-04).

`intent/model.py` holds the values, the action vocabulary, resource patterns and the hashes;
`intent/parse.py` reads them from the wire, strictly. Every name is importable from here.
"""

from __future__ import annotations

from authserver.intent.model import (
    ACTION_METHODS,
    ACTIONS,
    BULK,
    DESTRUCTIVE,
    GATEWAY_METHODS,
    INTENT_TYPE,
    MANDATE_TYPE,
    READ,
    WRITE,
    Intent,
    IntentContext,
    Mandate,
    MandateGrant,
    hash_request_text,
    pattern_covers,
    pattern_matches,
)
from authserver.intent.parse import (
    DEFAULT_COUNT,
    MAX_COUNT,
    MAX_JSON_CHARS,
    MAX_LOCATION_CHARS,
    MAX_LOCATIONS,
    MAX_MANDATE_GRANTS,
    MAX_MANDATE_RESOURCES,
    MAX_REQUEST_CHARS,
    MAX_RESOURCE_CHARS,
    describe_mandate,
    loads_authorization_details,
    parse_intent,
    parse_mandate,
)

__all__ = [
    "ACTIONS",
    "ACTION_METHODS",
    "BULK",
    "DEFAULT_COUNT",
    "DESTRUCTIVE",
    "GATEWAY_METHODS",
    "INTENT_TYPE",
    "MANDATE_TYPE",
    "MAX_COUNT",
    "MAX_JSON_CHARS",
    "MAX_LOCATIONS",
    "MAX_LOCATION_CHARS",
    "MAX_MANDATE_GRANTS",
    "MAX_MANDATE_RESOURCES",
    "MAX_REQUEST_CHARS",
    "MAX_RESOURCE_CHARS",
    "READ",
    "WRITE",
    "Intent",
    "IntentContext",
    "Mandate",
    "MandateGrant",
    "describe_mandate",
    "hash_request_text",
    "loads_authorization_details",
    "parse_intent",
    "parse_mandate",
    "pattern_covers",
    "pattern_matches",
]
