"""The edge mint over real HTTP: a trusted edge trades the user's IdP id_token for a user
assertion bound to the AGENT's key (RFC 8693, RFC 9068, RFC 9449; docs/standards.md A2, A3).
Deprovisioning (admin API) kills an already-issued assertion on its next use.

Every refusal is checked for status, `error` and the exact `error_description` of the check that
should refuse it (tests.http_helpers.assert_refusal); where several checks share one description
(an IdP token or an actor token that is "not acceptable"), the server's logged reason tells them
apart (`assert_rejected_because`). Every refusal also asserts its specific reason code, logged
and in the audit record (tests.refusal_helpers.assert_audited_reason)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.http_helpers import REJECTION_LOGGER, assert_refusal, assert_rejected_because
from tests.refusal_helpers import assert_audited_reason
from tests.stack import TT_ACCESS_TOKEN, Stack, compact, correlation, make_stack, mandate

USER = "alice"
#: Descriptions more than one check sends (the logged reason tells which).
BAD_ID_TOKEN = "The identity token is not acceptable"
BAD_ACTOR = "actor_token is not acceptable"
BAD_DETAILS = "Malformed or unsupported authorization details"
NO_DPOP_JKT = "dpop_jkt (the agent's key thumbprint) is required"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("mint"))
    s.signed_in_and_connected(USER, ("crm",))
    yield s
    s.close()


def claims_of(stack: Stack, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(requests.get(stack.issuer + "/jwks.json", timeout=10).json())
    return dict(jwt.decode(token, keys, algorithms=["ES256"]).claims)


@pytest.fixture(autouse=True)
def _log_rejections(caplog: pytest.LogCaptureFixture) -> None:
    """The server's reason for each refusal (`assert_rejected_because`)."""
    caplog.set_level("INFO", logger=REJECTION_LOGGER)


def mint(stack: Stack, **kw: Any) -> requests.Response:
    key = kw.pop("key", None) or stack.dpop_key()
    details = kw.pop("details", mandate())
    return stack.edge_mint_response(stack.idp_id_token(USER), details,
                                    dpop_jkt=kw.pop("dpop_jkt", key.dpop_jkt), **kw)


def test_edge_mint_binds_assertion_to_agent_key(stack: Stack) -> None:
    key = stack.dpop_key()
    resp = mint(stack, key=key)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "DPoP"
    assert body["issued_token_type"] == TT_ACCESS_TOKEN
    assert 0 < body["expires_in"] <= 300
    claims = claims_of(stack, body["access_token"])
    assert claims["sub"] == stack.user_id(USER)
    assert claims["client_id"] == stack.agent.client_id
    assert claims["act"] == {"sub": stack.agent.client_id}
    assert claims["aud"] == stack.issuer
    assert claims["exp"] - claims["iat"] <= 300
    assert claims["cnf"] == {"jkt": key.dpop_jkt}
    [detail] = claims["authorization_details"]
    assert detail["type"] == "agent_mandate"
    assert detail["platforms"] == mandate()[0]["platforms"]
    assert body["authorization_details"] == claims["authorization_details"]


