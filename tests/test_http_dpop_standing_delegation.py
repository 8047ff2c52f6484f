"""Standing delegation: RFC 9396 `agent_mandate` at the authorization endpoint, RFC 9449 §10
`dpop_jkt` on the code, DPoP-bound tokens (RFC 9449 §5).

https://www.rfc-editor.org/rfc/rfc9396#section-2 and
https://www.rfc-editor.org/rfc/rfc9449#section-10 — the agent app sends the user through
/authorize; the consent page says in plain words which agent may do what, where; the code is
bound to the agent's key and so are its tokens.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from authserver.intent import describe_mandate, hash_request_text, parse_mandate
from tests.dpop_helpers import (
    TOKEN_ENDPOINT,
    ProofKey,
    app_config,
    settings_overrides,
)
from tests.http_helpers import (
    ISSUER,
    app,
    assert_token_error,
    authorization_params,
    authorize,
    client,
    decode_access_token,
    pkce_pair,
    public_client,
    redirect_params,
    redis_url,
    signed_in,
    user_id,
)

AGENT_NAME = "Pipeline Assistant"
REQUEST = "Keep my Acme deals up to date & tell me what's stale <weekly>"
MANDATE: list[dict[str, Any]] = [{
    "type": "agent_mandate",
    "platforms": [
        {"platform": "crm", "actions": ["read", "update"], "resources": ["deal:*"],
         "max_count": 5},
        {"platform": "projects", "actions": ["read"], "resources": ["board:42"],
         "max_count": 1},
    ],
    "channel": "chat",
    "request": REQUEST,
    "request_hash": hash_request_text(REQUEST),
}]

# pytest finds these fixtures by name in this module; listing them marks the imports used.
FIXTURES = (app, app_config, client, redis_url, settings_overrides, signed_in, user_id)


@pytest.fixture
def agent_app(client: FlaskClient) -> dict[str, Any]:
    return public_client(client, client_name=AGENT_NAME, scope="read")


@pytest.fixture
def key() -> ProofKey:
    return ProofKey()


def mandate_params(registered: dict[str, Any], challenge: str, key: ProofKey,
                   details: Any = MANDATE) -> dict[str, Any]:
    raw = details if isinstance(details, str) else json.dumps(details)
    return authorization_params(registered, challenge, authorization_details=raw,
                                dpop_jkt=key.jkt)


def page_text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def redeem(client: FlaskClient, registered: dict[str, Any], code: str, verifier: str,
           params: dict[str, Any], dpop: str | None) -> Any:
    headers = {"DPoP": dpop} if dpop is not None else {}
    return client.post("/token", headers=headers, data={
        "grant_type": "authorization_code", "client_id": registered["client_id"], "code": code,
        "code_verifier": verifier, "redirect_uri": params["redirect_uri"]})


def test_consent_page_states_agent_actions_and_places(client: FlaskClient, agent_app: dict,
                                                      signed_in: str, key: ProofKey) -> None:
    params = mandate_params(agent_app, pkce_pair()[1], key)
    page = client.get("/authorize", query_string=params)
    assert page.status_code == 200
    text = page_text(page)
    assert f"Allow {AGENT_NAME}?" in text
    for line in describe_mandate(MANDATE):
        assert line in text, line
    # The plain words, spelled out once so a wording regression shows here.
    assert "crm: read, update on deal:* (up to 5 records at a time)" in text
    assert "projects: read on board:42 (up to 1 record at a time)" in text
    assert f"Your request (chat): {REQUEST}" in text
    assert "bound to its own key (DPoP)" in text


def test_consent_page_escapes_the_request_text(client: FlaskClient, agent_app: dict,
                                              signed_in: str, key: ProofKey) -> None:
    # The request is user-supplied text: it must never become markup on our origin.
    page = client.get("/authorize", query_string=mandate_params(agent_app, pkce_pair()[1], key))
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "<weekly>" not in body
    assert "&lt;weekly&gt;" in body


def test_mandate_code_bound_to_key_gives_dpop_bound_tokens_with_the_mandate(
        client: FlaskClient, agent_app: dict, signed_in: str, key: ProofKey) -> None:
    verifier, challenge = pkce_pair()
    params = mandate_params(agent_app, challenge, key)
    code = authorize(client, params)
    response = redeem(client, agent_app, code, verifier, params, key.proof(TOKEN_ENDPOINT))
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["token_type"] == "DPoP"
    expected = [parse_mandate(MANDATE).to_authorization_details()]
    assert body["authorization_details"] == expected  # RFC 9396 §7
    claims = decode_access_token(client, body["access_token"])[1]
    assert claims["cnf"] == {"jkt": key.jkt}
    assert claims["authorization_details"] == expected
    assert claims["sub"] == signed_in
    # The refresh token is bound to the same key and keeps the mandate.
    refreshed = client.post("/token", headers={"DPoP": key.proof(TOKEN_ENDPOINT)}, data={
        "grant_type": "refresh_token", "client_id": agent_app["client_id"],
        "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.get_json()
    again = decode_access_token(client, refreshed.get_json()["access_token"])[1]
    assert again["cnf"] == {"jkt": key.jkt}
    assert again["authorization_details"] == expected


def test_mandate_code_redeemed_with_other_key_is_invalid_grant(
        client: FlaskClient, agent_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-26: the mandate is the user's standing consent; only the named key may use it.
    verifier, challenge = pkce_pair()
    params = mandate_params(agent_app, challenge, key)
    code = authorize(client, params)
    thief = ProofKey()
    response = redeem(client, agent_app, code, verifier, params, thief.proof(TOKEN_ENDPOINT))
    assert "access_token" not in assert_token_error(response, 400, "invalid_grant")


_VALID = MANDATE[0]
MALFORMED = {
    "not-json": "[{\"type\": \"agent_mandate\",",
    "not-an-array": json.dumps(_VALID),
    "empty-array": "[]",
    "agent-intent-type": json.dumps([{"type": "agent_intent", "actions": ["read"],
                                      "identifier": "deal:1", "context": {"channel": "chat"}}]),
    "unknown-type": json.dumps([{"type": "payment_initiation"}]),
    "two-mandates": json.dumps([_VALID, _VALID]),
    "missing-request-hash": json.dumps([{k: v for k, v in _VALID.items()
                                         if k != "request_hash"}]),
    "request-hash-mismatch": json.dumps([{**_VALID, "request_hash": "A" * 43}]),
    "unknown-action": json.dumps([{**_VALID, "platforms": [
        {"platform": "crm", "actions": ["admin"], "resources": ["deal:*"], "max_count": 1}]}]),
    "wildcard-inside": json.dumps([{**_VALID, "platforms": [
        {"platform": "crm", "actions": ["read"], "resources": ["deal:*:x"], "max_count": 1}]}]),
    "boolean-count": json.dumps([{**_VALID, "platforms": [
        {"platform": "crm", "actions": ["read"], "resources": ["deal:*"], "max_count": True}]}]),
    "unknown-member": json.dumps([{**_VALID, "locations": ["https://crm.example.com"]}]),
    "duplicate-member": '[{"type": "agent_mandate", "type": "agent_mandate"}]',
    # Both values valid: a parser keeping the first would disagree with one keeping the last.
    "duplicate-member-both-valid": json.dumps([_VALID])[:-2] + ', "channel": "email"}]',
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_authorization_details_redirects_with_invalid_authorization_details(
        client: FlaskClient, agent_app: dict, signed_in: str, key: ProofKey, raw: str) -> None:
    # RAR-04 (RFC 9396 §5): the client learns by redirect, with its state and our iss.
    params = mandate_params(agent_app, pkce_pair()[1], key, details=raw)
    response = client.get("/authorize", query_string=params)
    query = redirect_params(response)
    assert query["error"] == "invalid_authorization_details"
    assert query["state"] == params["state"]
    assert query["iss"] == ISSUER  # RFC 9207
    assert "code" not in query
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
