"""RFC 8693 agent exchange over real HTTP (docs/standards.md: the TX rows, A1, A3, A4).

Every refusal is checked for status, `error`, the exact `error_description` of the check that
should refuse it (tests.http_helpers.assert_refusal) and headers; where several checks share one
description, the server's logged reason for the refusal tells them apart
(`assert_rejected_because`). Every refusal also asserts its specific reason code, logged and
in the audit record (tests.refusal_helpers.assert_audited_reason; docs/operating.md "Audit
refusal reasons"). Every outcome writes exactly one audit record with the request's
correlation id. The stack (tests/stack.py) is real: IdP, CRM, Taskboard and authserver on
loopback, one per module (SQLite, embedded store).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from requests_oauth2client import DPoPToken, OAuth2Client
from requests_oauth2client.exceptions import EndpointError

from tests.http_helpers import (
    REJECTION_LOGGER,
    assert_refusal,
    assert_rejected_because,
)
from tests.refusal_helpers import assert_audited_reason
from tests.stack import (
    GRANT_TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    TT_JWT,
    Stack,
    compact,
    correlation,
    intent,
    make_stack,
    mandate,
)

USER = "alice"
#: Descriptions more than one test expects (INVALID_SUBJECT and BAD_DETAILS: more than one
#: check sends them; the logged reason tells which).
INVALID_SUBJECT = "subject_token is invalid, expired or revoked"
BAD_DETAILS = "Malformed or unsupported authorization details"
NOT_ALLOWED = "The intent is not allowed"
UNSUPPORTED_SUBJECT_TYPE = (f"Unsupported subject_token_type: the agent exchange takes "
                            f"{TT_ACCESS_TOKEN} (the user assertion)")
KEY_MISMATCH = "DPoP proof key does not match the subject token"
MAY_NOT_ACT = "The client may not act for this subject"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("tx"))
    s.signed_in_and_connected(USER, ("crm",))
    yield s
    s.close()


@pytest.fixture
def minted(stack: Stack) -> tuple[str, Any]:
    """A fresh user assertion for alice (read deal:*), and the agent's DPoP key."""
    return stack.edge_mint(USER)


@pytest.fixture(autouse=True)
def _log_rejections(caplog: pytest.LogCaptureFixture) -> None:
    """The server's reason for each refusal (`assert_rejected_because`)."""
    caplog.set_level("INFO", logger=REJECTION_LOGGER)


def claims_of(stack: Stack, token: str) -> dict[str, Any]:
    """Verify one of our JWTs against the published JWKS (as any resource server would)."""
    keys = KeySet.import_key_set(requests.get(stack.issuer + "/jwks.json", timeout=10).json())
    return dict(jwt.decode(token, keys, algorithms=["ES256"]).claims)


# --- success (TX-10, TX-11, TX-16, Part A4) ------------------------------------------------------


def test_exchange_issues_capability_token_bound_to_proof_key(stack: Stack, minted: Any) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "DPoP"
    assert body["issued_token_type"] == TT_ACCESS_TOKEN
    assert 0 < body["expires_in"] <= 60
    assert "refresh_token" not in body
    claims = claims_of(stack, body["access_token"])
    subject = claims_of(stack, assertion)
    assert claims["cnf"] == {"jkt": key.dpop_jkt}
    assert claims["aud"] == f"{stack.issuer}/gateway/crm"
    assert claims["sub"] == subject["sub"] == stack.user_id(USER)
    assert claims["act"] == {"sub": stack.agent.client_id}
    assert claims["client_id"] == stack.agent.client_id
    assert claims["exp"] - claims["iat"] <= 60
    assert claims["exp"] <= subject["exp"]
    [detail] = claims["authorization_details"]
    assert detail["type"] == "agent_intent"
    assert detail["actions"] == ["read"]
    assert detail["identifier"] == "deal:acme-123"
    assert body["authorization_details"] == claims["authorization_details"]


def test_exchange_by_gateway_resource_uri(stack: Stack, minted: Any) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, audience=None,
                                resource=f"{stack.issuer}/gateway/crm")
    assert resp.status_code == 200, resp.text
    assert claims_of(stack, resp.json()["access_token"])["aud"] == f"{stack.issuer}/gateway/crm"


