"""authserver.policy: the Cedar decision point (Part A3), the default policy set and its cases."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from authserver.errors import TemporarilyUnavailableError
from authserver.policy import (
    SCHEMA_FILE,
    PolicyEngine,
    PolicyLoadError,
    PolicyRequest,
    policy_request_from_case,
)

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
CASE_FILES = sorted((POLICY_DIR / "cases").glob("*/*.json"))
OUTCOMES = {"ALLOW": "allow", "DENY": "deny", "STEP_UP": "step_up"}


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.load(POLICY_DIR)


def load_case(name: str) -> dict[str, Any]:
    matches = [p for p in CASE_FILES if p.stem == name]
    assert len(matches) == 1
    return json.loads(matches[0].read_text())


def case_request(name: str, **overrides: Any) -> PolicyRequest:
    return dataclasses.replace(policy_request_from_case(load_case(name)), **overrides)


def policy_dir(tmp_path: Path, policies: str, schema: str | None = None) -> Path:
    """A policy directory with the default schema (or `schema`) and one policy file."""
    (tmp_path / SCHEMA_FILE).write_text(schema if schema is not None else
                                        (POLICY_DIR / SCHEMA_FILE).read_text())
    (tmp_path / "policies.cedar").write_text(policies)
    return tmp_path


PERMIT_ALL = '@id("permit-all")\npermit (principal, action, resource);\n'


# --- the default set and its named scenarios --------------------------------------------------


def test_cases_cover_every_outcome() -> None:
    assert {p.parent.name for p in CASE_FILES} == set(OUTCOMES)


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case(engine: PolicyEngine, path: Path) -> None:
    case = json.loads(path.read_text())
    decision = engine.decide(policy_request_from_case(case))
    assert decision.outcome == OUTCOMES[path.parent.name]
    assert decision.errors == ()
    expect = case.get("expect", {})
    if "reason" in expect:
        assert decision.reason == expect["reason"]
    if "policy_ids" in expect:
        assert list(decision.policy_ids) == expect["policy_ids"]


PERMITTED_CASES = [p for p in CASE_FILES if p.parent.name != "DENY"]


@pytest.mark.parametrize("path", PERMITTED_CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case_pins_the_methods_its_capability_allows_at_the_gateway(path: Path) -> None:
    """The method-action rule (issue 20, finding 1): each allowed or confirmable case says
    which HTTP methods its capability may use, and the gateway's own check agrees, on a route
    that does not narrow them. Cedar decides the action; the gateway holds it to its methods."""
    from types import SimpleNamespace

    from authserver import gateway
    from authserver.broker.profiles import Platform
    from authserver.errors import ResourceForbiddenError
    from authserver.intent import GATEWAY_METHODS
    from authserver.store.memory import MemoryStore

    case = json.loads(path.read_text())
    intent = case["request"]["intent"]
    platform = Platform.from_settings("p", {
        "authorize_url": "https://p.example/authorize", "token_url": "https://p.example/token",
        "revocation_url": "https://p.example/revoke", "client_id": "c", "client_secret": "s",
        "resources": {intent["resource"]: "records/r"}})
    services = SimpleNamespace(store=MemoryStore(clock=lambda: 0.0))
    allowed = []
    for method in sorted(GATEWAY_METHODS):
        claims = {"jti": f"j-{method}", "exp": 60, "authorization_details": [
            {"type": "agent_intent", "actions": [intent["action"]],
             "identifier": intent["resource"], "count": intent.get("count", 1)}]}
        req = gateway.GatewayRequest(platform="p", path="records/r", method=method,
                                     url="https://as.example/gateway/p/records/r",
                                     authorization=[], dpop=[])
        try:
            gateway.check_fits_intent(services, platform, req, claims, now=0)  # type: ignore[arg-type]
        except ResourceForbiddenError:
            continue
        allowed.append(method)
    assert allowed == case["expect"]["gateway_methods"]
    assert ("DELETE" in allowed) == (intent["action"] in ("delete", "bulk_delete"))


def test_default_set_loads_with_annotated_ids(engine: PolicyEngine) -> None:
    assert "deny-outside-mandate" in engine.policy_ids
    assert "confirm-destructive" in engine.policy_ids


def test_within_mandate_reported(engine: PolicyEngine) -> None:
    assert engine.decide(case_request("read-deal-inside-mandate")).within_mandate
    assert not engine.decide(case_request("read-outside-mandate-resource")).within_mandate
    assert not engine.decide(case_request("no-mandate")).within_mandate


def test_outside_mandate_is_intent_mismatch(engine: PolicyEngine) -> None:
    decision = engine.decide(case_request("read-outside-mandate-resource"))
    assert decision.is_intent_mismatch


def test_intent_mismatch_wins_over_not_allowlisted(engine: PolicyEngine) -> None:
    request = case_request("read-outside-mandate-resource", agent_allowed_platforms=["tasks"])
    decision = engine.decide(request)
    assert decision.outcome == "deny"
    assert decision.reason == "intent_mismatch"
    assert decision.policy_ids == ("deny-agent-not-allowlisted", "deny-outside-mandate")


def test_no_allowlist_configured_denies(engine: PolicyEngine) -> None:
    request = case_request("read-deal-inside-mandate", agent_allowed_platforms=None,
                           agent_allowed_actions=None)
    decision = engine.decide(request)
    assert (decision.outcome, decision.reason) == ("deny", "not_allowlisted")


def test_approval_does_not_lift_hard_deny(engine: PolicyEngine) -> None:
    decision = engine.decide(case_request("read-outside-mandate-resource", approved=True))
    assert (decision.outcome, decision.reason) == ("deny", "intent_mismatch")


# --- the errored-forbid guard -----------------------------------------------------------------


ERRORING_FORBID = PERMIT_ALL + """
@id("forbid-overflowing")
@reason("too_many")
forbid (principal, action, resource)
when { context.intent.count * 4611686018427387904 > 0 };
"""


def test_errored_forbid_is_deny_even_though_cedar_allows(tmp_path: Path) -> None:
    path = policy_dir(tmp_path, ERRORING_FORBID)
    request = case_request("read-deal-inside-mandate")
    request = dataclasses.replace(request, intent=dataclasses.replace(request.intent, count=2))
    # What Cedar alone says: the forbid errors (integer overflow), is skipped, permit wins.
    raw = cedarpy.is_authorized(
        {"principal": {"type": "User", "id": "u"}, "action": {"type": "Action", "id": "read"},
         "resource": {"type": "Platform", "id": "crm"},
         "context": {"intent": {"count": 2}}},
        ERRORING_FORBID, [])
    assert raw.decision == cedarpy.Decision.Allow and raw.diagnostics.errors
    decision = PolicyEngine.load(path).decide(request)
    assert decision.outcome == "deny"
    assert decision.reason == "evaluation_error"
    assert decision.policy_ids == ("permit-all",)
    assert any("overflow" in e for e in decision.errors)


def test_forbid_that_evaluates_cleanly_denies_with_its_reason(tmp_path: Path) -> None:
    engine = PolicyEngine.load(policy_dir(tmp_path, ERRORING_FORBID))
    decision = engine.decide(case_request("read-deal-inside-mandate"))  # count 1: no overflow
    assert (decision.outcome, decision.reason) == ("deny", "too_many")


def test_request_not_matching_schema_is_evaluation_error(engine: PolicyEngine) -> None:
    request = case_request("read-deal-inside-mandate", roles=[1, 2])
    decision = engine.decide(request)
    assert (decision.outcome, decision.reason) == ("deny", "evaluation_error")
    assert decision.errors


ROLE_GATED = ('@id("permit-acme-admins")\npermit (principal, action, resource)\n'
              'when { principal.roles.contains("admin") && principal.tenant == "acme" '
              '&& resource == Platform::"crm" };\n')


def test_parsed_entities_are_reused_only_for_the_very_same_entities(tmp_path: Path) -> None:
    # Issue 18: the entity set Cedar parses is kept by its whole JSON text. The same user and
    # platform again is a hit; a changed role, tenant or platform is another entry, never the
    # old one's answer.
    engine = PolicyEngine.load(policy_dir(tmp_path, ROLE_GATED))
    admin = case_request("read-deal-inside-mandate", roles=["admin"], tenant="acme",
                         platform="crm")
    assert engine.decide(admin).outcome == "allow"
    assert engine.decide(admin).outcome == "allow"
    cache = engine._loaded.entities.cache_info()  # type: ignore[attr-defined]
    assert (cache.hits, cache.misses) == (1, 1)
    assert engine.decide(dataclasses.replace(admin, roles=[])).reason == "no_permit"
    assert engine.decide(dataclasses.replace(admin, tenant="other")).reason == "no_permit"
    assert engine.decide(dataclasses.replace(admin, platform="tasks")).reason == "no_permit"
    assert engine.decide(admin).outcome == "allow"


def test_entities_the_schema_refuses_are_not_kept(engine: PolicyEngine) -> None:
    request = case_request("read-deal-inside-mandate", roles=[1, 2])
    before = engine._loaded.entities.cache_info().currsize  # type: ignore[attr-defined]
    for _ in range(2):
        assert engine.decide(request).reason == "evaluation_error"
    assert engine._loaded.entities.cache_info().currsize == before  # type: ignore[attr-defined]


def test_one_cached_entity_set_serves_concurrent_decisions(tmp_path: Path) -> None:
    # gthread workers decide on several threads at once: the one parsed entity set the cache
    # hands them all gives every thread the same clean answer (no error, no other outcome).
    from concurrent.futures import ThreadPoolExecutor

    engine = PolicyEngine.load(policy_dir(tmp_path, ROLE_GATED))
    admin = case_request("read-deal-inside-mandate", roles=["admin"], tenant="acme",
                         platform="crm")
    other = dataclasses.replace(admin, roles=[])
    assert engine.decide(admin).outcome == "allow"  # parsed and kept once, on this thread

    def decide(i: int) -> tuple[str, str, tuple[str, ...]]:
        decision = engine.decide(admin if i % 2 == 0 else other)
        return decision.outcome, decision.reason, decision.errors

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(decide, range(400)))
    assert set(answers[0::2]) == {("allow", answers[0][1], ())}
    assert {outcome for outcome, _, _ in answers[1::2]} == {"deny"}
    assert {reason for _, reason, _ in answers[1::2]} == {"no_permit"}
    assert engine._loaded.entities.cache_info().currsize == 2  # type: ignore[attr-defined]


def test_reload_starts_a_new_entities_cache(tmp_path: Path) -> None:
    path = policy_dir(tmp_path, ROLE_GATED)
    engine = PolicyEngine.load(path)
    admin = case_request("read-deal-inside-mandate", roles=["admin"], tenant="acme",
                         platform="crm")
    assert engine.decide(admin).outcome == "allow"
    (path / "policies.cedar").write_text(ROLE_GATED.replace('"admin"', '"owner"'))
    engine.reload()
    assert engine._loaded.entities.cache_info().currsize == 0  # type: ignore[attr-defined]
    assert engine.decide(admin).reason == "no_permit"


def test_engine_failure_is_temporarily_unavailable(engine: PolicyEngine,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine crashed")

    monkeypatch.setattr(cedarpy, "is_authorized", explode)
    with pytest.raises(TemporarilyUnavailableError) as excinfo:
        engine.decide(case_request("read-deal-inside-mandate"))
    assert excinfo.value.status_code == 503
    assert excinfo.value.error == "temporarily_unavailable"


# --- step-up semantics ------------------------------------------------------------------------


def test_no_matching_permit_is_no_permit(tmp_path: Path) -> None:
    engine = PolicyEngine.load(policy_dir(
        tmp_path, '@id("permit-create")\npermit (principal, action == Action::"create", '
        'resource);'))
    decision = engine.decide(case_request("read-deal-inside-mandate"))
    assert (decision.outcome, decision.reason, decision.policy_ids) == ("deny", "no_permit", ())


def test_step_up_not_offered_when_approval_would_not_allow(tmp_path: Path) -> None:
    # Only a step-up forbid matches, but no permit would allow it after confirmation.
    engine = PolicyEngine.load(policy_dir(tmp_path, """
