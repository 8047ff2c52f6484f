"""One private_key_jwt verifier, one replay namespace (RFC 7523 §3 item 7, JWTB-05).

An agent's client assertion is single use wherever it is presented: as client authentication
at /token or /introspect, or as the `actor_token` an edge sends to name the agent. Spent at
one, it is refused at every other (earlier, the actor-token check kept its own replay keys, so
one assertion could be spent once at each).
"""

from __future__ import annotations

import pytest
import requests

from authserver.clients import CLIENT_ASSERTION_TYPE
from tests.http_helpers import assert_refusal
from tests.stack import Stack, mandate

USER = "alice"
HTTP_TIMEOUT = 30
ACTOR_TOKEN_SPENT = "actor_token was already used"
CLIENT_ASSERTION_SPENT = "client_assertion was already used"

#: The module's `stack` (tests/conftest.py): the user signed in and connected to the CRM.
pytestmark = pytest.mark.stack(connected=(USER,))


def _client_auth(assertion: str) -> dict[str, str]:
    return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}


def token_with(stack: Stack, assertion: str) -> requests.Response:
    """client_credentials at /token, the agent authenticated by `assertion`."""
    return requests.post(stack.issuer + "/token", timeout=HTTP_TIMEOUT, data={
        "grant_type": "client_credentials", **_client_auth(assertion)})


def introspect_with(stack: Stack, assertion: str) -> requests.Response:
    return requests.post(stack.issuer + "/introspect", timeout=HTTP_TIMEOUT, data={
        "token": "not-a-token", **_client_auth(assertion)})


def mint_with(stack: Stack, actor_token: str) -> requests.Response:
    """The edge mint naming the agent by `actor_token`."""
    key = stack.dpop_key()
    return stack.edge_mint_response(stack.idp_id_token(USER), mandate(),
                                    dpop_jkt=key.dpop_jkt, actor_token=actor_token)


def test_spent_at_token_endpoint_then_as_actor_token(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert token_with(stack, assertion).status_code == 200
    assert_refusal(mint_with(stack, assertion), 400, "invalid_request", ACTOR_TOKEN_SPENT)


def test_spent_as_actor_token_then_at_token_endpoint(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert mint_with(stack, assertion).status_code == 200
    assert_refusal(token_with(stack, assertion), 401, "invalid_client", CLIENT_ASSERTION_SPENT)


def test_spent_as_actor_token_then_at_introspection(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert mint_with(stack, assertion).status_code == 200
    assert_refusal(introspect_with(stack, assertion), 401, "invalid_client", CLIENT_ASSERTION_SPENT)


def test_spent_at_introspection_then_as_actor_token(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert introspect_with(stack, assertion).status_code == 200
    assert_refusal(mint_with(stack, assertion), 400, "invalid_request", ACTOR_TOKEN_SPENT)


def test_spent_at_introspection_then_at_token_endpoint(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert introspect_with(stack, assertion).status_code == 200
    assert_refusal(token_with(stack, assertion), 401, "invalid_client", CLIENT_ASSERTION_SPENT)


def test_a_fresh_assertion_works_everywhere(stack: Stack) -> None:
    assert token_with(stack, stack.agent.assertion(stack.issuer)).status_code == 200
    assert introspect_with(stack, stack.agent.assertion(stack.issuer)).status_code == 200
    assert mint_with(stack, stack.agent.assertion(stack.issuer)).status_code == 200
