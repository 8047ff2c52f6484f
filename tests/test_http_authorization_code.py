"""RFC 6749 §4.1 authorization code with PKCE S256 (RFC 7636, RFC 9700 §2.1.1) over HTTP.

Authorization endpoint: errors before client and redirect URI are trusted are a 400 page and
never a redirect; later ones redirect with `error`, `state` and `iss` (GEN-04, RFC 9207).
Token endpoint: exact redirect URI, verifier, single-use codes (reuse revokes what the code
produced), short lifetime.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import TestClock
from tests.http_helpers import (  # noqa: F401
    ISSUER,
    REDIRECT_URI,
    RESOURCE,
    STORES,
    app,
    app_config,
    assert_token_error,
    authorization_params,
    authorize,
    client,
    confidential_client,
    decide,
    decode_access_token,
    introspect,
    login,
    pkce_pair,
    public_client,
    redirect_params,
    redis_url,
    signed_in,
    token_request,
    user_id,
)


@pytest.fixture
def rp(client: FlaskClient) -> dict[str, Any]:
    return confidential_client(client)


@pytest.fixture
def pkce() -> tuple[str, str]:
    return pkce_pair()


def redeem(client: FlaskClient, registered: dict[str, Any], code: str, verifier: str,
           **form: Any) -> Any:
    fields = {"grant_type": "authorization_code", "code": code,
              "redirect_uri": registered["redirect_uris"][0], "code_verifier": verifier}
    fields.update(form)
    return token_request(client, registered, **{k: v for k, v in fields.items()
                                                if v is not None})


def assert_error_page(response: Any) -> None:
    """GEN-04: a 400 page, no Location: the client or redirect URI is not trusted."""
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"


def assert_error_redirect(response: Any, error: str, params: dict[str, Any]) -> None:
    assert response.status_code in (302, 303)
    location = response.headers["Location"]
    assert location.startswith(params["redirect_uri"] + "?")
    query = redirect_params(response)
    assert query["error"] == error
    assert query["state"] == params["state"]
    assert query["iss"] == ISSUER  # RFC 9207
    assert "code" not in query


# --- the happy path ----------------------------------------------------------------------------


def test_code_flow_issues_tokens_for_the_user(client: FlaskClient, rp: dict, signed_in: str,
                                             pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    params = authorization_params(rp, challenge)
    code = authorize(client, params)  # asserts state and iss in the redirect
    response = redeem(client, rp, code, verifier)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"]
    assert body["scope"] == "read"
    header, claims = decode_access_token(client, body["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == signed_in
    assert claims["client_id"] == rp["client_id"]
    assert claims["iss"] == ISSUER and claims["aud"] == ISSUER
    assert claims["auth_time"] <= claims["iat"]


def test_authorization_response_redirect_is_303(client: FlaskClient, rp: dict, signed_in: str,
                                                pkce: tuple[str, str]) -> None:
    # RFC 9700 §4.12: never 307 after the credential-bearing consent POST.
    response = decide(client, authorization_params(rp, pkce[1]))
    assert response.status_code == 303
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")


def test_resource_in_the_request_becomes_the_audience(client: FlaskClient, rp: dict,
                                                      signed_in: str,
                                                      pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge, resource=RESOURCE))
    response = redeem(client, rp, code, verifier, resource=RESOURCE)
    assert response.status_code == 200, response.get_json()
    assert decode_access_token(client, response.get_json()["access_token"])[1]["aud"] == RESOURCE


def test_resource_spelled_differently_is_the_registered_resource(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    """RFC 3986 §6 comparison at /authorize and /token: an uppercase host at one and a
    trailing slash at the other still name the registered resource, which becomes `aud`."""
    verifier, challenge = pkce
    upper = RESOURCE.replace("api.example.com", "API.EXAMPLE.COM")
    code = authorize(client, authorization_params(rp, challenge, resource=upper))
    response = redeem(client, rp, code, verifier, resource=RESOURCE + "/")
    assert response.status_code == 200, response.get_json()
    assert decode_access_token(client, response.get_json()["access_token"])[1]["aud"] == RESOURCE


def test_token_request_resource_not_authorized_is_invalid_target(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    assert_token_error(redeem(client, rp, code, verifier, resource=RESOURCE), 400,
                       "invalid_target")


def test_public_client_redeems_with_pkce_and_no_secret(client: FlaskClient, signed_in: str,
                                                       pkce: tuple[str, str]) -> None:
    registered = public_client(client)
    verifier, challenge = pkce
    code = authorize(client, authorization_params(registered, challenge))
    response = redeem(client, registered, code, verifier)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["refresh_token"]


def test_not_signed_in_is_sent_to_login(client: FlaskClient, rp: dict,
                                        pkce: tuple[str, str]) -> None:
    response = client.get("/authorize", query_string=authorization_params(rp, pkce[1]))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


# --- authorization endpoint: no redirect (GEN-04) -----------------------------------------------


def test_unknown_client_is_an_error_page(client: FlaskClient, signed_in: str,
                                         pkce: tuple[str, str]) -> None:
    params = authorization_params({"client_id": "cli_nobody", "redirect_uris": [REDIRECT_URI]},
                                  pkce[1])
    assert_error_page(client.get("/authorize", query_string=params))


def test_missing_client_id_is_an_error_page(client: FlaskClient, rp: dict, signed_in: str,
                                            pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1])
    del params["client_id"]
    assert_error_page(client.get("/authorize", query_string=params))


def test_unregistered_redirect_uri_is_an_error_page(client: FlaskClient, rp: dict,
                                                    signed_in: str,
                                                    pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1], redirect_uri="https://evil.example.com/cb")
    assert_error_page(client.get("/authorize", query_string=params))


@pytest.mark.parametrize("suffix", ["/", "?x=1", "/../cb", "#"])
def test_redirect_uri_is_matched_exactly(client: FlaskClient, rp: dict, signed_in: str,
                                         pkce: tuple[str, str], suffix: str) -> None:
    # BCP-01: exact string comparison, no prefix or normalisation.
    params = authorization_params(rp, pkce[1], redirect_uri=REDIRECT_URI + suffix)
    assert_error_page(client.get("/authorize", query_string=params))


def test_unregistered_redirect_uri_is_an_error_page_on_post(client: FlaskClient, rp: dict,
                                                            signed_in: str,
                                                            pkce: tuple[str, str]) -> None:
    # The consent POST re-validates everything: a tampered form cannot redirect elsewhere.
    params = authorization_params(rp, pkce[1])
    from tests.http_helpers import consent_form

    fields = consent_form(client, params)
    fields["redirect_uri"] = ["https://evil.example.com/cb"]
    assert_error_page(client.post("/authorize", data={**fields, "decision": "allow"}))


def test_redirect_uri_may_be_omitted_when_only_one_is_registered(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1], redirect_uri=None)
    response = decide(client, params)
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")


# --- authorization endpoint: errors by redirect ---------------------------------------------------


@pytest.mark.parametrize("response_type", ["token", "code token", "id_token", ""])
def test_unsupported_response_type_redirects_with_error(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str],
        response_type: str) -> None:
    params = authorization_params(rp, pkce[1], response_type=response_type)
    assert_error_redirect(client.get("/authorize", query_string=params),
                          "unsupported_response_type", params)


def test_missing_code_challenge_redirects_with_invalid_request(
        client: FlaskClient, rp: dict, signed_in: str) -> None:
    params = authorization_params(rp, "x", code_challenge=None, code_challenge_method=None)
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request",
                          params)


def test_plain_pkce_redirects_with_invalid_request(client: FlaskClient, rp: dict,
                                                   signed_in: str,
                                                   pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[0][:43], code_challenge_method="plain")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request",
                          params)


def test_missing_code_challenge_method_redirects_with_invalid_request(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    # RFC 7636 defaults a missing method to plain; we accept S256 only.
    params = authorization_params(rp, pkce[1], code_challenge_method=None)
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request",
                          params)


def test_malformed_code_challenge_redirects_with_invalid_request(
        client: FlaskClient, rp: dict, signed_in: str) -> None:
    params = authorization_params(rp, "too-short")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request",
                          params)


def test_unknown_resource_redirects_with_invalid_target(client: FlaskClient, rp: dict,
                                                        signed_in: str,
                                                        pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1], resource="https://unknown.example.com/")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_target",
                          params)


def test_resource_with_fragment_redirects_with_invalid_target(client: FlaskClient, rp: dict,
                                                              signed_in: str,
                                                              pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1], resource=RESOURCE + "#x")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_target",
                          params)


@pytest.mark.parametrize("jkt", ["short", "x" * 42 + "!", "a" * 44])
def test_malformed_dpop_jkt_redirects_with_invalid_request(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str], jkt: str) -> None:
    params = authorization_params(rp, pkce[1], dpop_jkt=jkt)
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request",
                          params)


def test_unsupported_scope_redirects_with_invalid_scope(client: FlaskClient, rp: dict,
                                                        signed_in: str,
                                                        pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1], scope="read admin")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_scope",
                          params)


def test_repeated_parameter_redirects_with_invalid_request(client: FlaskClient, rp: dict,
                                                           signed_in: str,
                                                           pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1])
    query = {**params, "scope": ["read", "write"]}
    assert_error_redirect(client.get("/authorize", query_string=query), "invalid_request",
                          params)


def test_request_object_redirects_with_invalid_request(client: FlaskClient, rp: dict,
                                                       signed_in: str,
                                                       pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1], request="eyJhbGciOiJub25lIn0.e30.")
    assert_error_redirect(client.get("/authorize", query_string=params), "invalid_request",
                          params)


def test_client_without_the_code_grant_redirects_with_unauthorized_client(
        client: FlaskClient, signed_in: str, pkce: tuple[str, str]) -> None:
    from tests.http_helpers import register_client

    registered = register_client(client, redirect_uris=[REDIRECT_URI],
                                 grant_types=["client_credentials"], response_types=[])
    params = authorization_params(registered, pkce[1])
    assert_error_redirect(client.get("/authorize", query_string=params), "unauthorized_client",
                          params)


def test_user_denial_redirects_with_access_denied(client: FlaskClient, rp: dict,
                                                  signed_in: str,
                                                  pkce: tuple[str, str]) -> None:
    params = authorization_params(rp, pkce[1])
    assert_error_redirect(decide(client, params, decision="deny"), "access_denied", params)


def test_consent_post_without_csrf_token_is_rejected(client: FlaskClient, rp: dict,
                                                     signed_in: str,
                                                     pkce: tuple[str, str]) -> None:
    from tests.http_helpers import consent_form

    fields = consent_form(client, authorization_params(rp, pkce[1]))
    del fields["csrf_token"]
    response = client.post("/authorize", data={**fields, "decision": "allow"})
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_consent_post_from_another_session_is_rejected(app: Flask, client: FlaskClient,
                                                       rp: dict, signed_in: str,
                                                       pkce: tuple[str, str]) -> None:
    from tests.http_helpers import PASSWORD, USERNAME, consent_form

    fields = consent_form(client, authorization_params(rp, pkce[1]))
    other = app.test_client()
    login(other, USERNAME, PASSWORD)
    response = other.post("/authorize", data={**fields, "decision": "allow"})
    assert response.status_code == 400
    assert "Location" not in response.headers


# --- token endpoint -----------------------------------------------------------------------------


@STORES
def test_code_reuse_is_invalid_grant_and_revokes_what_it_issued(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    first = redeem(client, rp, code, verifier).get_json()
    assert introspect(client, rp, first["access_token"])["active"] is True
    assert introspect(client, rp, first["refresh_token"])["active"] is True

    assert_token_error(redeem(client, rp, code, verifier), 400, "invalid_grant")

    # RFC 6749 §4.1.2 / BCP: everything the first redemption produced is dead.
    assert introspect(client, rp, first["access_token"]) == {"active": False}
    assert introspect(client, rp, first["refresh_token"]) == {"active": False}
    assert_token_error(token_request(client, rp, grant_type="refresh_token",
                                     refresh_token=first["refresh_token"]),
                       400, "invalid_grant")


def test_code_reuse_after_expiry_still_revokes_what_it_issued(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str],
        clock: TestClock) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    first = redeem(client, rp, code, verifier).get_json()
    clock.advance(120)
    assert_token_error(redeem(client, rp, code, verifier), 400, "invalid_grant")
    assert introspect(client, rp, first["refresh_token"]) == {"active": False}


def test_wrong_code_verifier_is_invalid_grant(client: FlaskClient, rp: dict, signed_in: str,
                                              pkce: tuple[str, str]) -> None:
    _, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    assert_token_error(redeem(client, rp, code, pkce_pair()[0]), 400, "invalid_grant")


def test_missing_code_verifier_is_invalid_request(client: FlaskClient, rp: dict,
                                                  signed_in: str,
                                                  pkce: tuple[str, str]) -> None:
    code = authorize(client, authorization_params(rp, pkce[1]))
    assert_token_error(redeem(client, rp, code, None), 400, "invalid_request")  # type: ignore


def test_verifier_equal_to_the_challenge_is_invalid_grant(client: FlaskClient, rp: dict,
                                                          signed_in: str,
                                                          pkce: tuple[str, str]) -> None:
    # A plain-method downgrade: sending the challenge itself as the verifier.
    code = authorize(client, authorization_params(rp, pkce[1]))
    assert_token_error(redeem(client, rp, code, pkce[1]), 400, "invalid_grant")


def test_failed_verifier_does_not_burn_the_code(client: FlaskClient, rp: dict, signed_in: str,
                                                pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    assert_token_error(redeem(client, rp, code, pkce_pair()[0]), 400, "invalid_grant")
    assert redeem(client, rp, code, verifier).status_code == 200


def test_wrong_redirect_uri_at_the_token_endpoint_is_invalid_grant(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    response = redeem(client, rp, code, verifier, redirect_uri=REDIRECT_URI + "/other")
    assert_token_error(response, 400, "invalid_grant")


def test_missing_redirect_uri_at_the_token_endpoint_is_invalid_grant(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    response = redeem(client, rp, code, verifier, redirect_uri=None)
    assert_token_error(response, 400, "invalid_grant")


def test_expired_code_is_invalid_grant(client: FlaskClient, rp: dict, signed_in: str,
                                       pkce: tuple[str, str],
                                       clock: TestClock) -> None:
    from authserver.config import AUTHORIZATION_CODE_TTL

    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    clock.advance(AUTHORIZATION_CODE_TTL + 1)
    assert_token_error(redeem(client, rp, code, verifier), 400, "invalid_grant")


def test_unknown_code_is_invalid_grant(client: FlaskClient, rp: dict) -> None:
    assert_token_error(redeem(client, rp, "made-up-code", pkce_pair()[0]), 400, "invalid_grant")


def test_missing_code_is_invalid_request(client: FlaskClient, rp: dict) -> None:
    assert_token_error(redeem(client, rp, None, pkce_pair()[0]), 400,  # type: ignore[arg-type]
                       "invalid_request")


def test_code_issued_to_another_client_is_invalid_grant(client: FlaskClient, rp: dict,
                                                        signed_in: str,
                                                        pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge))
    other = confidential_client(client)
    assert_token_error(redeem(client, other, code, verifier), 400, "invalid_grant")
    # ... and the stolen attempt does not burn the code for its rightful client.
    assert redeem(client, rp, code, verifier).status_code == 200


def test_code_bound_to_dpop_jkt_without_proof_is_invalid_grant(
        client: FlaskClient, rp: dict, signed_in: str, pkce: tuple[str, str]) -> None:
    # DPOP-26 (pinned): the code names a key; redeeming it without a proof is invalid_grant.
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge, dpop_jkt="A" * 43))
    assert_token_error(redeem(client, rp, code, verifier), 400, "invalid_grant")


def test_client_without_refresh_grant_gets_no_refresh_token(client: FlaskClient,
                                                            signed_in: str,
                                                            pkce: tuple[str, str]) -> None:
    registered = confidential_client(client, grant_types=["authorization_code"])
    verifier, challenge = pkce
    code = authorize(client, authorization_params(registered, challenge))
    body = redeem(client, registered, code, verifier).get_json()
    assert "refresh_token" not in body


# --- OpenID Connect: scope=openid yields an ID token (issue 14, item 4) -------------------------


def test_openid_scope_yields_an_id_token(client: FlaskClient, rp: dict, signed_in: str,
                                         pkce: tuple[str, str]) -> None:
    """OIDC Core §3.1.3.3/§2: iss, sub, aud = the client, exp, iat, auth_time and the request's
    nonce; signed with a key from our JWKS (ES256, typ JWT, never at+jwt)."""
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge, scope="openid read",
                                                  nonce="n-0S6_WzA2Mj"))
    body = redeem(client, rp, code, verifier).get_json()
    id_header, claims = decode_access_token(client, body["id_token"])  # the same JWKS check
    assert id_header["typ"] == "JWT"
    assert claims["iss"] == ISSUER and claims["sub"] == signed_in
    assert claims["aud"] == rp["client_id"] and claims["azp"] == rp["client_id"]
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    header, access = decode_access_token(client, body["access_token"])
    assert claims["iat"] == access["iat"] and claims["exp"] > claims["iat"]
    assert claims["auth_time"] == access["auth_time"]
    assert "scope" not in claims and "cnf" not in claims
    assert header["typ"] == "at+jwt"  # the ID token's typ differs: never taken as one


def test_no_openid_scope_no_id_token(client: FlaskClient, rp: dict, signed_in: str,
                                     pkce: tuple[str, str]) -> None:
    verifier, challenge = pkce
    code = authorize(client, authorization_params(rp, challenge, scope="read"))
    assert "id_token" not in redeem(client, rp, code, verifier).get_json()
