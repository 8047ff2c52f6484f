"""The demo's five scenarios: what happens, what each expects, what was observed.

Each scenario is a function of `Play` that narrates its steps and returns a `ScenarioResult`
whose checks compare expected and observed values; `run_all` runs them in order and never lets
one failure hide the others. The policy named for a decision is read back from the audit
record with the step's correlation id (the client only ever sees the error code).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from authserver.demo.agent import Agent, Call, Exchange, intent
from authserver.demo.browser import Browser
from authserver.demo.edge import Edge, Grant, mandate
from authserver.demo.narrate import Check, Narrator, ScenarioResult, Step
from authserver.demo.stack import EXTRA_STALE_DEAL, DemoStack

HTTP_TIMEOUT = 10
PARALLEL_CALLS = 20
ACME = "acme-123"
BOARD = "42"
AUDIT_LIMIT = 1000


class Play:
    """Everything the scenarios share: the stack, the edge, the agent, the people's browsers."""

    def __init__(self, stack: DemoStack, browsers: dict[str, Browser],
                 narrator: Narrator) -> None:
        self.stack = stack
        self.browsers = browsers
        self.say = narrator
        self.run_id = secrets.token_hex(3)
        self._seq = 0
        assert stack.edge.client_secret and stack.edge_at_idp.client_secret
        assert stack.agent.private_jwk is not None
        from authserver.demo.stack import EDGE_REDIRECT_URI

        self.edge = Edge(idp_url=stack.idp_url, idp_client_id=stack.edge_at_idp.client_id,
                         idp_client_secret=stack.edge_at_idp.client_secret,
                         redirect_uri=EDGE_REDIRECT_URI, issuer=stack.issuer,
                         client_id=stack.edge.client_id, client_secret=stack.edge.client_secret)
        self.agent = Agent(issuer=stack.issuer, client_id=stack.agent.client_id,
                           private_jwk=stack.agent.private_jwk)
        self.user_ids: dict[str, str] = {}

    # --- helpers ---------------------------------------------------------------------------------

    def cid(self, tag: str) -> str:
        """A correlation id we choose and send as X-Request-ID, so the audit can be joined."""
        self._seq += 1
        return f"demo-{self.run_id}-{self._seq:02d}-{tag}"

    def admin(self, method: str, path: str, *, cid: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.stack.admin_token or ''}"}
        if cid is not None:
            headers["X-Request-ID"] = cid
        return requests.request(method, f"{self.stack.issuer}/admin{path}", headers=headers,
                                timeout=HTTP_TIMEOUT)

    def audit_events(self) -> list[dict[str, Any]]:
        resp = self.admin("GET", f"/audit?limit={AUDIT_LIMIT}")
        if resp.status_code != 200:
            raise RuntimeError(f"GET /admin/audit answered {resp.status_code}")
        events = resp.json()
        return events if isinstance(events, list) else []

    def audit_for(self, correlation_id: str) -> list[dict[str, Any]]:
        return [e for e in self.audit_events() if e.get("correlation_id") == correlation_id]

    def decided_by(self, correlation_id: str, event: str = "token_exchange"
                   ) -> tuple[str | None, str | None]:
        """(policy ids, reason) of the audit record of `event` with this correlation id."""
        try:
            records = [e for e in self.audit_for(correlation_id)
                       if e.get("event") == event]
        except (requests.RequestException, RuntimeError, ValueError):
            return None, None
        if not records:
            return None, None
        last = records[-1]
        return ",".join(last.get("policy_ids") or []) or None, last.get("reason")

    def mint(self, result: ScenarioResult, username: str, request: str,
             grants: list[Grant]) -> str | None:
        """The edge signs `username` in at the IdP and mints the assertion for the agent."""
        id_token = self.edge.sign_in(username)
        cid = self.cid(f"mint-{username}")
        minted = self.edge.mint(id_token, actor_token=self.agent.actor_token(),
                                dpop_jkt=self.agent.dpop_jkt,
                                authorization_details=mandate(request, grants),
                                correlation_id=cid)
        what = "; ".join(f"{g.platform}: {'/'.join(g.actions)} {', '.join(g.resources)} "
                         f"(≤{g.max_count} at a time)" for g in grants)
        pronoun = {"alice": "her", "bob": "his"}.get(username, "their")
        step = Step(f"{username.title()} signs in at the IdP; the edge mints {pronoun} "
                    f"assertion for the agent with the mandate [{what}]",
                    "minted" if minted.ok else f"refused: {minted.error}", None, cid)
        self.record(result, step)
        if minted.ok and minted.assertion:
            self.user_ids[username] = _jwt_sub(minted.assertion)
        return minted.assertion

    def exchange(self, result: ScenarioResult, text: str, assertion: str, platform: str,
                 what: dict[str, Any], *, cid: str | None = None,
                 approval_id: str | None = None) -> Exchange:
        cid = cid or self.cid(f"{what['action']}-{platform}")
        outcome = self.agent.exchange(assertion, platform, what, correlation_id=cid,
                                      approval_id=approval_id)
        policy, reason = self.decided_by(cid)
        decision = outcome.decision + (f" ({reason})" if reason and not outcome.ok else "")
        self.record(result, Step(text, decision, policy, cid))
        return outcome

    def call(self, result: ScenarioResult, text: str, token: Any, method: str, platform: str,
             path: str, *, cid: str, body: Any = None) -> Call:
        outcome = self.agent.call(token, method, platform, path, correlation_id=cid, body=body)
        self.record(result, Step(f"{text} → HTTP {outcome.status}", None, None, cid))
        return outcome

    def record(self, result: ScenarioResult, step: Step) -> None:
        result.steps.append(step)
        self.say.step(step)


