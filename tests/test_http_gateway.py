"""The gateway over real HTTP (docs/standards.md A4-A5, RFC 9449 §7, DPOP-13/14/40-43).

One stack for the module (SQLite, embedded store): the IdP, Acme CRM and authserver on
loopback; alice and bob have connected the CRM through the user pages. Every capability token
comes from a real edge mint and agent exchange. A recorder in front of the CRM sees every token
the CRM issued and every API request that reached it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from authserver.store import keys as store_keys
from tests.gateway_helpers import (
    PlatformRecorder,
    assert_no_secret_in,
    capability,
    gateway_raw,
    raw_proof,
    raw_request,
    write_mandate,
)
from tests.stack import Stack, correlation, intent
from tests.store_helpers import CountingStore

CRM_DETAIL_MARKERS = ("AclDenied", "acl.py", "DealRepository", "deals_v2", "detail",
                      "You do not have permission", "No such deal")
ALGS = 'algs="'


@pytest.fixture(scope="module")
def stack(stack: Stack) -> Stack:
    """The module's stack (tests/conftest.py): the recorder in front of the CRM first, then
    alice and bob connected (the recorder sees their connections too)."""
    stack.recorder = PlatformRecorder.install(stack.crm)  # type: ignore[attr-defined]
    stack.responses = []  # type: ignore[attr-defined]
    for username in ("alice", "bob"):
        stack.signed_in_and_connected(username, ("crm",))
    return stack


@pytest.fixture
def recorder(stack: Stack) -> PlatformRecorder:
    return stack.recorder  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def alice_read(stack: Stack) -> tuple[str, Any]:
    """A read capability for deal:acme-123, reusable (≤ 60 s) with fresh proofs."""
    return capability(stack, "alice", intent("read", "deal:acme-123"))


def call(stack: Stack, token: str, key: Any, method: str, path: str,
         **kw: Any) -> requests.Response:
    resp = stack.gateway(token, key, method, f"crm/{path}", **kw)
    stack.responses.append(resp)  # type: ignore[attr-defined]
    return resp


def challenge(resp: Any) -> str:
    value = resp.headers.get("WWW-Authenticate") if hasattr(resp.headers, "get") else None
    assert value is not None, "no WWW-Authenticate challenge"
    return str(value)


# --- the happy path ---------------------------------------------------------------------------


def test_read_capability_reads_its_record(stack, alice_read):
    token, key = alice_read
    resp = call(stack, token, key, "GET", "deals/acme-123")
    assert resp.status_code == 200
    assert resp.json()["name"] == "Acme Corp renewal"
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_read_makes_one_store_call_the_proof_with_the_epoch(stack, alice_read, monkeypatch):
    # Issue 18: the DPoP replay entry and the connection's revocation epoch share one store
    # call (one Redis round trip); a read spends no budget, so that is the call's only one.
    counting = CountingStore()
    monkeypatch.setattr(stack.services, "store", counting)
    token, key = alice_read
    assert call(stack, token, key, "GET", "deals/acme-123").status_code == 200
    assert counting.calls == ["add_if_absent_and_get"]


def test_the_epoch_read_with_the_proof_refuses_a_token_from_before_a_revocation(
        stack, alice_read, monkeypatch):
    counting = CountingStore()
    monkeypatch.setattr(stack.services, "store", counting)
    counting.set(store_keys.connection_epoch(stack.user_id("alice"), "crm"), "9999999999")
    token, key = alice_read
    resp = call(stack, token, key, "GET", "deals/acme-123")
    assert resp.status_code == 401
    assert 'error="invalid_token"' in challenge(resp)
    assert 'error_description="The connection behind this token was revoked"' in challenge(resp)
    assert counting.calls == ["add_if_absent_and_get"]


def test_head_is_allowed_under_a_read_intent(stack, alice_read):
    token, key = alice_read
    resp = call(stack, token, key, "HEAD", "deals/acme-123")
    assert resp.status_code == 200


def test_response_strips_credentials_and_hop_by_hop_headers(stack, alice_read):
    token, key = alice_read
    resp = call(stack, token, key, "GET", "deals/acme-123")
    assert resp.status_code == 200
    names = {n.lower() for n in resp.headers}
    assert not names & {"authorization", "set-cookie", "www-authenticate", "proxy-authenticate",
                        "keep-alive", "proxy-connection", "upgrade", "te", "trailer"}


def test_write_capability_patches_once(stack):
    token, key = capability(stack, "alice", intent("update", "deal:globex-7",
                                                   request="Move Globex to qualified"),
                            details=write_mandate(request="Move Globex to qualified"))
    resp = call(stack, token, key, "PATCH", "deals/globex-7", json={"stage": "qualified"})
    assert resp.status_code == 200
    assert stack.crm.deals["globex-7"]["stage"] == "qualified"


# --- the request must fit the intent ----------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "PUT", "POST", "DELETE"])
def test_read_capability_cannot_write(stack, alice_read, recorder, method):
    token, key = alice_read
    before = dict(stack.crm.deals["acme-123"])
    seen = len(recorder.api_calls)
    resp = call(stack, token, key, method, "deals/acme-123", json={"stage": "lost"})
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"
    www = challenge(resp)
    assert www.startswith("DPoP ") and 'error="insufficient_scope"' in www and ALGS in www
    assert stack.crm.deals["acme-123"] == before
    assert len(recorder.api_calls) == seen  # nothing reached the CRM


def test_write_budget_is_spent_after_count_writes(stack):
    token, key = capability(stack, "alice", intent("update", "deal:globex-7",
                                                   request="Rename Globex"),
                            details=write_mandate(request="Rename Globex"))
    assert call(stack, token, key, "PATCH", "deals/globex-7",
                json={"name": "Globex expansion II"}).status_code == 200
    resp = call(stack, token, key, "PATCH", "deals/globex-7", json={"name": "Globex III"})
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"
    assert stack.crm.deals["globex-7"]["name"] == "Globex expansion II"


def test_write_capability_cannot_read(stack):
    token, key = capability(stack, "alice", intent("update", "deal:globex-7",
                                                   request="Touch Globex"),
                            details=write_mandate(request="Touch Globex"))
    resp = call(stack, token, key, "GET", "deals/globex-7")
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"


def test_capability_for_one_record_cannot_reach_another(stack, alice_read, recorder):
    token, key = alice_read
    seen = len(recorder.api_calls)
    resp = call(stack, token, key, "GET", "deals/globex-7")
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in challenge(resp)
    assert len(recorder.api_calls) == seen


@pytest.mark.parametrize("raw_path", [
    "crm/deals/acme-123/../globex-7",
    "crm/deals/acme-123/%2e%2e/globex-7",
    "crm/deals/acme-123/%2E%2E/globex-7",
    "crm/deals/acme-123%2F..%2Fglobex-7",
    "crm/deals/acme-123%252F..%252Fglobex-7",
    "crm/deals//acme-123",
    "crm/deals/acme-123//",
    "crm/deals/acme-123/",
    "crm/deals/./acme-123",
    "crm/deals/acme-123/notes",
    "crm/deals/acme-123?include=globex-7",
    "crm/deals/acme-123%00",
    "crm/deals/acme-123%5C..%5Cglobex-7",
    "crm/deals",
], ids=lambda p: p.replace("/", "|"))
def test_path_outside_the_intent_is_refused(stack, alice_read, recorder, raw_path):
    token, key = alice_read
    seen = len(recorder.api_calls)
    resp = gateway_raw(stack.issuer, token, key, "GET", raw_path)
    assert resp.status == 403, resp.body
    assert resp.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in (resp.header("WWW-Authenticate") or "")
    assert len(recorder.api_calls) == seen


def test_empty_first_segment_matches_no_gateway_route(stack, alice_read, recorder):
    """`/gateway/crm//deals/...` names no resource of ours at all: 404, nothing forwarded."""
    token, key = alice_read
    seen = len(recorder.api_calls)
    resp = gateway_raw(stack.issuer, token, key, "GET", "crm//deals/acme-123")
    assert resp.status == 404
    assert len(recorder.api_calls) == seen


def test_forwarded_target_is_the_intents_canonical_path(stack, alice_read, recorder):
    token, key = alice_read
    resp = gateway_raw(stack.issuer, token, key, "GET", "crm/deals/acme%2D123")
    assert resp.status == 200
    assert recorder.api_calls[-1].target == "/api/v1/deals/acme-123"


def test_capability_for_crm_is_refused_at_another_platform_gateway(stack, alice_read):
    token, key = alice_read
    resp = stack.gateway(token, key, "GET", "projects/boards/42")
    assert resp.status_code == 401
    assert 'error="invalid_token"' in challenge(resp)


def test_unknown_platform_is_refused(stack, alice_read):
    token, key = alice_read
    resp = stack.gateway(token, key, "GET", "nosuch/deals/acme-123")
    assert resp.status_code == 401
    assert 'error="invalid_token"' in challenge(resp)


# --- the platform's own permission boundary ---------------------------------------------------


def test_platform_boundary_holds_bob_cannot_read_alices_deal(stack, recorder):
    token, key = capability(stack, "bob", intent("read", "deal:acme-123"))
    resp = call(stack, token, key, "GET", "deals/acme-123")
    assert resp.status_code == 403
    body = resp.json()
    assert body == {"error": "platform_error", "status": 403, "summary": "Forbidden"}
    assert not any(marker in resp.text for marker in CRM_DETAIL_MARKERS)
    assert "WWW-Authenticate" not in resp.headers
    assert recorder.api_calls[-1].target == "/api/v1/deals/acme-123"  # the CRM said no


def test_platform_not_found_text_is_not_passed_through(stack):
    token, key = capability(stack, "alice", intent("read", "deal:nosuch-1"))
    resp = call(stack, token, key, "GET", "deals/nosuch-1")
    assert resp.status_code == 404
    assert resp.json() == {"error": "platform_error", "status": 404, "summary": "Not Found"}
    assert not any(marker in resp.text for marker in CRM_DETAIL_MARKERS)


# --- DPoP at the gateway (RFC 9449 §7, DPOP-13/14/40-43) --------------------------------------


def test_no_credentials_gets_a_bare_dpop_challenge(stack):
    resp = requests.get(stack.issuer + "/gateway/crm/deals/acme-123", timeout=30)
    assert resp.status_code == 401
    www = challenge(resp)
    assert www.startswith("DPoP ") and ALGS in www and "error=" not in www


def test_bearer_scheme_is_refused_as_invalid_token(stack, alice_read):
    token, _key = alice_read
    resp = requests.get(stack.issuer + "/gateway/crm/deals/acme-123",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 401
    www = challenge(resp)
    assert www.startswith("DPoP ") and 'error="invalid_token"' in www and ALGS in www


def test_missing_proof_is_invalid_dpop_proof(stack, alice_read):
    token, _key = alice_read
    resp = requests.get(stack.issuer + "/gateway/crm/deals/acme-123",
                        headers={"Authorization": f"DPoP {token}"}, timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(resp)


def test_proof_for_another_method_is_invalid_dpop_proof(stack, alice_read):
    token, key = alice_read
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    resp = requests.get(url, headers={"Authorization": f"DPoP {token}",
                                      "DPoP": raw_proof(key, "POST", url, token=token)},
                        timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(resp)


def test_proof_for_another_url_is_invalid_dpop_proof(stack, alice_read):
    token, key = alice_read
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    resp = requests.get(url, headers={
        "Authorization": f"DPoP {token}",
        "DPoP": raw_proof(key, "GET", stack.issuer + "/gateway/crm/deals/globex-7", token=token),
    }, timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(resp)


def test_proof_without_ath_is_invalid_dpop_proof(stack, alice_read):
    token, key = alice_read
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    resp = requests.get(url, headers={"Authorization": f"DPoP {token}",
                                      "DPoP": raw_proof(key, "GET", url)}, timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(resp)


def test_ath_mismatch_is_invalid_dpop_proof(stack, alice_read):
    token, key = alice_read
    other, _ = capability(stack, "alice", intent("read", "deal:acme-123"), key=key)
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    resp = requests.get(url, headers={"Authorization": f"DPoP {token}",
                                      "DPoP": raw_proof(key, "GET", url, token=other)},
                        timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(resp)


def test_replayed_proof_is_invalid_dpop_proof(stack, alice_read):
    token, key = alice_read
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    headers = {"Authorization": f"DPoP {token}", "DPoP": raw_proof(key, "GET", url, token=token)}
    assert requests.get(url, headers=headers, timeout=30).status_code == 200
    resp = requests.get(url, headers=headers, timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(resp)


def test_proof_by_another_key_is_invalid_token(stack, alice_read):
    token, _key = alice_read
    thief = stack.dpop_key()
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    resp = requests.get(url, headers={"Authorization": f"DPoP {token}",
                                      "DPoP": raw_proof(thief, "GET", url, token=token)},
                        timeout=30)
    assert resp.status_code == 401
    assert 'error="invalid_token"' in challenge(resp)


def test_two_authorization_headers_is_invalid_request(stack, alice_read):
    token, key = alice_read
    path = "/gateway/crm/deals/acme-123"
    resp = raw_request(stack.issuer, "GET", path, {
        "Authorization": f"DPoP {token}",
        "DPoP": raw_proof(key, "GET", stack.issuer + path, token=token),
    } | {"authorization": f"DPoP {token}"})
    assert resp.status == 400
    assert 'error="invalid_request"' in (resp.header("WWW-Authenticate") or "")


def test_user_assertion_is_not_a_gateway_token(stack):
    assertion, key = stack.edge_mint("alice")
    resp = stack.gateway(assertion, key, "GET", "crm/deals/acme-123")
    assert resp.status_code == 401
    assert 'error="invalid_token"' in challenge(resp)


# --- each action its own methods (issue 20, finding 1) ---------------------------------------


def _new_deal(stack: Stack, deal_id: str) -> None:
    stack.crm.deals[deal_id] = {"name": f"Deal {deal_id}", "owner": "alice", "stage": "open",
                                "amount": 1_000}


def _refused_without_reaching_the_crm(stack: Stack, recorder: PlatformRecorder,
                                      resp: requests.Response, description: str) -> None:
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"
    assert description in resp.json()["error_description"]
    www = challenge(resp)
    assert www.startswith("DPoP ") and 'error="insufficient_scope"' in www and ALGS in www


@pytest.mark.parametrize("actions", [("read", "update"), ("read", "update", "delete")],
                         ids=["delete-outside-mandate", "delete-inside-mandate"])
def test_update_capability_cannot_delete(stack, recorder, actions):
    deal = f"hooli-{len(actions)}"
    _new_deal(stack, deal)
    request = f"Move {deal} to negotiation"
    token, key = capability(stack, "alice", intent("update", f"deal:{deal}", request=request),
                            details=write_mandate(actions=actions, request=request))
    cid = correlation()
    seen = len(recorder.api_calls)
    resp = call(stack, token, key, "DELETE", f"deals/{deal}", headers={"X-Request-ID": cid})
    _refused_without_reaching_the_crm(stack, recorder, resp,
                                      "A 'update' intent does not allow DELETE")
    assert len(recorder.api_calls) == seen
    assert deal in stack.crm.deals
    [event] = stack.audit_for(cid)
    assert (event["event"], event["outcome"], event["reason"]) == \
        ("gateway_call", "denied", "insufficient_scope")
    assert event["detail"]["method"] == "DELETE"
    assert event["detail"]["forwarded_method"] is None
    # The capability is still good for what it was minted for, once.
    resp = call(stack, token, key, "PATCH", f"deals/{deal}", json={"stage": "negotiation"})
    assert resp.status_code == 200
    assert stack.crm.deals[deal]["stage"] == "negotiation"


def test_honest_delete_needs_confirmation_where_update_is_allowed(stack):
    request = "Delete the hooli-9 deal"
    assertion, key = stack.edge_mint("alice", write_mandate(actions=("update", "delete"),
                                                            request=request))
    resp = stack.agent_exchange(assertion, key, intent=intent("delete", "deal:hooli-9",
                                                              request=request))
    assert resp.status_code == 403
    assert resp.json()["error"] == "approval_required"


def test_put_is_refused_where_the_crm_route_lists_only_patch(stack, recorder):
    _new_deal(stack, "hooli-put")
    request = "Replace the hooli-put deal"
    token, key = capability(stack, "alice", intent("update", "deal:hooli-put", request=request),
                            details=write_mandate(request=request))
    seen = len(recorder.api_calls)
    resp = call(stack, token, key, "PUT", "deals/hooli-put", json={"stage": "lost"})
    _refused_without_reaching_the_crm(stack, recorder, resp,
                                      "The platform does not allow PUT on this resource")
    assert len(recorder.api_calls) == seen
    assert stack.crm.deals["hooli-put"]["stage"] == "open"


def test_read_with_a_body_is_refused(stack, alice_read, recorder):
    token, key = alice_read
    seen = len(recorder.api_calls)
    resp = call(stack, token, key, "GET", "deals/acme-123", data=b'{"stage": "lost"}',
                headers={"Content-Type": "application/json"})
    _refused_without_reaching_the_crm(stack, recorder, resp, "A GET request carries no body")
    assert len(recorder.api_calls) == seen


def test_audit_records_the_method_forwarded(stack, recorder):
    _new_deal(stack, "hooli-audit")
    request = "Move hooli-audit to won"
    token, key = capability(stack, "alice", intent("update", "deal:hooli-audit",
                                                   request=request),
                            details=write_mandate(request=request))
    cid = correlation()
    resp = call(stack, token, key, "PATCH", "deals/hooli-audit", json={"stage": "won"},
                headers={"X-Request-ID": cid})
    assert resp.status_code == 200
    assert (recorder.api_calls[-1].method, recorder.api_calls[-1].request_id) == ("PATCH", cid)
    event = next(e for e in stack.audit_for(cid) if e["event"] == "gateway_call")
    assert event["outcome"] == "allowed"
    assert event["intent"]["action"] == "update"
    assert event["detail"] == {"method": "PATCH", "forwarded_method": "PATCH", "attempts": 1,
                               "status": 200}


# --- correlation and audit --------------------------------------------------------------------


def test_correlation_id_is_shared_by_exchange_gateway_audit_and_platform(stack, recorder):
    cid = correlation()
    token, key = capability(stack, "alice", intent("read", "deal:acme-123"),
                            headers={"X-Request-ID": cid})
    resp = call(stack, token, key, "GET", "deals/acme-123", headers={"X-Request-ID": cid})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == cid
    assert recorder.api_calls[-1].request_id == cid
    events = {e["event"]: e for e in stack.audit_for(cid)}
    assert events["token_exchange"]["outcome"] == "allowed"
    gateway_event = events["gateway_call"]
    assert gateway_event["outcome"] == "allowed"
    assert gateway_event["platform"] == "crm"
    assert gateway_event["user_id"] == stack.user_id("alice")


def test_refused_gateway_call_is_audited_with_its_reason(stack, alice_read):
    token, key = alice_read
    cid = correlation()
    resp = call(stack, token, key, "DELETE", "deals/acme-123", headers={"X-Request-ID": cid})
    assert resp.status_code == 403
    [event] = stack.audit_for(cid)
    assert (event["event"], event["outcome"], event["reason"]) == \
        ("gateway_call", "denied", "insufficient_scope")


# --- the executor path (Part A4: resource = the platform's API base) --------------------------


def _executor_exchange(stack: Stack, agent: Any, cid: str) -> requests.Response:
    assertion, key = stack.edge_mint("alice", agent=agent)
    return stack.agent_exchange(assertion, key, agent=agent, audience=None,
                                resource=stack.settings["platforms"]["crm"]["api_base_url"],
                                intent=intent("read", "deal:acme-123"),
                                headers={"X-Request-ID": cid})


def test_executor_path_refused_to_a_non_executor_client(stack):
    cid = correlation()
    resp = _executor_exchange(stack, stack.agent, cid)
    assert resp.status_code == 403
    assert resp.json()["error"] == "access_denied"
    assert "access_token" not in resp.json()
    [event] = stack.audit_for(cid)
    assert (event["outcome"], event["reason"]) == ("denied", "not_executor")


def test_executor_path_gives_an_executor_the_users_platform_token(stack):
    executor = stack.register_agent(attributes={"allowed_platforms": ["crm"],
                                                "allowed_actions": ["read"], "executor": True})
    cid = correlation()
    resp = _executor_exchange(stack, executor, cid)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert resp.headers["Cache-Control"] == "no-store"
    direct = requests.get(stack.settings["platforms"]["crm"]["api_base_url"] + "/deals/acme-123",
                          headers={"Authorization": f"Bearer {body['access_token']}"},
                          timeout=30)
    assert direct.status_code == 200
    [event] = stack.audit_for(cid)
    assert event["outcome"] == "allowed"
    assert event["detail"]["issued"] == "platform_token"
    assert body["access_token"] not in json.dumps(event)


# --- no platform token ever reaches the agent -------------------------------------------------


def test_zz_agent_responses_never_contain_a_platform_token(stack, recorder):
    """Runs last in the module: every gateway response so far, plus the audit log."""
    secrets_ = recorder.secrets()
    assert secrets_, "the recorder saw no platform tokens"
    texts: list[str] = []
    for resp in stack.responses:  # type: ignore[attr-defined]
        texts.append(resp.text)
        texts.extend(f"{k}: {v}" for k, v in resp.headers.items())
    texts.append(json.dumps(stack.audit(1000)))
    assert_no_secret_in(texts, secrets_)
    assert len(stack.responses) > 10  # type: ignore[attr-defined]


def test_zz_database_dump_holds_no_plaintext_platform_token(stack, recorder):
    """After every flow of the module: all rows of all tables (reflected, not our models)."""
    import sqlalchemy as sa

    engine = sa.create_engine(stack.services.settings.database_url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            rows = [f"{t.name}: {tuple(r)!r}" for t in meta.sorted_tables
                    for r in conn.execute(sa.select(t))]
    finally:
        engine.dispose()
    assert any(row.startswith("connections:") for row in rows)
    assert_no_secret_in(rows, recorder.secrets())