def test_capability_token_reads_through_gateway(stack: Stack, minted: Any) -> None:
    assertion, key = minted
    token = stack.agent_exchange(assertion, key).json()["access_token"]
    resp = stack.gateway(token, key, "GET", "crm/deals/acme-123")
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == "acme-123"


def test_exchange_output_capped_at_subject_exp(stack: Stack, minted: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assertion, key = minted
    subject = claims_of(stack, assertion)
    stack.shift_clock(monkeypatch, subject["exp"] - stack.clock() - 20)
    resp = stack.agent_exchange(assertion, key)
    assert resp.status_code == 200, resp.text
    assert resp.json()["expires_in"] <= 20
    assert claims_of(stack, resp.json()["access_token"])["exp"] <= subject["exp"]


def test_requests_oauth2client_exchange_with_dpop_and_intent(stack: Stack, minted: Any) -> None:
    """A real client library: OAuth2Client.token_exchange with DPoP, `intent` and `audience`."""
    assertion, key = minted
    client = OAuth2Client(token_endpoint=f"{stack.issuer}/token",
                          auth=stack.agent.auth(stack.issuer), testing=True)
    token = client.token_exchange(
        subject_token=assertion, subject_token_type=TT_ACCESS_TOKEN, dpop=True, dpop_key=key,
        audience="crm", intent=compact(intent()))
    assert isinstance(token, DPoPToken)
    assert token.token_type == "DPoP"
    assert token.kwargs["issued_token_type"] == TT_ACCESS_TOKEN
    # The library's DPoPToken is a requests auth handler: proof with ath for the gateway.
    resp = requests.get(f"{stack.issuer}/gateway/crm/deals/acme-123", auth=token, timeout=10)
    assert resp.status_code == 200, resp.text


def test_requests_oauth2client_sees_policy_denial(stack: Stack, minted: Any) -> None:
    assertion, key = minted
    client = OAuth2Client(token_endpoint=f"{stack.issuer}/token",
                          auth=stack.agent.auth(stack.issuer), testing=True)
    with pytest.raises(EndpointError) as caught:
        client.token_exchange(subject_token=assertion, subject_token_type=TT_ACCESS_TOKEN,
                              dpop=True, dpop_key=key, audience="crm",
                              intent=compact(intent("update")))
    assert_refusal(caught.value.response, 403, "access_denied", NOT_ALLOWED)


# --- TX-02 / TX-03 / TX-06 request validation ---------------------------------------------------


def test_missing_subject_token(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    _, key = minted
    assert_refusal(stack.agent_exchange("", key), 400, "invalid_request",
                   "subject_token and subject_token_type are required")
    assert_audited_reason(stack, caplog, "subject_token_missing")


def test_missing_subject_token_type(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, subject_token_type="")
    assert_refusal(resp, 400, "invalid_request",
                   "subject_token and subject_token_type are required")
    assert_audited_reason(stack, caplog, "subject_token_missing")


def test_actor_token_without_type(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key,
                                actor_token=stack.agent.assertion(stack.issuer))
    assert_refusal(resp, 400, "invalid_request", "actor_token and actor_token_type go together")
    assert_audited_reason(stack, caplog, "actor_token_type_mismatch")


def test_actor_token_type_without_actor_token(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, actor_token_type=TT_JWT)
    assert_refusal(resp, 400, "invalid_request", "actor_token and actor_token_type go together")
    assert_audited_reason(stack, caplog, "actor_token_type_mismatch")


def test_repeated_subject_token(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    form = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": [assertion, assertion]}
    resp = requests.post(stack.issuer + "/token", timeout=10, data={
        **form, "subject_token_type": TT_ACCESS_TOKEN, "audience": "crm",
        "intent": compact(intent()), "client_id": stack.agent.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": stack.agent.assertion(stack.issuer),
    }, headers={"DPoP": stack.dpop_proof(key)})
    assert_refusal(resp, 400, "invalid_request", "A parameter was sent more than once")
    assert_audited_reason(stack, caplog, "parameter_repeated", audited=False)


def test_unsupported_requested_token_type(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key,
                                requested_token_type="urn:ietf:params:oauth:token-type:id_token")
    assert_refusal(resp, 400, "invalid_request", "Unsupported requested_token_type")
    assert_audited_reason(stack, caplog, "requested_token_type_unsupported")


def test_unsupported_subject_token_type(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key,
                                subject_token_type="urn:ietf:params:oauth:token-type:saml2")
    assert_refusal(resp, 400, "invalid_request", UNSUPPORTED_SUBJECT_TYPE)
    assert_audited_reason(stack, caplog, "subject_token_type_unsupported")


@pytest.mark.parametrize("subject_token_type", [TT_JWT, "urn:ietf:params:oauth:token-type:saml2"])
def test_unsupported_subject_token_type_names_the_one_accepted(stack: Stack, minted: Any,
                                                               subject_token_type: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A client that defaults to `...:jwt` learns which type the agent exchange takes."""
    assertion, key = minted
    body = assert_refusal(stack.agent_exchange(assertion, key,
                                               subject_token_type=subject_token_type),
                          400, "invalid_request", UNSUPPORTED_SUBJECT_TYPE)
    assert_audited_reason(stack, caplog, "subject_token_type_unsupported")
    assert TT_ACCESS_TOKEN in body["error_description"], body


def test_unknown_audience(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    assert_refusal(stack.agent_exchange(assertion, key, audience="warehouse"), 400,
                   "invalid_target", "Unknown audience")
    assert_audited_reason(stack, caplog, "target_unknown_audience")


def test_unknown_resource(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, audience=None,
                                resource=f"{stack.issuer}/gateway/warehouse")
    assert_refusal(resp, 400, "invalid_target", "Unknown resource")
    assert_audited_reason(stack, caplog, "target_unknown_resource")


def test_two_targets(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, resource=f"{stack.issuer}/gateway/projects")
    assert_refusal(resp, 400, "invalid_target", "Exactly one audience or resource")
    assert_audited_reason(stack, caplog, "target_not_single")


def test_scope_widening(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    assert_refusal(stack.agent_exchange(assertion, key, scope="write"), 400, "invalid_scope",
                   "scope may only narrow the subject token's scope")
    assert_audited_reason(stack, caplog, "scope_widened")


def test_foreign_subject_token(stack: Stack, minted: Any,
                               caplog: pytest.LogCaptureFixture) -> None:
    _, key = minted
    foreign = ECKey.generate_key("P-256", auto_kid=True)
    now = stack.clock()
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": foreign.kid}, {
        "iss": stack.issuer, "sub": stack.user_id(USER), "aud": stack.issuer,
        "client_id": stack.agent.client_id, "iat": now, "exp": now + 300, "jti": "x" * 24,
        "cnf": {"jkt": key.dpop_jkt}, "authorization_details": mandate(),
    }, foreign, algorithms=["ES256"])
    assert_refusal(stack.agent_exchange(token, key), 400, "invalid_request", INVALID_SUBJECT)
    assert_rejected_because(caplog, "signature")
    assert_audited_reason(stack, caplog, "subject_token_bad_signature")


def test_idp_token_as_agent_subject_token(stack: Stack, minted: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """An IdP id_token is the edge's input, never the agent's (TX-06: foreign issuer): not
    signed by our keys (nor of typ at+jwt), it fails the first check."""
    _, key = minted
    resp = stack.agent_exchange(stack.idp_id_token(USER), key)
    assert_refusal(resp, 400, "invalid_request", INVALID_SUBJECT)
    assert_rejected_because(caplog, "signature")
    assert_audited_reason(stack, caplog, "subject_token_bad_signature")


def test_tampered_subject_token(stack: Stack, minted: Any,
                                caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    head, body, sig = assertion.split(".")
    bad_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert_refusal(stack.agent_exchange(f"{head}.{body}.{bad_sig}", key), 400,
                   "invalid_request", INVALID_SUBJECT)
    assert_rejected_because(caplog, "signature")
    assert_audited_reason(stack, caplog, "subject_token_bad_signature")


def test_expired_subject_token(stack: Stack, minted: Any, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture) -> None:
    """At exactly `exp`: our own token gets no leeway (check_subject_assertion), though
    verify_access_token's would still accept it; the audit tells the two apart."""
    assertion, key = minted
    exp = claims_of(stack, assertion)["exp"]
    stack.shift_clock(monkeypatch, exp - stack.clock())
    assert_refusal(stack.agent_exchange(assertion, key), 400, "invalid_request",
                   INVALID_SUBJECT)
    assert_rejected_because(caplog, "expired")
    assert_audited_reason(stack, caplog, "subject_token_expired_in_leeway")


def test_subject_token_expired_past_the_leeway(stack: Stack, minted: Any,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Past `exp` and the leeway: verify_access_token refuses it, with its own reason."""
    assertion, key = minted
    exp = claims_of(stack, assertion)["exp"]
    stack.shift_clock(monkeypatch, exp - stack.clock() + 3600)
    assert_refusal(stack.agent_exchange(assertion, key), 400, "invalid_request",
                   INVALID_SUBJECT)
    assert_rejected_because(caplog, "expired")
    assert_audited_reason(stack, caplog, "subject_token_expired")


def test_revoked_subject_token(stack: Stack, minted: Any,
                               caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = requests.post(stack.issuer + "/revoke", timeout=10, data={
        "token": assertion, "client_id": stack.agent.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": stack.agent.assertion(stack.issuer),
    })
    assert resp.status_code == 200
    assert_refusal(stack.agent_exchange(assertion, key), 400, "invalid_request",
                   INVALID_SUBJECT)
    assert_rejected_because(caplog, "revoked")
    assert_audited_reason(stack, caplog, "subject_token_revoked")


# --- DPoP (TX-16, Part A3) -----------------------------------------------------------------------


def test_missing_dpop_proof(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, _ = minted
    assert_refusal(stack.agent_exchange(assertion, None), 400, "invalid_dpop_proof",
                   "DPoP proof required", headers={"DPoP-Nonce": None})
    assert_audited_reason(stack, caplog, "dpop_proof_required")


def test_invalid_dpop_proof_htu(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, headers={
        "DPoP": stack.dpop_proof(key, htu=stack.issuer + "/other")})
    assert_refusal(resp, 400, "invalid_dpop_proof",
                   "DPoP proof htu does not match the request URI", headers={"DPoP-Nonce": None})
    assert_audited_reason(stack, caplog, "dpop_proof_invalid")


def test_proof_key_not_subject_cnf(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, _ = minted
    assert_refusal(stack.agent_exchange(assertion, stack.dpop_key()), 400, "invalid_request",
                   KEY_MISMATCH)
    assert_audited_reason(stack, caplog, "dpop_key_mismatch")


# --- client authentication (TX-07) --------------------------------------------------------------


def test_unauthenticated_client(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = requests.post(stack.issuer + "/token", timeout=10, data={
        "grant_type": GRANT_TOKEN_EXCHANGE, "client_id": stack.agent.client_id,
        "subject_token": assertion, "subject_token_type": TT_ACCESS_TOKEN, "audience": "crm",
        "intent": compact(intent()),
    }, headers={"DPoP": stack.dpop_proof(key)})
    assert_refusal(resp, 401, "invalid_client", "Client authentication failed",
                   headers={"WWW-Authenticate": 'Basic realm="authserver"'})
    assert_audited_reason(stack, caplog, "client_auth_missing_credentials", audited=False)


def test_client_without_token_exchange_grant(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    other = stack.register_agent(grant_types=("client_credentials",))
    resp = stack.agent_exchange(assertion, key, agent=other)
    assert_refusal(resp, 400, "unauthorized_client", "The client may not use token exchange")
    assert_audited_reason(stack, caplog, "grant_type_not_allowed")


# --- intent (Part A1) ---------------------------------------------------------------------------


def test_missing_intent(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    assert_refusal(stack.agent_exchange(assertion, key, intent=None), 400, "invalid_request",
                   "An intent is required to reach a platform")
    assert_audited_reason(stack, caplog, "intent_missing")


def test_empty_intent(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, intent="")
    assert_refusal(resp, 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(
        caplog, "intent is not valid strict JSON: Expecting value: line 1 column 1 (char 0)")
    assert_audited_reason(stack, caplog, "intent_invalid")


def test_malformed_intent(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, intent={"action": "launch", "resource": "x"})
    assert_refusal(resp, 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(caplog, "intent lacks required fields ['context']")
    assert_audited_reason(stack, caplog, "intent_invalid")


def test_intent_and_authorization_details_disagree(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    detail = {"type": "agent_intent", "actions": ["read"], "identifier": "deal:globex-7",
              "count": 1, "context": intent()["context"]}
    resp = stack.agent_exchange(assertion, key, authorization_details=compact([detail]))
    assert_refusal(resp, 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(caplog, 'intent and authorization_details disagree')
    assert_audited_reason(stack, caplog, "intent_invalid")


def test_mandate_from_agent_rejected(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """A mandate only comes from the edge's assertion; the agent cannot add one."""
    assertion, key = minted
    resp = stack.agent_exchange(assertion, key, authorization_details=compact(mandate()))
    assert_refusal(resp, 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(caplog, "authorization_details type 'agent_mandate' not accepted here")
    assert_audited_reason(stack, caplog, "intent_invalid")


# --- Part A3 rows ------------------------------------------------------------------------------


def test_policy_denial_is_access_denied_and_audited_as_intent_mismatch(
        stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    cid = correlation()
    resp = stack.agent_exchange(assertion, key, intent=intent("update"),
                                headers={"X-Request-ID": cid})
    body = assert_refusal(resp, 403, "access_denied", NOT_ALLOWED)
    assert_rejected_because(caplog, "intent_mismatch")
    assert_audited_reason(stack, caplog, "intent_mismatch")
    assert "policy" not in json.dumps(body)  # policy ids go to the audit, not the client
    [record] = stack.audit_for(cid)
    assert record["event"] == "token_exchange"
    assert record["outcome"] == "denied"
    assert record["reason"] == "intent_mismatch"
    assert record["within_mandate"] is False
    assert "deny-outside-mandate" in record["policy_ids"]


def test_agent_not_allowlisted_is_access_denied(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    narrow_agent = stack.register_agent(attributes={"allowed_platforms": ["projects"],
                                                    "allowed_actions": ["read"]})
    assertion, key = stack.edge_mint(USER, agent=narrow_agent)
    cid = correlation()
    resp = stack.agent_exchange(assertion, key, agent=narrow_agent,
                                headers={"X-Request-ID": cid})
    assert_refusal(resp, 403, "access_denied", NOT_ALLOWED)
    assert_rejected_because(caplog, "intent_mismatch")
    assert_audited_reason(stack, caplog, "intent_mismatch")
    [record] = stack.audit_for(cid)
    # An admin allowlist violation is audited as the prompt-injection signal too.
    assert record["reason"] == "intent_mismatch"
    assert "deny-agent-not-allowlisted" in record["policy_ids"]


def test_platform_token_denied_by_default(
        stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    api = stack.settings["platforms"]["crm"]["api_base_url"]
    resp = stack.agent_exchange(assertion, key, audience=None, resource=api)
    assert_refusal(resp, 403, "access_denied", "This client may not receive platform tokens")
    assert_rejected_because(caplog, "not_executor")
    assert_audited_reason(stack, caplog, "not_executor")


def test_connection_required(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = stack.edge_mint("bob")  # bob never connected the CRM
    body = assert_refusal(stack.agent_exchange(assertion, key), 403, "connection_required",
                          "The user has no live connection to this platform")
    assert_audited_reason(stack, caplog, "connection_missing")
    assert body["connect_uri"].startswith(stack.issuer + "/connections")


def test_approval_required_row(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    details = mandate({"platform": "crm", "actions": ["delete"], "resources": ["deal:*"],
                       "max_count": 1})
    assertion, key = stack.edge_mint(USER, details)
    body = assert_refusal(stack.agent_exchange(assertion, key, intent=intent("delete")), 403,
                          "approval_required", "User confirmation required")
    assert_audited_reason(stack, caplog, "approval_required")
    assert body["approval_uri"] == f"{stack.issuer}/approvals/{body['approval_id']}"
    assert 0 < body["expires_in"] <= 600
    assert body["interval"] >= 1


# --- audit: one record per exchange by an authenticated client, whatever the outcome ----------
# (A failed client authentication is counted, not audited: test_http_audit_unauthenticated.py.)


@pytest.mark.parametrize("case", ["allowed", "invalid_request", "invalid_dpop_proof",
                                  "invalid_target", "access_denied"])
def test_every_outcome_writes_one_audit_record(stack: Stack, minted: Any, case: str) -> None:
    assertion, key = minted
    cid = correlation()
    headers = {"X-Request-ID": cid}
    if case == "allowed":
        resp = stack.agent_exchange(assertion, key, headers=headers)
    elif case == "invalid_request":
        resp = stack.agent_exchange(assertion, stack.dpop_key(), headers=headers)
    elif case == "invalid_dpop_proof":
        resp = stack.agent_exchange(assertion, None, headers=headers)
    elif case == "invalid_target":
        resp = stack.agent_exchange(assertion, key, audience="nowhere", headers=headers)
    else:
        resp = stack.agent_exchange(assertion, key, intent=intent("delete", "deal:x"),
                                    headers=headers)
    assert resp.headers["X-Request-ID"] == cid
    assert (resp.status_code == 200) == (case == "allowed"), resp.text
    if case != "allowed":
        assert_refusal(resp, 403 if case == "access_denied" else 400, case, {
            "invalid_request": KEY_MISMATCH, "invalid_dpop_proof": "DPoP proof required",
            "invalid_target": "Unknown audience", "access_denied": NOT_ALLOWED}[case])
    records = stack.audit_for(cid)
    assert len(records) == 1, records
    assert records[0]["event"] == "token_exchange"
    assert records[0]["outcome"] == ("allowed" if case == "allowed" else
                                     "denied" if case == "access_denied" else "invalid")
    verify = stack.admin("GET", "/audit/verify").json()
    assert verify["ok"] is True


# --- delegation (TX-12, TX-13) ------------------------------------------------------------------


def designate(stack: Stack, assertion: str, key: Any, caller: Any, next_agent: Any,
              next_key: Any) -> requests.Response:
    """`caller` narrows its assertion for `next_agent` (actor_token) bound to `next_key`."""
    return stack.agent_exchange(
        assertion, key, agent=caller, audience=None, intent=None,
        actor_token=next_agent.assertion(stack.issuer), actor_token_type=TT_JWT,
        dpop_jkt=next_key.dpop_jkt)


def no_intent(stack: Stack, assertion: str, key: Any, agent: Any, **extra: Any
              ) -> requests.Response:
    return stack.agent_exchange(assertion, key, agent=agent, audience=None, intent=None,
                                **extra)


def test_delegation_chain_nests_act(stack: Stack, minted: Any) -> None:
    assertion, key_a = minted
    agent_b, key_b = stack.register_agent(), stack.dpop_key()
    resp = designate(stack, assertion, key_a, stack.agent, agent_b, key_b)
    assert resp.status_code == 200, resp.text
    delegated = resp.json()["access_token"]
    claims = claims_of(stack, delegated)
    assert claims["may_act"]["sub"] == agent_b.client_id
    assert claims["cnf"] == {"jkt": key_b.dpop_jkt}
    assert claims["aud"] == stack.issuer
    resp = stack.agent_exchange(delegated, key_b, agent=agent_b)
    assert resp.status_code == 200, resp.text
    act = claims_of(stack, resp.json()["access_token"])["act"]
    assert act == {"sub": agent_b.client_id, "act": {"sub": stack.agent.client_id}}


def test_may_act_enforced(stack: Stack, minted: Any, caplog: pytest.LogCaptureFixture) -> None:
    assertion, key_a = minted
    agent_b, key_b = stack.register_agent(), stack.dpop_key()
    delegated = designate(stack, assertion, key_a, stack.agent, agent_b,
                          key_b).json()["access_token"]
    intruder = stack.register_agent()
    assert_refusal(stack.agent_exchange(delegated, key_b, agent=intruder), 400,
                   "invalid_request", MAY_NOT_ACT)
    assert_audited_reason(stack, caplog, "delegation_not_permitted")


def test_other_agent_cannot_use_assertion_without_may_act(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    intruder = stack.register_agent()
    assert_refusal(stack.agent_exchange(assertion, key, agent=intruder), 400,
                   "invalid_request", MAY_NOT_ACT)
    assert_audited_reason(stack, caplog, "delegation_not_permitted")


def test_designation_requires_dpop_jkt(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    agent_b = stack.register_agent()
    resp = stack.agent_exchange(assertion, key, audience=None, intent=None,
                                actor_token=agent_b.assertion(stack.issuer),
                                actor_token_type=TT_JWT)
    assert_refusal(resp, 400, "invalid_request",
                   "dpop_jkt (the designated agent's key) is required")
    assert_audited_reason(stack, caplog, "designee_key_missing")


def test_actor_token_naming_another_agent_with_target(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    agent_b = stack.register_agent()
    resp = stack.agent_exchange(assertion, key, actor_token=agent_b.assertion(stack.issuer),
                                actor_token_type=TT_JWT)
    assert_refusal(resp, 400, "invalid_request", "actor_token does not name the client")
    assert_audited_reason(stack, caplog, "actor_not_client")


def test_delegation_depth_bound(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    agent = stack.agent
    depth = 1
    while True:
        nxt, nxt_key = stack.register_agent(), stack.dpop_key()
        resp = designate(stack, assertion, key, agent, nxt, nxt_key)
        if depth == 4:
            # check_designee_key's bound (the new may_act would be a fifth actor); the same
            # description as check_delegation's own bound, and no logged reason either.
            assert_refusal(resp, 400, "invalid_request", "Delegation chain is too long")
            assert_audited_reason(stack, caplog, "designee_chain_too_long")
            break
        assert resp.status_code == 200, (depth, resp.text)
        assertion, key, agent = resp.json()["access_token"], nxt_key, nxt
        depth += 1
    # The deepest allowed actor still reaches the platform, with the whole chain in `act`.
    resp = stack.agent_exchange(assertion, key, agent=agent)
    assert resp.status_code == 200, resp.text
    act, chain = claims_of(stack, resp.json()["access_token"])["act"], []
    while act:
        chain.append(act["sub"])
        act = act.get("act")
    assert len(chain) == 4
    assert chain[0] == agent.client_id and chain[-1] == stack.agent.client_id


# --- mandate narrowing (edge identity: narrowed, never widened) ---------------------------------


def test_mandate_narrowing_exchange(stack: Stack) -> None:
    wide = mandate({"platform": "crm", "actions": ["read", "update"], "resources": ["deal:*"],
                    "max_count": 2})
    assertion, key = stack.edge_mint(USER, wide)
    narrow = mandate({"platform": "crm", "actions": ["read"], "resources": ["deal:acme-123"],
                      "max_count": 1})
    resp = stack.agent_exchange(assertion, key, audience=None, intent=None,
                                authorization_details=compact(narrow))
    assert resp.status_code == 200, resp.text
    narrowed = resp.json()["access_token"]
    claims = claims_of(stack, narrowed)
    assert claims["authorization_details"][0]["platforms"] == narrow[0]["platforms"]
    assert claims["cnf"] == {"jkt": key.dpop_jkt}
    # The narrowed assertion no longer allows what it dropped.
    assert_refusal(stack.agent_exchange(narrowed, key, intent=intent("update")), 403,
                   "access_denied", NOT_ALLOWED)
    assert stack.agent_exchange(narrowed, key).status_code == 200


def test_mandate_widening_rejected(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    wider = mandate({"platform": "crm", "actions": ["read", "delete"], "resources": ["deal:*"],
                     "max_count": 1})
    resp = stack.agent_exchange(assertion, key, audience=None, intent=None,
                                authorization_details=compact(wider))
    assert_refusal(resp, 400, "invalid_authorization_details",
                   "A mandate can only be narrowed")
    assert_audited_reason(stack, caplog, "mandate_widened")


def test_mandate_other_request_rejected(stack: Stack, minted: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assertion, key = minted
    other = mandate(request="Delete everything")
    resp = stack.agent_exchange(assertion, key, audience=None, intent=None,
                                authorization_details=compact(other))
    assert_refusal(resp, 400, "invalid_authorization_details",
                   "A mandate can only be narrowed")
    assert_audited_reason(stack, caplog, "mandate_other_request")
