"""RFC 6749 §6 refresh with rotation and reuse detection (RFC 9700 §4.14.2, BCP-06), and the
reuse interval for a retried rotation (BCP-07).

Every refresh returns a new refresh token and retires the old one; presenting a retired one
revokes the whole family: the newest refresh token and every access token of the grant.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import TestClock
from tests.http_helpers import (  # noqa: F401
    RESOURCE,
    STORES,
    app,
    app_config,
    assert_token_error,
    auth_for,
    authorization_params,
    authorize,
    client,
    code_flow,
    confidential_client,
    decode_access_token,
    introspect,
    pkce_pair,
    public_client,
    redis_url,
    signed_in,
    token_request,
    user_id,
)


@pytest.fixture
def rp(client: FlaskClient) -> dict[str, Any]:
    return confidential_client(client, scope="read write")


def refresh(client: FlaskClient, registered: dict[str, Any], token: str, **form: Any) -> Any:
    return token_request(client, registered, grant_type="refresh_token", refresh_token=token,
                         **form)


def test_refresh_rotates_the_refresh_token(client: FlaskClient, rp: dict,
                                           signed_in: str) -> None:
    first = code_flow(client, rp, scope="read write")
    response = refresh(client, rp, first["refresh_token"])
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    second = response.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == "read write"
    claims = decode_access_token(client, second["access_token"])[1]
    assert claims["sub"] == signed_in
    # The old one is retired, the new one and the first access token are live.
    assert introspect(client, rp, first["refresh_token"]) == {"active": False}
    assert introspect(client, rp, second["refresh_token"])["active"] is True
    assert introspect(client, rp, first["access_token"])["active"] is True


def test_refresh_may_narrow_the_scope(client: FlaskClient, rp: dict, signed_in: str) -> None:
    first = code_flow(client, rp, scope="read write")
    response = refresh(client, rp, first["refresh_token"], scope="read")
    assert response.status_code == 200
    assert response.get_json()["scope"] == "read"


def test_public_client_refreshes_without_a_secret(client: FlaskClient, signed_in: str) -> None:
    registered = public_client(client)
    first = code_flow(client, registered)
    response = refresh(client, registered, first["refresh_token"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["refresh_token"] != first["refresh_token"]


@STORES
def test_reused_refresh_token_is_invalid_grant_and_revokes_the_family(
        client: FlaskClient, rp: dict, signed_in: str) -> None:
    first = code_flow(client, rp)
    second = refresh(client, rp, first["refresh_token"]).get_json()
    third = refresh(client, rp, second["refresh_token"]).get_json()

    assert_token_error(refresh(client, rp, first["refresh_token"]), 400, "invalid_grant")

    # The newest refresh token and every access token of the grant are dead.
    for token in (third["refresh_token"], first["access_token"], second["access_token"],
                  third["access_token"]):
        assert introspect(client, rp, token) == {"active": False}
    assert_token_error(refresh(client, rp, third["refresh_token"]), 400, "invalid_grant")


def test_reuse_does_not_touch_other_grants_of_the_same_user(client: FlaskClient, rp: dict,
                                                            signed_in: str) -> None:
    stolen = code_flow(client, rp)
    other = code_flow(client, rp)
    refresh(client, rp, stolen["refresh_token"])
    refresh(client, rp, stolen["refresh_token"])
    assert introspect(client, rp, other["refresh_token"])["active"] is True


def test_other_clients_refresh_token_is_invalid_grant(client: FlaskClient, rp: dict,
                                                      signed_in: str) -> None:
    first = code_flow(client, rp)
    thief = confidential_client(client)
    assert_token_error(refresh(client, thief, first["refresh_token"]), 400, "invalid_grant")
    # A failed theft neither rotates nor revokes the rightful client's token.
    assert refresh(client, rp, first["refresh_token"]).status_code == 200


def test_scope_widening_is_invalid_scope(client: FlaskClient, rp: dict, signed_in: str) -> None:
    first = code_flow(client, rp, scope="read")
    assert_token_error(refresh(client, rp, first["refresh_token"], scope="read write"), 400,
                       "invalid_scope")
    # The rejected request did not consume the token.
    assert refresh(client, rp, first["refresh_token"]).status_code == 200


def test_resource_outside_the_grant_is_invalid_target(client: FlaskClient, rp: dict,
                                                      signed_in: str) -> None:
    first = code_flow(client, rp)
    assert_token_error(refresh(client, rp, first["refresh_token"], resource=RESOURCE), 400,
                       "invalid_target")


def test_resource_within_the_grant_sets_the_audience(client: FlaskClient, rp: dict,
                                                     signed_in: str) -> None:
    first = code_flow(client, rp, resource=RESOURCE)
    response = refresh(client, rp, first["refresh_token"], resource=RESOURCE)
    assert response.status_code == 200, response.get_json()
    assert decode_access_token(client, response.get_json()["access_token"])[1]["aud"] == RESOURCE


def test_unknown_refresh_token_is_invalid_grant(client: FlaskClient, rp: dict) -> None:
    assert_token_error(refresh(client, rp, "not-a-refresh-token"), 400, "invalid_grant")


def test_missing_refresh_token_is_invalid_request(client: FlaskClient, rp: dict) -> None:
    response = token_request(client, rp, grant_type="refresh_token")
    assert_token_error(response, 400, "invalid_request")


def test_expired_refresh_token_is_invalid_grant(client: FlaskClient, rp: dict, signed_in: str,
                                                clock: TestClock) -> None:
    from authserver.config import REFRESH_TOKEN_TTL

    first = code_flow(client, rp)
    clock.advance(REFRESH_TOKEN_TTL + 1)
    assert_token_error(refresh(client, rp, first["refresh_token"]), 400, "invalid_grant")


def test_client_without_the_refresh_grant_is_unauthorized_client(client: FlaskClient,
                                                                 signed_in: str) -> None:
    registered = confidential_client(client, grant_types=["authorization_code"])
    assert_token_error(refresh(client, registered, "anything"), 400, "unauthorized_client")


def test_refresh_token_of_a_deactivated_user_is_invalid_grant(app: Any, client: FlaskClient,
                                                              rp: dict, signed_in: str) -> None:
    from authserver.models import User

    first = code_flow(client, rp)
    with app.extensions["authserver"].db.session() as session:
        session.get(User, signed_in).active = False
    assert_token_error(refresh(client, rp, first["refresh_token"]), 400, "invalid_grant")


# --- the reuse interval: a lost token response does not sign the user out (issue 13, item 6) --
#
# A client whose refresh response was lost (the worker died after the rotation committed)
# retries with the token it still has. Within REFRESH_TOKEN_REUSE_INTERVAL of the rotation, the
# same sender-constrained client (its credentials; the DPoP key the rotation saw) gets the SAME
# successor back, never a new one. Anything else is reuse: invalid_grant, family revoked.


def grant_rows(app: Any, refresh_token: str) -> list[Any]:
    """Every refresh token row of the grant that `refresh_token` belongs to."""
    from sqlalchemy import select

    from authserver import refresh_tokens
    from authserver.models import RefreshToken

    with app.extensions["authserver"].db.session() as session:
        row = refresh_tokens.find(session, refresh_token)
        assert row is not None
        rows = session.scalars(select(RefreshToken).where(RefreshToken.grant_id == row.grant_id))
        return list(rows)


def assert_family_revoked(client: FlaskClient, rp: dict, *tokens: str) -> None:
    for token in tokens:
        assert introspect(client, rp, token) == {"active": False}


def reuse_count(outcome: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("authserver_refresh_token_reuse_total",
                                      {"outcome": outcome})
    return value or 0.0


def assert_reuse_rejected(response: Any) -> None:
    body = assert_token_error(response, 400, "invalid_grant")
    assert body["error_description"] == "The refresh token was already used"
    assert "refresh_token" not in body and "access_token" not in body


@STORES
def test_retry_within_the_reuse_interval_gets_the_same_successor(
        app: Any, client: FlaskClient, rp: dict, signed_in: str, clock: TestClock) -> None:
    from authserver.config import REFRESH_TOKEN_REUSE_INTERVAL

    first = code_flow(client, rp)
    clock.freeze()  # the retry comes exactly REFRESH_TOKEN_REUSE_INTERVAL after the rotation
    lost = refresh(client, rp, first["refresh_token"]).get_json()  # the response never arrives
    clock.advance(REFRESH_TOKEN_REUSE_INTERVAL)
    retried, revoked = reuse_count("retried"), reuse_count("revoked")
    retry = refresh(client, rp, first["refresh_token"])
    assert retry.status_code == 200, retry.get_json()
    assert (reuse_count("retried"), reuse_count("revoked")) == (retried + 1, revoked)
    assert retry.headers["Cache-Control"] == "no-store"
    body = retry.get_json()
    assert body["refresh_token"] == lost["refresh_token"]
    assert decode_access_token(client, body["access_token"])[1]["sub"] == signed_in
    # No new family member, and the family is live: the successor refreshes as usual.
    assert len(grant_rows(app, first["refresh_token"])) == 2
    assert introspect(client, rp, lost["refresh_token"])["active"] is True
    assert introspect(client, rp, body["access_token"])["active"] is True
    nxt = refresh(client, rp, body["refresh_token"])
    assert nxt.status_code == 200, nxt.get_json()
    assert nxt.get_json()["refresh_token"] != body["refresh_token"]


def test_retry_after_the_reuse_interval_is_invalid_grant_and_revokes_the_family(
        client: FlaskClient, rp: dict, signed_in: str, clock: TestClock) -> None:
    from authserver.config import REFRESH_TOKEN_REUSE_INTERVAL

    first = code_flow(client, rp)
    lost = refresh(client, rp, first["refresh_token"]).get_json()
    clock.advance(REFRESH_TOKEN_REUSE_INTERVAL + 1)
    revoked = reuse_count("revoked")
    assert_reuse_rejected(refresh(client, rp, first["refresh_token"]))
    assert reuse_count("revoked") == revoked + 1
    assert_family_revoked(client, rp, lost["refresh_token"], lost["access_token"],
                          first["access_token"])


def test_retry_after_the_successor_was_used_is_invalid_grant_and_revokes_the_family(
        client: FlaskClient, rp: dict, signed_in: str) -> None:
    # The client did receive the successor (it used it): the old token is someone else's copy.
    first = code_flow(client, rp)
    second = refresh(client, rp, first["refresh_token"]).get_json()
    third = refresh(client, rp, second["refresh_token"]).get_json()
    assert_reuse_rejected(refresh(client, rp, first["refresh_token"]))
    assert_family_revoked(client, rp, third["refresh_token"], third["access_token"])


@pytest.mark.parametrize("retry_key", ["other-key", "no-proof"])
def test_retry_with_another_dpop_key_is_invalid_grant_and_revokes_the_family(
        client: FlaskClient, rp: dict, signed_in: str, retry_key: str) -> None:
    # A confidential client's grant is not bound to a key, but the rotation saw one: a retry
    # must come from that key (or, unbound, from no key) to count as the same client.
    from tests.dpop_helpers import TOKEN_ENDPOINT, ProofKey

    key = ProofKey()
    first = code_flow(client, rp)
    headers, _ = auth_for(rp)
    lost = client.post("/token", data={"grant_type": "refresh_token",
                                       "refresh_token": first["refresh_token"]},
                       headers={**headers, "DPoP": key.proof(TOKEN_ENDPOINT)})
    assert lost.status_code == 200, lost.get_json()
    assert lost.get_json()["token_type"] == "DPoP"
    if retry_key == "other-key":
        headers = {**headers, "DPoP": ProofKey().proof(TOKEN_ENDPOINT)}
    retry = client.post("/token", data={"grant_type": "refresh_token",
                                        "refresh_token": first["refresh_token"]},
                        headers=headers)
    assert_reuse_rejected(retry)
    assert_family_revoked(client, rp, lost.get_json()["refresh_token"])


def test_retry_with_the_same_dpop_key_gets_the_same_successor(
        client: FlaskClient, rp: dict, signed_in: str) -> None:
    from tests.dpop_helpers import TOKEN_ENDPOINT, ProofKey

    key = ProofKey()
    first = code_flow(client, rp)
    headers, _ = auth_for(rp)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    lost = client.post("/token", data=form,
                       headers={**headers, "DPoP": key.proof(TOKEN_ENDPOINT)}).get_json()
    retry = client.post("/token", data=form,
                        headers={**headers, "DPoP": key.proof(TOKEN_ENDPOINT)})
    assert retry.status_code == 200, retry.get_json()
    assert retry.get_json()["refresh_token"] == lost["refresh_token"]
    assert decode_access_token(client, retry.get_json()["access_token"])[1]["cnf"] == \
        {"jkt": key.jkt}


def test_public_client_bound_to_a_dpop_key_retries_within_the_interval(
        client: FlaskClient, signed_in: str) -> None:
    from tests.dpop_helpers import TOKEN_ENDPOINT, ProofKey

    key = ProofKey()
    registered = public_client(client)
    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge)
    code = authorize(client, params)
    first = client.post("/token", data={
        "grant_type": "authorization_code", "client_id": registered["client_id"], "code": code,
        "redirect_uri": params["redirect_uri"], "code_verifier": verifier,
    }, headers={"DPoP": key.proof(TOKEN_ENDPOINT)}).get_json()
    form = {"grant_type": "refresh_token", "client_id": registered["client_id"],
            "refresh_token": first["refresh_token"]}
    lost = client.post("/token", data=form, headers={"DPoP": key.proof(TOKEN_ENDPOINT)})
    assert lost.status_code == 200, lost.get_json()
    retry = client.post("/token", data=form, headers={"DPoP": key.proof(TOKEN_ENDPOINT)})
    assert retry.status_code == 200, retry.get_json()
    assert retry.get_json()["refresh_token"] == lost.get_json()["refresh_token"]


def test_public_client_without_a_dpop_key_gets_no_reuse_interval(
        client: FlaskClient, signed_in: str) -> None:
    # Nothing shows that a retry comes from the same public, unbound client (its client_id is
    # public): every reuse revokes, as before.
    registered = public_client(client)
    first = code_flow(client, registered)
    lost = refresh(client, registered, first["refresh_token"]).get_json()
    assert_reuse_rejected(refresh(client, registered, first["refresh_token"]))
    body = assert_token_error(refresh(client, registered, lost["refresh_token"]), 400,
                              "invalid_grant")
    assert body["error_description"] == "The refresh token was revoked"


def test_retry_by_another_client_is_invalid_grant(client: FlaskClient, rp: dict,
                                                  signed_in: str) -> None:
    first = code_flow(client, rp)
    lost = refresh(client, rp, first["refresh_token"]).get_json()
    thief = confidential_client(client)
    assert_token_error(refresh(client, thief, first["refresh_token"]), 400, "invalid_grant")
    assert introspect(client, rp, lost["refresh_token"])["active"] is True


class TestReuseIntervalOff:
    @pytest.fixture
    def app_config(self, app_config: dict[str, Any]) -> dict[str, Any]:
        return {**app_config, "refresh_token_reuse_interval": 0}

    def test_zero_turns_the_reuse_interval_off(self, client: FlaskClient, rp: dict,
                                               signed_in: str) -> None:
        first = code_flow(client, rp)
        lost = refresh(client, rp, first["refresh_token"]).get_json()
        assert_reuse_rejected(refresh(client, rp, first["refresh_token"]))
        assert_family_revoked(client, rp, lost["refresh_token"])


PARALLEL_REFRESHES = 50


@STORES
def test_parallel_refreshes_of_one_token_give_exactly_one_new_family_member(
        app: Any, client: FlaskClient, rp: dict, signed_in: str) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    first = code_flow(client, rp)
    barrier = Barrier(PARALLEL_REFRESHES)

    def one(_: int) -> tuple[int, dict[str, Any]]:
        http = app.test_client()
        barrier.wait()
        response = refresh(http, rp, first["refresh_token"])
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(PARALLEL_REFRESHES) as pool:
        results = list(pool.map(one, range(PARALLEL_REFRESHES)))

    statuses = sorted({status for status, _ in results})
    successors = {body["refresh_token"] for status, body in results if status == 200}
    assert len(successors) == 1, statuses
    assert len(grant_rows(app, first["refresh_token"])) == 2
    # Losers of the race are retries within the interval (the same successor) or, where the
    # database refused the concurrent write, 503 with Retry-After: never a second member,
    # never a 500, never a revoked family.
    for status, body in results:
        assert status in (200, 503), (status, body)
    (successor,) = successors
    assert introspect(client, rp, successor)["active"] is True

