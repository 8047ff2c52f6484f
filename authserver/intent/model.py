"""The intent and mandate model (RFC 9396 types `agent_intent` and `agent_mandate`,
docs/standards.md A1, A2): the action vocabulary and the HTTP methods each action may use, the
`Intent` and `Mandate` values, resource patterns and what they match, narrowing (RAR-06), and
the hashes (the intent hash, `request_hash`). Values here are already valid: reading them from
the wire is `intent.parse`. Matching and hashing are case-sensitive with no Unicode
normalisation (RAR-13).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from authserver.encoding import sha256_b64url

ACTIONS: tuple[str, ...] = ("read", "create", "update", "delete", "bulk_update", "bulk_delete")
READ: frozenset[str] = frozenset({"read"})
WRITE: frozenset[str] = frozenset(ACTIONS) - READ
DESTRUCTIVE: frozenset[str] = frozenset({"delete", "bulk_delete"})
BULK: frozenset[str] = frozenset({"bulk_update", "bulk_delete"})

#: The HTTP methods each action may use at the gateway (docs/standards.md A5). A platform's route
#: may narrow these (`gateway_routes.allowed_methods`), never widen them. Only destructive
#: actions may DELETE: otherwise an `update` capability could delete its record, dodging the
#: destructive step-up, the mandate's actions and the destructive rate limit. A bulk update is
#: an update of several records at once, so it takes PATCH/PUT like `update`; a platform whose
#: batch endpoint wants POST cannot be mapped for it (refused rather than widened).
ACTION_METHODS: dict[str, frozenset[str]] = {
    "read": frozenset({"GET", "HEAD"}),
    "create": frozenset({"POST"}),
    "update": frozenset({"PATCH", "PUT"}),
    "delete": frozenset({"DELETE"}),
    "bulk_update": frozenset({"PATCH", "PUT"}),
    "bulk_delete": frozenset({"DELETE"}),
}
#: Every method some action may use: what a platform's route may list.
GATEWAY_METHODS: frozenset[str] = frozenset().union(*ACTION_METHODS.values())

INTENT_TYPE = "agent_intent"
MANDATE_TYPE = "agent_mandate"
#: Segment separators in a resource: a pattern's `*` may only follow one of these.
SEPARATORS = (":", "/")


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class IntentContext:
    request: str
    channel: str
    environment: str

    def to_json(self) -> dict[str, str]:
        return {"request": self.request, "channel": self.channel,
                "environment": self.environment}


@dataclass(frozen=True)
class Intent:
    action: str
    resource: str
    count: int
    context: IntentContext
    # Where the agent says it will use the capability; validated, not hashed (RAR-07: the AS
    # sets the granted location from `resource`/`audience`).
    locations: tuple[str, ...] = field(default=(), compare=False)

    @property
    def action_class(self) -> Literal["read", "write"]:
        return "read" if self.action in READ else "write"

    @property
    def is_destructive(self) -> bool:
        return self.action in DESTRUCTIVE

    @property
    def is_bulk(self) -> bool:
        return self.action in BULK

    @property
    def record_type(self) -> str:
        """The resource's type prefix (`deal` in `deal:acme-123`, `deals` in `deals?x=y`)."""
        return re.split(r"[:?/]", self.resource, maxsplit=1)[0]

    def to_json(self) -> dict[str, Any]:
        """The A1 parameter form; the canonical basis of `hash()`."""
        return {"action": self.action, "resource": self.resource, "count": self.count,
                "context": self.context.to_json()}

    def hash(self) -> str:
        # Computed once per value (an exchange asks three times: Cedar's context, the token,
        # the audit record); the value is frozen, and the cache is no field (eq, repr).
        cached: str | None = self.__dict__.get("_hash")
        if cached is None:
            cached = sha256_b64url(_canonical_json(self.to_json()))
            object.__setattr__(self, "_hash", cached)
        return cached

    def to_authorization_details(self, location: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": INTENT_TYPE, "actions": [self.action],
                                 "identifier": self.resource}
        if location is not None:
            entry["locations"] = [location]
        entry["count"] = self.count
        entry["context"] = self.context.to_json()
        return entry