def test_edge_cannot_use_what_it_minted(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """The edge, with its own key and its own client authentication, is refused."""
    assertion, _agent_key = stack.edge_mint(USER)
    edge_key = stack.dpop_key()
    resp = requests.post(stack.issuer + "/token", auth=(stack.edge_id, stack.edge_secret),
                         timeout=10, data={
                             "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                             "subject_token": assertion, "subject_token_type": TT_ACCESS_TOKEN,
                             "audience": "crm", "intent": compact({
                                 "action": "read", "resource": "deal:acme-123", "count": 1,
                                 "context": {"request": "x", "channel": "chat",
                                             "environment": "prod"}}),
                         }, headers={"DPoP": stack.dpop_proof(edge_key)})
    # Refused at the first check it fails: its proof key is not the agent's.
    assert_refusal(resp, 400, "invalid_request",
                   "DPoP proof key does not match the subject token")
    assert_audited_reason(stack, caplog, "dpop_key_mismatch", event="token_exchange")


def test_untrusted_edge_cannot_mint(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    untrusted = stack.register_edge(trusted=False)
    body = assert_refusal(mint(stack, edge=untrusted), 400, "invalid_request",
                          "Only a client registered as a trusted edge may mint user assertions")
    assert_audited_reason(stack, caplog, "edge_not_trusted")
    assert "trusted edge" in body["error_description"], body


def test_edge_mint_audited(stack: Stack) -> None:
    cid = correlation()
    resp = mint(stack, headers={"X-Request-ID": cid})
    assert resp.status_code == 200
    [record] = stack.audit_for(cid)
    assert record["event"] == "edge_mint"
    assert record["outcome"] == "allowed"
    assert record["agent_id"] == stack.agent.client_id
    assert record["detail"]["client_id"] == stack.edge_id


def test_missing_dpop_jkt(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_refusal(mint(stack, dpop_jkt=None), 400, "invalid_request", NO_DPOP_JKT)
    assert_audited_reason(stack, caplog, "agent_key_missing", event="edge_mint")


def test_missing_actor_token(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_refusal(mint(stack, drop=("actor_token", "actor_token_type")), 400,
                   "invalid_request", "actor_token naming the agent is required")
    assert_audited_reason(stack, caplog, "actor_token_missing")


def test_actor_token_replayed(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    actor = stack.agent.assertion(stack.issuer)
    assert mint(stack, actor_token=actor).status_code == 200
    assert_refusal(mint(stack, actor_token=actor), 400, "invalid_request",
                   "actor_token was already used")
    assert_audited_reason(stack, caplog, "actor_token_replayed")


def test_actor_token_signed_by_another_key(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    impostor = stack.register_agent()
    forged = impostor.assertion(stack.issuer, iss=stack.agent.client_id,
                                sub=stack.agent.client_id)
    assert_refusal(mint(stack, actor_token=forged), 400, "invalid_request", BAD_ACTOR)
    assert_rejected_because(caplog, "client_assertion signature is invalid")
    assert_audited_reason(stack, caplog, "client_assertion_bad_signature")


def test_actor_token_expired(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stale = stack.agent.assertion(stack.issuer, lifetime=-120)
    assert_refusal(mint(stack, actor_token=stale), 400, "invalid_request", BAD_ACTOR)
    assert_rejected_because(caplog, "client_assertion is expired")
    assert_audited_reason(stack, caplog, "client_assertion_expired")


def test_forged_id_token(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    forged = stack.idp.mint_id_token(USER, aud="chat-edge", sign_with=stack.idp.foreign_key())
    key = stack.dpop_key()
    resp = stack.edge_mint_response(forged, mandate(), dpop_jkt=key.dpop_jkt)
    assert_refusal(resp, 400, "invalid_request", BAD_ID_TOKEN)
    assert_rejected_because(caplog, "bad signature (BadSignatureError)")
    assert_audited_reason(stack, caplog, "subject_token_idp_rejected")


def test_id_token_for_untrusted_audience(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    token = stack.idp.mint_id_token(USER, aud="some-other-app")
    key = stack.dpop_key()
    resp = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt)
    assert_refusal(resp, 400, "invalid_request", BAD_ID_TOKEN)
    assert_rejected_because(caplog, "aud mismatch")
    assert_audited_reason(stack, caplog, "subject_token_idp_rejected")


def test_expired_id_token(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    token = stack.idp.mint_id_token(USER, aud="chat-edge", exp_in=-120)
    key = stack.dpop_key()
    resp = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt)
    assert_refusal(resp, 400, "invalid_request", BAD_ID_TOKEN)
    assert_rejected_because(caplog, "expired")
    assert_audited_reason(stack, caplog, "subject_token_idp_rejected")


def test_id_token_expired_within_the_leeway_leaves_no_lifetime(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """An IdP token just past `exp` passes the IdP check (clock-skew leeway), but TX-08 has
    nothing left to cap the assertion at: refused with its own reason (remaining_lifetime)."""
    token = stack.idp.mint_id_token(USER, aud="chat-edge", exp_in=-5)
    key = stack.dpop_key()
    resp = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt)
    assert_refusal(resp, 400, "invalid_request", "subject_token is invalid, expired or revoked")
    assert_rejected_because(caplog, "expired")
    assert_audited_reason(stack, caplog, "subject_token_no_lifetime_left", event="edge_mint")


def test_malformed_mandate(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    bad = mandate()
    bad[0]["platforms"] = []
    assert_refusal(mint(stack, details=bad), 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(caplog, "agent_mandate.platforms must hold 1..16 entries")
    assert_audited_reason(stack, caplog, "mandate_invalid")


@pytest.mark.parametrize("duplicate", ["channel", "type"])
def test_mandate_with_a_duplicate_member_is_refused(
        stack: Stack, duplicate: str, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8259 §4: with a repeated member, a parser keeping the first value would read another
    mandate than the one we sign; refused as strictly as a duplicate in `intent`."""
    good = compact(mandate())
    member = f'"{duplicate}":'
    at = good.index(member)
    value = '"email"' if duplicate == "channel" else '"agent_mandate"'
    raw = good[:at] + member + value + "," + good[at:]
    key = stack.dpop_key()
    resp = stack.edge_mint_response(stack.idp_id_token(USER), None, dpop_jkt=key.dpop_jkt,
                                    authorization_details=raw)
    assert_refusal(resp, 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(caplog, "authorization_details is not valid strict JSON: "
                                    f"repeated JSON member {duplicate!r}")
    assert_audited_reason(stack, caplog, "authorization_details_malformed")
    # The same mandate without the repeated member mints.
    resp = stack.edge_mint_response(stack.idp_id_token(USER), None, dpop_jkt=key.dpop_jkt,
                                    authorization_details=good)
    assert resp.status_code == 200, resp.text


def test_mint_without_mandate_says_it_needs_one(stack: Stack,
        caplog: pytest.LogCaptureFixture) -> None:
    """A trusted edge's IdP token without an agent_mandate is not read as an agent exchange."""
    body = assert_refusal(mint(stack, details=None), 400, "invalid_request",
                          "The edge mint needs authorization_details with one agent_mandate")
    assert_audited_reason(stack, caplog, "edge_mint_no_mandate")
    assert "agent_mandate" in body["error_description"], body


def test_mandate_request_hash_mismatch(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    bad = mandate()
    bad[0]["request"] = "Something else entirely"
    assert_refusal(mint(stack, details=bad), 400, "invalid_authorization_details", BAD_DETAILS)
    assert_rejected_because(caplog, "agent_mandate.request_hash does not match request")
    assert_audited_reason(stack, caplog, "mandate_invalid")


def test_mint_for_another_target(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_refusal(mint(stack, audience="crm"), 400, "invalid_target",
                   "A user assertion is only for this server")
    assert_audited_reason(stack, caplog, "target_not_this_server")


def test_mint_unsupported_requested_token_type(stack: Stack,
        caplog: pytest.LogCaptureFixture) -> None:
    resp = mint(stack, requested_token_type="urn:ietf:params:oauth:token-type:id_token")
    assert_refusal(resp, 400, "invalid_request", "Unsupported requested_token_type")
    assert_audited_reason(stack, caplog, "requested_token_type_unsupported")


# --- revocation epochs (deprovisioning) ---------------------------------------------------------


def test_admin_api_requires_the_admin_token(stack: Stack) -> None:
    resp = requests.post(f"{stack.issuer}/admin/users/{stack.user_id(USER)}/deprovision",
                         headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert_refusal(resp, 401, "invalid_token", "Invalid admin token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_deprovisioning_kills_issued_assertion(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack(tmp_path)
    try:
        stack.signed_in_and_connected("bob", ("crm",))
        assertion, key = stack.edge_mint("bob")
        assert stack.agent_exchange(assertion, key).status_code == 200
        resp = stack.deprovision(stack.user_id("bob"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["user_id"] == stack.user_id("bob")
        assert_refusal(stack.agent_exchange(assertion, key), 400, "invalid_request",
                       "subject_token is invalid, expired or revoked")
        # tokens.check_token_live, not check_subject_assertion's own user check (no reason).
        assert_rejected_because(caplog, "user inactive")
        assert_audited_reason(stack, caplog, "subject_token_user_inactive")
    finally:
        stack.close()


# --- issue 20 hardening: the ID token the edge exchanges --------------------------------------


def test_id_token_for_our_own_login_client_is_refused(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """A browser sign-in's ID token (aud = authserver's client id at the IdP) is not the
    edge's to exchange, even though it is for an audience we trust for login."""
    from tests.stack import AUTHSERVER_AT_IDP

    token = stack.idp.mint_id_token(USER, aud=AUTHSERVER_AT_IDP)
    key = stack.dpop_key()
    cid = correlation()
    resp = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt,
                                    headers={"X-Request-ID": cid})
    assert_refusal(resp, 400, "invalid_request", BAD_ID_TOKEN)
    assert_rejected_because(caplog, "aud is our own login client")
    assert_audited_reason(stack, caplog, "subject_token_idp_rejected")
    [record] = stack.audit_for(cid)
    assert record["outcome"] == "invalid"


def test_id_token_is_single_use(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    token = stack.idp_id_token(USER)
    key = stack.dpop_key()
    first = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt)
    assert first.status_code == 200, first.text
    again = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt)
    assert_refusal(again, 400, "invalid_request", BAD_ID_TOKEN)
    assert_rejected_because(caplog, "subject_token already used")
    assert_audited_reason(stack, caplog, "subject_token_replayed")


def test_refused_mint_does_not_spend_the_id_token(stack: Stack,
        caplog: pytest.LogCaptureFixture) -> None:
    token = stack.idp_id_token(USER)
    key = stack.dpop_key()
    assert_refusal(stack.edge_mint_response(token, mandate(), drop=("dpop_jkt",)), 400,
                   "invalid_request", NO_DPOP_JKT)
    assert_audited_reason(stack, caplog, "agent_key_missing")
    ok = stack.edge_mint_response(token, mandate(), dpop_jkt=key.dpop_jkt)
    assert ok.status_code == 200, ok.text


def test_tenant_not_bound_to_the_idp_is_refused(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The IdP is configured for tenant "acme" only; a token asserting another is refused."""
    monkeypatch.setitem(stack.idp.users[USER], "tenant", "globex")
    key = stack.dpop_key()
    resp = stack.edge_mint_response(stack.idp_id_token(USER), mandate(), dpop_jkt=key.dpop_jkt)
    assert_refusal(resp, 400, "invalid_request", BAD_ID_TOKEN)
    assert_rejected_because(caplog, "tenant 'globex' is not bound to idp corp")
    assert_audited_reason(stack, caplog, "subject_user_refused")
