"""Cedar policy decision point for token exchange with an intent (docs/standards.md A1-A3).

The only module that calls Cedar (cedarpy). `PolicyEngine.load` reads `schema.cedarschema` and
every `*.cedar` file of a directory, validates them against the schema and checks their
annotations; any problem raises PolicyLoadError, so the app refuses to start. `reload()` swaps
in a new set atomically, or raises and keeps serving the old one.

Decision rules (policies/README.md has the operator's view):
- Cedar Allow with no evaluation errors -> "allow". Anything else is not an allow: Cedar skips a
  forbid whose condition errors and may then return Allow, so any error -> deny
  ("evaluation_error").
- Deny where every determining policy is a forbid marked `@step_up` -> "step_up", but only if the
  same request with `approved = true` would be a clean Allow (the user is never asked to confirm
  something that would be denied anyway).
- Any other Deny -> deny, reason = the determining forbids' `@reason` ("intent_mismatch" first:
  it is the prompt-injection signal), or "no_permit" when no policy matched.

Agent allowlists: None means "none configured" and is passed as an empty set, so by default an
agent may do nothing until an admin allowlists platforms and actions for it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cedarpy

from authserver.errors import TemporarilyUnavailableError
from authserver.intent import Intent, Mandate, parse_intent, parse_mandate

SCHEMA_FILE = "schema.cedarschema"
POLICY_GLOB = "*.cedar"

ANNOTATION_ID = "id"
ANNOTATION_REASON = "reason"
ANNOTATION_STEP_UP = "step_up"

REASON_ALLOWED = "allowed"
REASON_NEEDS_CONFIRMATION = "needs_confirmation"
REASON_EVALUATION_ERROR = "evaluation_error"
REASON_NO_PERMIT = "no_permit"
REASON_INTENT_MISMATCH = "intent_mismatch"
REASON_NOT_ALLOWLISTED = "not_allowlisted"
REASON_NO_MANDATE = "no_mandate"
# Reasons that the caller audits as `intent_mismatch` (the agent asked for something the user
# or the admin did not allow: the prompt-injection signal).
INTENT_MISMATCH_REASONS = frozenset({REASON_INTENT_MISMATCH, REASON_NOT_ALLOWLISTED})
# When several hard forbids match, the reported reason is the first of these that applies.
_REASON_PRIORITY = (REASON_INTENT_MISMATCH, REASON_NOT_ALLOWLISTED, REASON_NO_MANDATE)

_POLICY_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Outcome = Literal["allow", "deny", "step_up"]


class PolicyLoadError(Exception):
    """The policy directory cannot be used (missing files, syntax, schema or annotation errors)."""


@dataclass(frozen=True)
class PolicyRequest:
    user_id: str
    tenant: str
    roles: Sequence[str]
    groups: Sequence[str]
    agent_id: str
    agent_allowed_platforms: Sequence[str] | None
    agent_allowed_actions: Sequence[str] | None
    platform: str
    intent: Intent
    mandate: Mandate | None
    approved: bool


@dataclass(frozen=True)
class PolicyDecision:
    outcome: Outcome
    policy_ids: tuple[str, ...]  # @id of the determining policies (audit only, never the client)
    reason: str
    within_mandate: bool
    errors: tuple[str, ...] = ()  # Cedar's evaluation errors (logs/audit only)

    @property
    def is_intent_mismatch(self) -> bool:
        return self.outcome == "deny" and self.reason in INTENT_MISMATCH_REASONS


@dataclass(frozen=True)
class _PolicyInfo:
    policy_id: str  # the @id
    effect: str
    step_up: bool
    reason: str | None


#: Parsed entity sets kept per loaded policy set (`_Loaded.entities`).
ENTITIES_CACHE_SIZE = 1024


@dataclass(frozen=True)
class _Loaded:
    schema: cedarpy.Schema
    policies: cedarpy.PolicySet
    info: Mapping[str, _PolicyInfo]  # Cedar's positional id (policy0, ...) -> our annotations
    #: Entity-set JSON -> the Cedar handle parsed from exactly that text against `schema`
    #: (as `is_authorized` would parse it, action groups included), so a user and platform
    #: asked about again are not parsed again. Keyed by the whole text: any attribute that
    #: differs is another entry. A reload builds a new `_Loaded`, so a new cache. Parse errors
    #: are raised, never kept.
    entities: Callable[[str], cedarpy.Entities]


def _load(policy_dir: Path) -> _Loaded:
    schema_path = policy_dir / SCHEMA_FILE
    try:
        schema_text = schema_path.read_text(encoding="utf-8")
        files = sorted(policy_dir.glob(POLICY_GLOB))
        texts = [(f.name, f.read_text(encoding="utf-8")) for f in files]
    except OSError as e:
        raise PolicyLoadError(f"cannot read policies from {policy_dir}: {e}") from e
    if not texts:
        raise PolicyLoadError(f"no {POLICY_GLOB} files in {policy_dir}")
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as e:
        raise PolicyLoadError(f"{SCHEMA_FILE}: {e}") from e
    for name, text in texts:
        # Per file, so that an operator's error names the file it is in.
        result = cedarpy.validate_policies(text, schema)
        if not result.validation_passed:
            detail = "; ".join(str(err) for err in result.errors) or "validation failed"
            raise PolicyLoadError(f"{name}: {detail}")
    combined = "\n".join(text for _, text in texts)
    try:
        policies = cedarpy.PolicySet.from_str(combined)
        tree = policies.to_pst()
    except ValueError as e:
        raise PolicyLoadError(f"policy set: {e}") from e
    if tree.templates or tree.template_links:
        raise PolicyLoadError("templates (?principal/?resource slots) are not supported")
    if not cedarpy.validate_policies(combined, schema).validation_passed:
        raise PolicyLoadError("the combined policy set does not validate")

    @functools.lru_cache(maxsize=ENTITIES_CACHE_SIZE)
    def entities(text: str) -> cedarpy.Entities:
        return cedarpy.Entities.from_json_str(text, schema)

    return _Loaded(schema=schema, policies=policies, info=_annotations(tree.static_policies),
                   entities=entities)


def _annotations(static_policies: Mapping[str, Any]) -> dict[str, _PolicyInfo]:
    info: dict[str, _PolicyInfo] = {}
    seen: set[str] = set()
    for cedar_id, policy in static_policies.items():
        notes = dict(policy.annotations)
        policy_id = notes.get(ANNOTATION_ID)
        if not policy_id or not _POLICY_ID.match(policy_id):
            raise PolicyLoadError(f"{cedar_id}: every policy needs @id(\"...\") matching "
                                  f"{_POLICY_ID.pattern}")
        if policy_id in seen:
            raise PolicyLoadError(f"duplicate @id({policy_id!r})")
        seen.add(policy_id)
        step_up_value = notes.get(ANNOTATION_STEP_UP)
        if step_up_value not in (None, "", "true"):
            raise PolicyLoadError(f"{policy_id}: @step_up takes no value or \"true\"")
        step_up = step_up_value is not None
        reason = notes.get(ANNOTATION_REASON)
        if policy.effect == "permit":
            if step_up or reason is not None:
                raise PolicyLoadError(f"{policy_id}: @step_up/@reason only apply to forbid")
        elif not step_up and (reason is None or not _REASON.match(reason)):
            # A hard deny must say why, so the audit trail can tell injections from config.
            raise PolicyLoadError(f"{policy_id}: a forbid needs @reason(\"...\") or @step_up")
        info[cedar_id] = _PolicyInfo(policy_id, policy.effect, step_up, reason)
    return info


class PolicyEngine:
    def __init__(self, policy_dir: Path, loaded: _Loaded) -> None:
        self._dir = policy_dir
        self._loaded = loaded

    @classmethod
    def load(cls, policy_dir: str | Path) -> PolicyEngine:
        """Load and validate a policy directory; raises PolicyLoadError."""
        path = Path(policy_dir)
        return cls(path, _load(path))

    def reload(self) -> None:
        """Re-read the directory; on PolicyLoadError the current set stays in force."""
        # One attribute assignment: concurrent decide() calls see the old or the new set whole.
        self._loaded = _load(self._dir)

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return tuple(sorted(i.policy_id for i in self._loaded.info.values()))

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Allow, deny or step_up. Raises TemporarilyUnavailableError if Cedar itself fails."""
        loaded = self._loaded
        within = request.mandate is not None and request.mandate.allows(request.platform,
                                                                        request.intent)
        first = self._decide(loaded, request, within, request.approved)
        if first.outcome != "step_up":
            return first
        # Only ask for confirmation if confirming would actually allow the intent.
        if request.approved:
            return PolicyDecision("deny", first.policy_ids, REASON_NEEDS_CONFIRMATION, within)
        confirmed = self._decide(loaded, request, within, approved=True)
        if confirmed.outcome == "allow":
            return first
        if confirmed.outcome == "step_up":
            return PolicyDecision("deny", confirmed.policy_ids, REASON_NEEDS_CONFIRMATION, within)
        return confirmed

    def _decide(self, loaded: _Loaded, request: PolicyRequest, within: bool,
                approved: bool) -> PolicyDecision:
        cedar_request = {
            "principal": {"type": "User", "id": request.user_id},
            "action": {"type": "Action", "id": request.intent.action},
            "resource": {"type": "Platform", "id": request.platform},
            "context": _context(request, within, approved),
        }
        try:
            text = json.dumps(_entities(request), sort_keys=True)
            entities: cedarpy.Entities | str
            try:
                entities = loaded.entities(text)
            except ValueError:
                # Entities the schema refuses: Cedar's own answer for them (an evaluation
                # error, a deny), as without the cache.
                entities = text
            result = cedarpy.is_authorized(cedar_request, loaded.policies, entities,
                                           schema=loaded.schema)
            decision = result.decision
            reasons = list(result.diagnostics.reasons)
            errors = tuple(str(e) for e in result.diagnostics.errors)
        except Exception as e:
            # The engine itself failed (not a policy outcome): fail closed with 503.
            raise TemporarilyUnavailableError("Policy engine unavailable",
                                              debug=f"cedarpy raised {type(e).__name__}") from e

        unknown = [r for r in reasons if r not in loaded.info]
        policies = [loaded.info[r] for r in reasons if r in loaded.info]
        ids = tuple(sorted(p.policy_id for p in policies))
        if errors or unknown:
            return PolicyDecision("deny", ids, REASON_EVALUATION_ERROR, within,
                                  errors + tuple(f"unknown policy {r}" for r in unknown))
        if decision == cedarpy.Decision.Allow:
            return PolicyDecision("allow", ids, REASON_ALLOWED, within)
        if decision != cedarpy.Decision.Deny:
            return PolicyDecision("deny", ids, REASON_EVALUATION_ERROR, within,
                                  (f"decision {decision.value}",))
        if not policies:
            return PolicyDecision("deny", ids, REASON_NO_PERMIT, within)
        hard = [p for p in policies if not (p.effect == "forbid" and p.step_up)]
        if not hard:
            return PolicyDecision("step_up", ids, REASON_NEEDS_CONFIRMATION, within)
        return PolicyDecision("deny", ids, _pick_reason(hard), within)