@id("permit-create")
permit (principal, action == Action::"create", resource);
@id("confirm-all")
@step_up
forbid (principal, action, resource) unless { context.approved };
"""))
    decision = engine.decide(case_request("read-deal-inside-mandate"))
    assert (decision.outcome, decision.reason) == ("deny", "no_permit")


def test_step_up_that_approval_cannot_lift_is_deny(tmp_path: Path) -> None:
    engine = PolicyEngine.load(policy_dir(tmp_path, PERMIT_ALL + """
@id("confirm-always")
@step_up("true")
forbid (principal, action, resource);
"""))
    decision = engine.decide(case_request("read-deal-inside-mandate"))
    assert (decision.outcome, decision.reason) == ("deny", "needs_confirmation")
    approved = engine.decide(case_request("read-deal-inside-mandate", approved=True))
    assert (approved.outcome, approved.reason) == ("deny", "needs_confirmation")


# --- loading ----------------------------------------------------------------------------------


def test_load_rejects_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=r"policies\.cedar"):
        PolicyEngine.load(policy_dir(tmp_path, '@id("broken")\npermit (principal, action'))


def test_load_rejects_schema_violation_unknown_attribute(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=r"policies\.cedar"):
        PolicyEngine.load(policy_dir(tmp_path, '@id("bad-attr")\npermit (principal, action, '
                                     'resource) when { context.intent.colour == "red" };'))


def test_load_rejects_schema_violation_unknown_action(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError):
        PolicyEngine.load(policy_dir(tmp_path, '@id("bad-action")\npermit (principal, '
                                     'action == Action::"export", resource);'))


def test_load_rejects_type_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError):
        PolicyEngine.load(policy_dir(tmp_path, '@id("bad-type")\npermit (principal, action, '
                                     'resource) when { context.intent.count == "1" };'))


def test_load_rejects_invalid_schema(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=SCHEMA_FILE):
        PolicyEngine.load(policy_dir(tmp_path, PERMIT_ALL, schema="entity User = {"))


def test_load_rejects_missing_schema(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(PERMIT_ALL)
    with pytest.raises(PolicyLoadError):
        PolicyEngine.load(tmp_path)


def test_load_rejects_directory_without_policies(tmp_path: Path) -> None:
    (tmp_path / SCHEMA_FILE).write_text((POLICY_DIR / SCHEMA_FILE).read_text())
    with pytest.raises(PolicyLoadError):
        PolicyEngine.load(tmp_path)


def test_load_rejects_policy_without_id(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="@id"):
        PolicyEngine.load(policy_dir(tmp_path, "permit (principal, action, resource);"))


def test_load_rejects_duplicate_id(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="duplicate"):
        PolicyEngine.load(policy_dir(tmp_path, PERMIT_ALL + PERMIT_ALL))


def test_load_rejects_forbid_without_reason_or_step_up(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="@reason"):
        PolicyEngine.load(policy_dir(tmp_path, PERMIT_ALL + '@id("f")\nforbid (principal, '
                                     'action, resource) when { context.approved };'))


def test_load_rejects_step_up_on_permit(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="only apply to forbid"):
        PolicyEngine.load(policy_dir(tmp_path, '@id("p")\n@step_up\npermit (principal, action, '
                                     'resource);'))


def test_load_rejects_step_up_with_other_value(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="@step_up"):
        PolicyEngine.load(policy_dir(tmp_path, PERMIT_ALL + '@id("f")\n@step_up("false")\n'
                                     'forbid (principal, action, resource);'))


def test_load_rejects_templates(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError):
        PolicyEngine.load(policy_dir(tmp_path, '@id("t")\npermit (principal == ?principal, '
                                     'action, resource);'))


# --- reload -----------------------------------------------------------------------------------


def test_reload_picks_up_edited_policies(tmp_path: Path) -> None:
    shutil.copytree(POLICY_DIR, tmp_path / "p", ignore=shutil.ignore_patterns("cases"))
    engine = PolicyEngine.load(tmp_path / "p")
    request = case_request("read-deal-inside-mandate")
    assert engine.decide(request).outcome == "allow"
    (tmp_path / "p" / "extra.cedar").write_text(
        '@id("deny-crm")\n@reason("platform_frozen")\n'
        'forbid (principal, action, resource == Platform::"crm");\n')
    engine.reload()
    decision = engine.decide(request)
    assert (decision.outcome, decision.reason) == ("deny", "platform_frozen")


def test_reload_failure_keeps_current_set(tmp_path: Path) -> None:
    shutil.copytree(POLICY_DIR, tmp_path / "p", ignore=shutil.ignore_patterns("cases"))
    engine = PolicyEngine.load(tmp_path / "p")
    (tmp_path / "p" / "extra.cedar").write_text("permit (principal,")
    with pytest.raises(PolicyLoadError):
        engine.reload()
    assert engine.decide(case_request("read-deal-inside-mandate")).outcome == "allow"


# --- issue 20 hardening: what the agent says about its context is named as such --------------

SIGNED_CHANNEL_ONLY = PERMIT_ALL + '''
@id("deny-outside-chat")
@reason("wrong_channel")
forbid (principal, action, resource)
unless { context.mandate.channel == "chat" };
'''


def test_agent_declared_context_has_a_name_that_says_so(tmp_path: Path) -> None:
    """`intent.context.channel`/`environment` are chosen by the agent: a policy sees them only
    as `context.agent_declared.*`; the edge-signed channel is `context.mandate.channel`."""
    declared = '''
@id("permit-when-declared")
permit (principal, action, resource)
when { context.agent_declared.channel == "chat" &&
       context.agent_declared.environment == "production" };
'''
    engine = PolicyEngine.load(policy_dir(tmp_path, declared))
    assert engine.decide(case_request("read-deal-inside-mandate")).outcome == "allow"


@pytest.mark.parametrize("name", ["channel", "environment"])
def test_agent_declared_context_is_not_offered_under_a_neutral_name(tmp_path: Path,
                                                                    name: str) -> None:
    with pytest.raises(PolicyLoadError):
        PolicyEngine.load(policy_dir(tmp_path, PERMIT_ALL + f'''
@id("deny-by-{name}")
@reason("declared")
forbid (principal, action, resource) when {{ context.{name} == "x" }};
'''))


def test_signed_channel_is_the_mandates_not_the_agents(tmp_path: Path) -> None:
    engine = PolicyEngine.load(policy_dir(tmp_path, SIGNED_CHANNEL_ONLY))
    case = load_case("read-deal-inside-mandate")
    case["request"]["mandate"]["channel"] = "email"  # the agent still declares "chat"
    decision = engine.decide(policy_request_from_case(case))
    assert (decision.outcome, decision.reason) == ("deny", "wrong_channel")