def _jwt_sub(token: str) -> str:
    """The `sub` of a JWT we received (display and admin calls only; never a trust decision)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def _revoked_count(body: Any) -> int | None:
    """HTTP contract: `revoked_connections` (a list); the server also says how many as
    `downstream_grants_revoked`. Either is accepted, as a count."""
    if not isinstance(body, dict):
        return None
    listed = body.get("revoked_connections")
    if isinstance(listed, list):
        return len(listed)
    count = body.get("downstream_grants_revoked")
    return count if isinstance(count, int) else None


def _status(call: Call | None) -> int | None:
    return None if call is None else call.status


# --- 1. read on behalf of the user --------------------------------------------------------------


def scenario_read(play: Play) -> ScenarioResult:
    result = ScenarioResult("1", "What's the latest on the Acme deal?")
    play.say.scenario(result.key, result.title)
    request = "What's the latest on the Acme deal?"
    grants = [Grant("crm", ("read",), ("deal:*",), 1)]
    seen: dict[str, dict[str, Any]] = {}
    for username in ("alice", "bob"):
        play.say.say(f"{username.title()} asks the chat: “{request}”")
        assertion = play.mint(result, username, request, grants)
        if assertion is None:
            seen[username] = {"exchange": "no assertion"}
            continue
        cid = play.cid(f"read-{username}")
        ex = play.exchange(result, f"The agent exchanges {username.title()}'s assertion with "
                           f"intent read deal:{ACME}", assertion, "crm",
                           intent("read", f"deal:{ACME}", request=request), cid=cid)
        call = None
        if ex.token is not None:
            call = play.call(result, f"The agent calls GET /gateway/crm/deals/{ACME}", ex.token,
                             "GET", "crm", f"deals/{ACME}", cid=cid)
        body = call.body if call is not None and isinstance(call.body, dict) else {}
        seen[username] = {"exchange": ex.decision, "status": _status(call), "body": body}
        if call is not None and call.status == 200:
            play.say.say(f"   Acme: {body.get('name')} — stage {body.get('stage')}, "
                         f"${body.get('amount'):,}" if isinstance(body.get("amount"), int)
                         else f"   Acme: {body}")
        elif call is not None:
            play.say.say(f"   The CRM itself refuses: {username.title()} does not own the deal "
                         f"(the gateway relays only {body.get('error', call.status)}).")
    alice, bob = seen.get("alice", {}), seen.get("bob", {})
    result.checks = [
        Check("alice: exchange", "allowed", alice.get("exchange")),
        Check("alice: gateway status", 200, alice.get("status")),
        Check("alice: deal returned", "Acme Corp renewal", alice.get("body", {}).get("name")),
        Check("bob: exchange (inside his mandate)", "allowed", bob.get("exchange")),
        Check("bob: CRM refuses (not his deal)", 403, bob.get("status")),
        Check("bob: downstream text not passed through", "platform_error",
              bob.get("body", {}).get("error")),
    ]
    return result


# --- 2. read, then write with step-up -----------------------------------------------------------


def scenario_write(play: Play) -> ScenarioResult:
    result = ScenarioResult("2", "Create a follow-up task for every stale deal")
    play.say.scenario(result.key, result.title)
    request = "Create a follow-up task for every stale deal"
    grants = [Grant("crm", ("read",), ("deals?stage=stale",), 1),
              Grant("projects", ("create",), (f"board:{BOARD}/tasks",), 1)]
    play.say.say(f"Alice asks the chat: “{request}”")
    assertion = play.mint(result, "alice", request, grants)
    facts: dict[str, Any] = {}
    result.facts = facts
    if assertion is None:
        result.checks = [Check("assertion minted", True, False)]
        return result
    cid = play.cid("read-stale")
    read = play.exchange(result, "The agent declares intent read deals?stage=stale", assertion,
                         "crm", intent("read", "deals?stage=stale", request=request), cid=cid)
    stale: list[dict[str, Any]] = []
    if read.token is not None:
        call = play.call(result, "GET /gateway/crm/deals?stage=stale", read.token, "GET", "crm",
                         "deals?stage=stale", cid=cid)
        if call.status == 200 and isinstance(call.body, dict):
            stale = [d for d in call.body.get("deals", []) if isinstance(d, dict)]
    play.say.say(f"   Stale deals: {', '.join(d.get('id', '?') for d in stale) or 'none'}")
    facts["stale_deals"] = [d.get("id") for d in stale]
    tasks_before = len(play.stack.projects.tasks.get(BOARD, []))

    cid = play.cid("create-tasks")
    what = intent("create", f"board:{BOARD}/tasks", request=request, count=max(len(stale), 1))
    first = play.exchange(result, f"The agent declares intent create board:{BOARD}/tasks "
                          f"count={what['count']} (the mandate allows 1 at a time)",
                          assertion, "projects", what, cid=cid)
    approval_id = first.body.get("approval_id") if isinstance(first.body, dict) else None
    pending = approved = final = None
    statuses: list[int] = []
    if approval_id:
        play.say.say(f"   Approval requested: {first.body.get('approval_uri')}")
        pending = play.exchange(result, "The agent polls with approval_id before Alice decides",
                                assertion, "projects", what, cid=cid,
                                approval_id=str(approval_id))
        try:
            play.browsers["alice"].approve(str(approval_id))
            approved = "approved"
        except Exception as e:  # reported as an observation
            approved = f"failed: {e}"
        play.record(result, Step("Alice opens the approval page and approves", approved, None,
                                 None))
        final = play.exchange(result, "The agent repeats the exchange with approval_id",
                              assertion, "projects", what, cid=cid,
                              approval_id=str(approval_id))
        if final.token is not None:
            for deal in stale:
                call = play.call(result, f"POST /gateway/projects/boards/{BOARD}/tasks "
                                 f"(follow up {deal.get('id')})", final.token, "POST", "projects",
                                 f"boards/{BOARD}/tasks", cid=cid,
                                 body={"title": f"Follow up: {deal.get('name')}",
                                       "description": f"deal:{deal.get('id')} is stale"})
                statuses.append(call.status)
    tasks_after = len(play.stack.projects.tasks.get(BOARD, []))
    facts["tasks_created"] = tasks_after - tasks_before
    expected_stale = sorted(["globex-7", EXTRA_STALE_DEAL[0]])
    result.checks = [
        Check("read stale deals", "allowed", read.decision),
        Check("stale deals found", expected_stale, sorted(str(d.get("id")) for d in stale)),
        Check("write beyond the mandate's count", "approval_required", first.decision),
        Check("poll before the decision", "authorization_pending",
              None if pending is None else pending.decision),
        Check("Alice approves on the page", "approved", approved),
        Check("exchange after approval", "allowed", None if final is None else final.decision),
        Check("tasks created via the gateway", [201, 201], statuses),
        Check("tasks on the board", 2, facts["tasks_created"]),
    ]
    return result


# --- 3. prompt injection ------------------------------------------------------------------------


def scenario_injection(play: Play) -> ScenarioResult:
    result = ScenarioResult("3", "Prompt injection in a CRM note")
    play.say.scenario(result.key, result.title)
    request = "Summarise the notes on the Acme deal"
    # The Acme deal and what lies under it (its notes); never `deal:acme-1234`.
    grants = [Grant("crm", ("read",), (f"deal:{ACME}", f"deal:{ACME}/*"), 1)]
    play.say.say(f"Alice asks the chat: “{request}”")
    assertion = play.mint(result, "alice", request, grants)
    if assertion is None:
        result.checks = [Check("assertion minted", True, False)]
        return result
    deals_before = sorted(play.stack.crm.deals)
    cid = play.cid("read-notes")
    read = play.exchange(result, f"The agent declares intent read deal:{ACME}/notes", assertion,
                         "crm", intent("read", f"deal:{ACME}/notes", request=request), cid=cid)
    injected = False
    if read.token is not None:
        call = play.call(result, f"GET /gateway/crm/deals/{ACME}/notes", read.token, "GET", "crm",
                         f"deals/{ACME}/notes", cid=cid)
        notes = call.body.get("notes", []) if isinstance(call.body, dict) else []
        for note in notes:
            if "delete all deals" in str(note.get("body", "")).lower():
                injected = True
                play.say.say(f"   A note says: “{note.get('body')}” — the scripted agent is "
                             f"fooled")
    cid = play.cid("bulk-delete")
    attack = play.exchange(result, "The agent declares intent bulk_delete deals",
                           assertion, "crm",
                           intent("bulk_delete", "deals", request=request,
                                  count=len(deals_before)), cid=cid)
    _, reason = play.decided_by(cid)
    deals_after = sorted(play.stack.crm.deals)
    play.say.say(f"   Deals in the CRM: {len(deals_after)} (was {len(deals_before)})")
    result.facts = {"deals_before": deals_before, "deals_after": deals_after,
                    "audit_reason": reason, "correlation_id": cid}
    result.checks = [
        Check("read the notes", "allowed", read.decision),
        Check("injected instruction seen", True, injected),
        Check("bulk_delete exchange", "access_denied", attack.error),
        Check("bulk_delete status", 403, attack.status),
        Check("audited as", "intent_mismatch", reason),
        Check("deals deleted", 0, len(set(deals_before) - set(deals_after))),
    ]
    return result


# --- 4. concurrent refresh ----------------------------------------------------------------------


def scenario_refresh(play: Play) -> ScenarioResult:
    result = ScenarioResult("4", f"The CRM token expires; {PARALLEL_CALLS} parallel calls")
    play.say.scenario(result.key, result.title)
    request = "What's the latest on the Acme deal?"
    assertion = play.mint(result, "alice", request, [Grant("crm", ("read",), ("deal:*",), 1)])
    if assertion is None:
        result.checks = [Check("assertion minted", True, False)]
        return result
    cid = play.cid("read-parallel")
    ex = play.exchange(result, f"The agent declares intent read deal:{ACME}", assertion, "crm",
                       intent("read", f"deal:{ACME}", request=request), cid=cid)
    expired = requests.post(f"{play.stack.crm_url}/_admin/expire", timeout=HTTP_TIMEOUT)
    play.record(result, Step("The CRM expires every access token it issued",
                             "expired" if expired.ok else f"HTTP {expired.status_code}"))
    before = play.stack.crm.stats
    statuses: list[int] = []
    if ex.token is not None:
        token = ex.token
        barrier = threading.Barrier(PARALLEL_CALLS)

        def one(i: int) -> int:
            barrier.wait(timeout=HTTP_TIMEOUT)
            return play.agent.call(token, "GET", "crm", f"deals/{ACME}",
                                   correlation_id=f"{cid}-{i:02d}").status

        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            statuses = list(pool.map(one, range(PARALLEL_CALLS)))
    after = play.stack.crm.stats
    delta = {k: after[k] - before[k] for k in ("refresh", "refresh_reuse", "token_error")}
    ok_calls = sum(s == 200 for s in statuses)
    play.record(result, Step(f"{PARALLEL_CALLS} gateway calls at once: {ok_calls} answered 200; "
                             f"the CRM saw {delta['refresh']} refresh",
                             "one refresh" if delta["refresh"] == 1 else
                             f"{delta['refresh']} refreshes", None, cid))
    result.facts = {"statuses": statuses, "crm_delta": delta}
    result.checks = [
        Check("exchange", "allowed", ex.decision),
        Check("calls answered 200", PARALLEL_CALLS, ok_calls),
        Check("refreshes at the CRM", 1, delta["refresh"]),
        Check("refresh-token reuse (would log Alice out)", 0, delta["refresh_reuse"]),
    ]
    return result


# --- 5. deprovisioning --------------------------------------------------------------------------


def scenario_deprovision(play: Play) -> ScenarioResult:
    result = ScenarioResult("5", "Alice leaves the company")
    play.say.scenario(result.key, result.title)
    request = "What's the latest on the Acme deal?"
    assertion = play.mint(result, "alice", request, [Grant("crm", ("read",), ("deal:*",), 1)])
    if assertion is None:
        result.checks = [Check("assertion minted", True, False)]
        return result
    cid = play.cid("read-before-leaving")
    ex = play.exchange(result, f"The agent holds a capability for read deal:{ACME}", assertion,
                       "crm", intent("read", f"deal:{ACME}", request=request), cid=cid)
    stats_before = play.stack.platform_stats()
    user_id = play.user_ids.get("alice", "")
    cid = play.cid("deprovision")
    resp = play.admin("POST", f"/users/{user_id}/deprovision", cid=cid)
    body = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") \
        else {}
    revoked = _revoked_count(body)
    play.record(result, Step(f"IT deprovisions Alice (POST /admin/users/…/deprovision → "
                             f"HTTP {resp.status_code}); downstream connections revoked: "
                             f"{revoked}",
                             "deprovisioned" if resp.ok else f"HTTP {resp.status_code}",
                             None, cid))
    call = None
    if ex.token is not None:
        cid_after = play.cid("call-after-leaving")
        call = play.call(result, f"The agent's very next call: GET /gateway/crm/deals/{ACME}",
                         ex.token, "GET", "crm", f"deals/{ACME}", cid=cid_after)
    again = play.exchange(result, "The agent tries a new exchange with Alice's assertion",
                          assertion, "crm", intent("read", f"deal:{ACME}", request=request))
    stats_after = play.stack.platform_stats()
    grants = {p: {"revoked": stats_after[p]["revoked"] - stats_before[p]["revoked"],
                  "active_grants": [stats_before[p]["active_grants"],
                                    stats_after[p]["active_grants"]]}
              for p in ("crm", "projects")}
    result.facts = {"deprovision_status": resp.status_code, "revoked_connections": revoked,
                    "platforms": grants, "call_after_status": _status(call),
                    "exchange_after": again.decision}
    result.checks = [
        Check("deprovisioned", 200, resp.status_code),
        Check("connections revoked (authserver's count)", 2, revoked),
        Check("next gateway call", 401, _status(call)),
        Check("next exchange refused", True, not again.ok and again.status in (400, 401, 403)),
        Check("CRM grant revoked at the CRM", 1, grants["crm"]["revoked"]),
        Check("Taskboard grant revoked at Taskboard", 1, grants["projects"]["revoked"]),
    ]
    return result


SCENARIOS: tuple[Callable[[Play], ScenarioResult], ...] = (
    scenario_read, scenario_write, scenario_injection, scenario_refresh, scenario_deprovision,
)


def run_all(play: Play, scenarios: tuple[Callable[[Play], ScenarioResult], ...] = SCENARIOS
            ) -> list[ScenarioResult]:
    results = []
    for number, scenario in enumerate(scenarios, start=1):
        try:
            result = scenario(play)
        except Exception as e:  # one must not hide the others
            result = ScenarioResult(str(number), scenario.__name__.removeprefix("scenario_"),
                                    error=f"{type(e).__name__}: {e}")
        play.say.outcome(result)
        results.append(result)
    return results