def _pick_reason(hard: Sequence[_PolicyInfo]) -> str:
    reasons = {p.reason or REASON_NO_PERMIT for p in hard}
    for preferred in _REASON_PRIORITY:
        if preferred in reasons:
            return preferred
    return sorted(reasons)[0]


def _entities(request: PolicyRequest) -> list[dict[str, Any]]:
    return [
        {"uid": {"type": "User", "id": request.user_id},
         "attrs": {"tenant": request.tenant, "roles": list(request.roles),
                   "groups": list(request.groups)},
         "parents": []},
        {"uid": {"type": "Platform", "id": request.platform}, "attrs": {}, "parents": []},
    ]


def _context(request: PolicyRequest, within: bool, approved: bool) -> dict[str, Any]:
    intent, mandate, platform = request.intent, request.mandate, request.platform
    return {
        "platform": platform,
        "intent": {
            "action": intent.action,
            "resource": intent.resource,
            "record_type": intent.record_type,
            "count": intent.count,
            "is_read": intent.action_class == "read",
            "is_write": intent.action_class == "write",
            "is_destructive": intent.is_destructive,
            "is_bulk": intent.is_bulk,
            "hash": intent.hash(),
        },
        "mandate": {
            "present": mandate is not None,
            "channel": mandate.channel if mandate else "",
            "actions": sorted(mandate.actions_for(platform)) if mandate else [],
            "within": within,
            "within_count": bool(mandate and mandate.within_count(platform, intent)),
            "max_count": mandate.max_count(platform, intent) if mandate else 0,
        },
        "agent": {
            "id": request.agent_id,
            # Secure default: no allowlist configured = nothing allowlisted.
            "allowed_platforms": sorted(request.agent_allowed_platforms or ()),
            "allowed_actions": sorted(request.agent_allowed_actions or ()),
        },
        # The agent's own words about its context (intent.context): never the signed
        # channel, which is mandate.channel.
        "agent_declared": {
            "channel": intent.context.channel,
            "environment": intent.context.environment,
        },
        "approved": approved,
    }


def policy_request_from_case(case: Mapping[str, Any]) -> PolicyRequest:
    """Build a PolicyRequest from a `policies/cases/**.json` scenario (see policies/README.md)."""
    req = case["request"]
    user, agent = req["user"], req["agent"]
    intent = parse_intent(json.dumps(req["intent"]), None)
    if intent is None:  # parse_intent returns None only when given nothing
        raise ValueError("case without intent")
    mandate = parse_mandate([req["mandate"]]) if req.get("mandate") is not None else None
    return PolicyRequest(
        user_id=user["id"], tenant=user["tenant"], roles=user.get("roles", []),
        groups=user.get("groups", []), agent_id=agent["id"],
        agent_allowed_platforms=agent.get("allowed_platforms"),
        agent_allowed_actions=agent.get("allowed_actions"),
        platform=req["platform"], intent=intent, mandate=mandate,
        approved=req.get("approved", False),
    )