def pattern_matches(pattern: str, resource: str) -> bool:
    """Exact match, or, for `prefix*` (`prefix` empty or ending in `:` or `/`, as parsing
    enforces), `resource` is `prefix` followed by one or more whole segments
    (docs/wire-formats.md). Fails closed on a pattern parsing would refuse."""
    if not pattern.endswith("*"):
        return resource == pattern
    prefix = pattern[:-1]
    if prefix and not prefix.endswith(SEPARATORS):
        return False
    if not resource.startswith(prefix):
        return False
    rest = resource[len(prefix):]
    return all(s not in ("", ".", "..") for s in re.split(r"[:/]", rest))


def pattern_covers(wider: str, narrower: str) -> bool:
    """True if every resource `narrower` matches is also matched by `wider`."""
    if not narrower.endswith("*"):
        return pattern_matches(wider, narrower)
    if not wider.endswith("*"):
        return False
    # Both `prefix*`: every match of `narrower` extends its prefix by whole segments, so it is
    # a match of `wider` when `narrower`'s prefix is `wider`'s prefix plus whole segments.
    wide, narrow = wider[:-1], narrower[:-1]
    if narrow == wide:
        return True
    return narrow.endswith(SEPARATORS) and pattern_matches(wider, narrow[:-1])


@dataclass(frozen=True)
class MandateGrant:
    platform: str
    actions: frozenset[str]
    resources: tuple[str, ...]
    max_count: int

    def matches(self, platform: str, intent: Intent) -> bool:
        return (platform == self.platform and intent.action in self.actions
                and any(pattern_matches(p, intent.resource) for p in self.resources))

    def covered_by(self, wider: MandateGrant) -> bool:
        return (self.platform == wider.platform and self.actions <= wider.actions
                and self.max_count <= wider.max_count
                and all(any(pattern_covers(w, p) for w in wider.resources)
                        for p in self.resources))

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.platform,
                "actions": [a for a in ACTIONS if a in self.actions],
                "resources": list(self.resources), "max_count": self.max_count}


@dataclass(frozen=True)
class Mandate:
    grants: tuple[MandateGrant, ...]
    channel: str
    request_hash: str
    request_text: str | None = None

    def allows(self, platform: str, intent: Intent) -> bool:
        """Action and resource lie inside some grant for `platform` (count is not checked)."""
        return any(g.matches(platform, intent) for g in self.grants)

    def within_count(self, platform: str, intent: Intent) -> bool:
        """Some grant that allows the intent also allows its `count`."""
        return any(g.matches(platform, intent) and intent.count <= g.max_count
                   for g in self.grants)

    def max_count(self, platform: str, intent: Intent) -> int:
        """The largest `max_count` of the grants that allow the intent (0 if none)."""
        return max((g.max_count for g in self.grants if g.matches(platform, intent)), default=0)

    def actions_for(self, platform: str) -> frozenset[str]:
        return frozenset().union(*(g.actions for g in self.grants if g.platform == platform))

    def narrows(self, wider: Mandate) -> bool:
        """RAR-06: self is the same request and grants nothing `wider` does not."""
        if self.channel != wider.channel or self.request_hash != wider.request_hash:
            return False
        if (self.request_text is not None and wider.request_text is not None
                and self.request_text != wider.request_text):
            return False
        return all(any(g.covered_by(w) for w in wider.grants) for g in self.grants)

    def to_authorization_details(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": MANDATE_TYPE,
                                 "platforms": [g.to_json() for g in self.grants],
                                 "channel": self.channel}
        if self.request_text is not None:
            entry["request"] = self.request_text
        entry["request_hash"] = self.request_hash
        return entry


def hash_request_text(text: str) -> str:
    """The mandate's `request_hash` for a request text."""
    return sha256_b64url(text.encode("utf-8"))
