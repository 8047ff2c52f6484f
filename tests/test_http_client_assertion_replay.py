"""One private_key_jwt verifier, one replay namespace (RFC 7523 §3 item 7, JWTB-05).

An agent's client assertion is single use wherever it is presented: as client authentication
at /token or /introspect, or as the `actor_token` an edge sends to name the agent. Spent at
one, it is refused at every other (earlier, the actor-token check kept its own replay keys, so
one assertion could be spent once at each).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from authserver.clients import CLIENT_ASSERTION_TYPE
from tests.stack import Stack, make_stack, mandate

USER = "alice"
HTTP_TIMEOUT = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("assertion-replay"))
    s.signed_in_and_connected(USER, ("crm",))
    yield s
    s.close()


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


def assert_error(resp: requests.Response, status: int, error: str,
                 description: str) -> dict[str, Any]:
    body = resp.json()
    assert resp.status_code == status, (resp.status_code, body)
    assert body["error"] == error, body
    assert description in body.get("error_description", ""), body
    assert resp.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert resp.headers.get("WWW-Authenticate"), resp.headers
    return body  # type: ignore[no-any-return]


def test_spent_at_token_endpoint_then_as_actor_token(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert token_with(stack, assertion).status_code == 200
    assert_error(mint_with(stack, assertion), 400, "invalid_request", "already used")


def test_spent_as_actor_token_then_at_token_endpoint(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert mint_with(stack, assertion).status_code == 200
    assert_error(token_with(stack, assertion), 401, "invalid_client", "")


def test_spent_as_actor_token_then_at_introspection(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert mint_with(stack, assertion).status_code == 200
    assert_error(introspect_with(stack, assertion), 401, "invalid_client", "")


def test_spent_at_introspection_then_as_actor_token(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert introspect_with(stack, assertion).status_code == 200
    assert_error(mint_with(stack, assertion), 400, "invalid_request", "already used")


def test_spent_at_introspection_then_at_token_endpoint(stack: Stack) -> None:
    assertion = stack.agent.assertion(stack.issuer)
    assert introspect_with(stack, assertion).status_code == 200
    assert_error(token_with(stack, assertion), 401, "invalid_client", "")


def test_a_fresh_assertion_works_everywhere(stack: Stack) -> None:
    assert token_with(stack, stack.agent.assertion(stack.issuer)).status_code == 200
    assert introspect_with(stack, stack.agent.assertion(stack.issuer)).status_code == 200
    assert mint_with(stack, stack.agent.assertion(stack.issuer)).status_code == 200
