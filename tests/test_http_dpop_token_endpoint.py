"""RFC 9449 §4.3 and §5 at the token endpoint over HTTP: proof rejections and token binding.

https://www.rfc-editor.org/rfc/rfc9449#section-5 — rule IDs (DPOP-xx) are in docs/standards.md.
Every DPOP-01..12 rejection is one test asserting status, error, description and headers.
Nonces (DPOP-10, -30..-34) are in test_http_dpop_nonces.py, the standing delegation path in
test_http_dpop_standing_delegation.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, OctKey

from authserver.config import DPOP_FUTURE_SKEW, DPOP_PROOF_WINDOW
from tests.dpop_helpers import (
    TOKEN_ENDPOINT,
    ProofKey,
    app_config,
    b64url,
    settings_overrides,
    sign_jws,
    with_settings,
)
from tests.http_helpers import (
    ISSUER,
    STORES,
    app,
    assert_token_error,
    auth_for,
    authorization_params,
    authorize,
    client,
    confidential_client,
    decode_access_token,
    introspect,
    pkce_pair,
    public_client,
    redis_url,
    register_client,
    signed_in,
    user_id,
)

# --- helpers ----------------------------------------------------------------------------------

# pytest finds these fixtures by name in this module; listing them marks the imports used.
FIXTURES = (app, app_config, client, redis_url, settings_overrides, signed_in, user_id)


def post_token(client: FlaskClient, registered: dict[str, Any], dpop: str | list[str] | None,
               **form: Any) -> Any:
    """A token request authenticated as `registered`, with zero, one or several DPoP headers."""
    auth_headers, fields = auth_for(registered)
    headers = list(auth_headers.items())
    if isinstance(dpop, str):
        headers.append(("DPoP", dpop))
    elif dpop is not None:
        headers.extend(("DPoP", value) for value in dpop)
    return client.post("/token", data={**fields, **form}, headers=headers)


def cc(client: FlaskClient, registered: dict[str, Any], dpop: str | list[str] | None = None,
       **form: Any) -> Any:
    return post_token(client, registered, dpop, grant_type="client_credentials", **form)


def assert_dpop_rejected(response: Any, description: str | None = None) -> None:
    """400 invalid_dpop_proof (RFC 9449 §5): no-store, no token, no nonce with nonces off."""
    body = assert_token_error(response, 400, "invalid_dpop_proof")
    if description is not None:
        assert body["error_description"] == description, body
    assert "access_token" not in body
    assert "DPoP-Nonce" not in response.headers


def assert_dpop_bound(client: FlaskClient, response: Any, key: ProofKey) -> dict[str, Any]:
    """200 with token_type DPoP and cnf.jkt = the RFC 7638 thumbprint of `key` (DPOP-21/24)."""
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["token_type"] == "DPoP"
    claims = decode_access_token(client, body["access_token"])[1]
    assert claims["cnf"] == {"jkt": key.jkt}
    return body


def assert_bearer(client: FlaskClient, response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["token_type"] == "Bearer"
    assert "cnf" not in decode_access_token(client, body["access_token"])[1]
    return body


@pytest.fixture
def cc_client(client: FlaskClient) -> dict[str, Any]:
    return register_client(client, grant_types=["client_credentials"], scope="read write")


@pytest.fixture
def key() -> ProofKey:
    return ProofKey()


# --- DPOP-01..12: every proof rejection at the token endpoint --------------------------------


def test_two_dpop_headers_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                key: ProofKey) -> None:
    # DPOP-01. WSGI folds repeated headers into one comma-joined value, which is no JWS.
    response = cc(client, cc_client, [key.proof(TOKEN_ENDPOINT), key.proof(TOKEN_ENDPOINT)])
    assert_dpop_rejected(response)


@pytest.mark.parametrize("value", ["not-a-jwt", "a.b", "a.b.c.d", "e30.e30.", "a b.c.d"],
                         ids=["no-dots", "two-parts", "four-parts", "empty-signature", "space"])
def test_malformed_proof_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                               value: str) -> None:
    # DPOP-02: not one JWS in compact serialization.
    assert_dpop_rejected(cc(client, cc_client, value), "DPoP proof is not a compact JWS")


def test_proof_payload_not_json_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                      key: ProofKey) -> None:
    # DPOP-02: the three segments are base64url but the payload is not a JSON object.
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk}
    good = sign_jws(header, {"x": 1}, key.key)
    head, _, signature = good.split(".")
    value = f"{head}.{b64url(b'not json')}.{signature}"
    assert_dpop_rejected(cc(client, cc_client, value), "DPoP proof is not a well-formed JWT")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_proof_missing_required_claim_is_invalid_dpop_proof(
        client: FlaskClient, cc_client: dict, key: ProofKey, claim: str) -> None:
    # DPOP-03: jti, htm, htu and iat are all required.
    response = cc(client, cc_client, key.proof(TOKEN_ENDPOINT, drop=(claim,)))
    description = (f"DPoP proof {claim} is missing or not a string" if claim != "iat"
                   else "DPoP proof iat is missing or not a number")
    assert_dpop_rejected(response, description)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "DPOP+JWT", None])
def test_proof_wrong_typ_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                               key: ProofKey, typ: str | None) -> None:
    # DPOP-04: typ is exactly dpop+jwt (a JWT of another type is no proof).
    proof = key.proof(TOKEN_ENDPOINT, header={"typ": typ})
    assert_dpop_rejected(cc(client, cc_client, proof), "DPoP proof typ must be dpop+jwt")


def test_proof_alg_none_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                              key: ProofKey) -> None:
    # DPOP-05: never `none`. The signature segment is filled so only alg can fail.
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk}
    claims = {"jti": "j-none", "htm": "POST", "htu": TOKEN_ENDPOINT, "iat": int(time.time())}
    value = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
             + "." + b64url(b"\0" * 64))
    assert_dpop_rejected(cc(client, cc_client, value), "DPoP proof alg is not supported")


def test_proof_alg_hs256_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                               key: ProofKey) -> None:
    # DPOP-05: a MAC algorithm would need a key shared with us; never accepted.
    mac_key = OctKey.generate_key(256)
    proof = key.proof(TOKEN_ENDPOINT, header={"alg": "HS256"}, signing_key=mac_key)
    assert_dpop_rejected(cc(client, cc_client, proof), "DPoP proof alg is not supported")


def test_proof_with_private_jwk_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                      key: ProofKey) -> None:
    # DPOP-06: the jwk header carries the public key only.
    private = dict(key.key.as_dict(private=True))
    assert "d" in private
    proof = key.proof(TOKEN_ENDPOINT, header={"jwk": private})
    assert_dpop_rejected(cc(client, cc_client, proof),
                         "DPoP proof jwk must not contain private key members")


def test_proof_with_symmetric_jwk_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                        key: ProofKey) -> None:
    # DPOP-06: kty oct / k is refused whatever alg claims.
    oct_jwk = dict(OctKey.generate_key(256).as_dict())
    proof = key.proof(TOKEN_ENDPOINT, header={"jwk": oct_jwk})
    assert_dpop_rejected(cc(client, cc_client, proof),
                         "DPoP proof jwk must not be a symmetric key")


def test_proof_bad_signature_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                   key: ProofKey) -> None:
    # DPOP-07: signed by another key than the one in jwk.
    proof = key.proof(TOKEN_ENDPOINT, signing_key=ECKey.generate_key("P-256"))
    assert_dpop_rejected(cc(client, cc_client, proof), "DPoP proof signature is invalid")


@pytest.mark.parametrize("htm", ["GET", "post", "PUT"])
def test_proof_htm_mismatch_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                  key: ProofKey, htm: str) -> None:
    # DPOP-08: the request method, compared case-sensitively.
    assert_dpop_rejected(cc(client, cc_client, key.proof(TOKEN_ENDPOINT, htm=htm)),
                         "DPoP proof htm does not match the request method")


@pytest.mark.parametrize("htu", [ISSUER + "/authorize", ISSUER + "/token/x",
                                 "http://127.0.0.1:8001/token", "https://127.0.0.1:8000/token",
                                 "http://localhost:8000/token"])
def test_proof_htu_mismatch_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                  key: ProofKey, htu: str) -> None:
    # DPOP-09: the token endpoint's external URI (from the issuer, not from Host).
    assert_dpop_rejected(cc(client, cc_client, key.proof(htu)),
                         "DPoP proof htu does not match the request URI")


def test_proof_htu_not_a_uri_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                   key: ProofKey) -> None:
    # DPOP-09: an htu that is no http(s) URI at all.
    assert_dpop_rejected(cc(client, cc_client, key.proof("urn:example:token")),
                         "DPoP proof htu is not a valid URI")


@pytest.mark.parametrize("htu", [TOKEN_ENDPOINT + "?client=1", TOKEN_ENDPOINT + "#frag",
                                 "HTTP://127.0.0.1:8000/token", "http://127.0.0.1:8000/%74oken"],
                         ids=["query", "fragment", "uppercase-scheme", "percent-encoded"])
def test_proof_htu_query_fragment_and_normalization_are_ignored(
        client: FlaskClient, cc_client: dict, key: ProofKey, htu: str) -> None:
    # DPOP-09: query and fragment are not compared; RFC 3986 §6.2.2/6.2.3 normalization applies.
    assert_dpop_bound(client, cc(client, cc_client, key.proof(htu)), key)


def test_proof_iat_too_old_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                 key: ProofKey) -> None:
    # DPOP-11: outside the acceptance window (margin: the request takes a moment).
    iat = int(time.time()) - DPOP_PROOF_WINDOW - 30
    assert_dpop_rejected(cc(client, cc_client, key.proof(TOKEN_ENDPOINT, iat=iat)),
                         "DPoP proof has expired")


def test_proof_iat_in_the_future_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                                       key: ProofKey) -> None:
    # DPOP-11: only a small future skew is tolerated.
    iat = int(time.time()) + DPOP_FUTURE_SKEW + 30
    assert_dpop_rejected(cc(client, cc_client, key.proof(TOKEN_ENDPOINT, iat=iat)),
                         "DPoP proof iat is in the future")


@STORES
def test_replayed_proof_is_invalid_dpop_proof(client: FlaskClient, cc_client: dict,
                                              key: ProofKey) -> None:
    # DPOP-12: the replay cache is the shared store (embedded and Redis).
    proof = key.proof(TOKEN_ENDPOINT)
    assert_dpop_bound(client, cc(client, cc_client, proof), key)
    assert_dpop_rejected(cc(client, cc_client, proof), "DPoP proof replayed")


def test_replay_is_refused_for_another_client_too(client: FlaskClient, cc_client: dict,
                                                  key: ProofKey) -> None:
    # DPOP-12: the cache key is (htu, jti, jkt), not the client: a captured proof is spent.
    other = register_client(client, grant_types=["client_credentials"], scope="read")
    proof = key.proof(TOKEN_ENDPOINT)
    assert_dpop_bound(client, cc(client, cc_client, proof), key)
    assert_dpop_rejected(cc(client, other, proof), "DPoP proof replayed")


def test_rejected_proof_does_not_enter_the_replay_cache(client: FlaskClient, cc_client: dict,
                                                       key: ProofKey) -> None:
    # The replay check runs last: a proof refused for another reason (here: the request's
    # scope) is still usable once, so failures cannot be used to burn a client's proofs.
    proof = key.proof(TOKEN_ENDPOINT)
    assert_token_error(cc(client, cc_client, proof, scope="admin"), 400, "invalid_scope")
    assert_dpop_bound(client, cc(client, cc_client, proof), key)


# --- DPOP-20/21/24/25: binding for client credentials -----------------------------------------


def test_client_credentials_with_proof_is_dpop_bound(client: FlaskClient, cc_client: dict,
                                                     key: ProofKey) -> None:
    response = cc(client, cc_client, key.proof(TOKEN_ENDPOINT), scope="read")
    body = assert_dpop_bound(client, response, key)
    assert response.headers["Cache-Control"] == "no-store"
    assert "DPoP-Nonce" not in response.headers  # nonces are off by default
    # DPOP-25: introspection returns cnf.jkt at the top level and token_type DPoP.
    info = introspect(client, cc_client, body["access_token"])
    assert info["active"] is True
    assert info["cnf"] == {"jkt": key.jkt}
    assert info["token_type"] == "DPoP"


def test_client_without_dpop_gets_bearer(client: FlaskClient, cc_client: dict) -> None:
    # DPOP-21: enforcement is a policy; a client allowed bearer tokens still gets one.
    body = assert_bearer(client, cc(client, cc_client, scope="read"))
    info = introspect(client, cc_client, body["access_token"])
    assert info["token_type"] == "Bearer"
    assert "cnf" not in info


def test_dpop_bound_client_without_proof_is_invalid_dpop_proof(client: FlaskClient) -> None:
    # DPOP-23: dpop_bound_access_tokens=true → every token request carries a proof.
    registered = register_client(client, grant_types=["client_credentials"], scope="read",
                                 dpop_bound_access_tokens=True)
    assert_dpop_rejected(cc(client, registered), "DPoP proof required")


def test_dpop_bound_client_with_proof_is_dpop_bound(client: FlaskClient, key: ProofKey) -> None:
    registered = register_client(client, grant_types=["client_credentials"], scope="read",
                                 dpop_bound_access_tokens=True)
    assert_dpop_bound(client, cc(client, registered, key.proof(TOKEN_ENDPOINT)), key)


@with_settings(dpop_required_grants=["client_credentials"])
def test_grant_requiring_dpop_without_proof_is_invalid_dpop_proof(client: FlaskClient,
                                                                  cc_client: dict) -> None:
    # DPOP-20: the server policy requires DPoP for this grant, whatever the client says.
    assert_dpop_rejected(cc(client, cc_client), "DPoP proof required")


@with_settings(dpop_required_grants=["client_credentials"])
def test_grant_requiring_dpop_with_proof_is_dpop_bound(client: FlaskClient, cc_client: dict,
                                                       key: ProofKey) -> None:
    assert_dpop_bound(client, cc(client, cc_client, key.proof(TOKEN_ENDPOINT)), key)


@with_settings(dpop_required_grants=["authorization_code"])
def test_requirement_for_another_grant_leaves_client_credentials_bearer(
        client: FlaskClient, cc_client: dict) -> None:
    assert_bearer(client, cc(client, cc_client))


def test_token_endpoint_exposes_dpop_headers_to_browsers(client: FlaskClient, cc_client: dict,
                                                         key: ProofKey) -> None:
    # DPOP-34: on success and on errors alike.
    ok = cc(client, cc_client, key.proof(TOKEN_ENDPOINT))
    failed = cc(client, cc_client, "not-a-jwt")
    for response in (ok, failed):
        assert response.headers["Access-Control-Expose-Headers"] == \
            "DPoP-Nonce, WWW-Authenticate"


# --- DPOP-20/22/26: authorization code and refresh (public client, PKCE + DPoP) ---------------


@pytest.fixture
def native_app(client: FlaskClient) -> dict[str, Any]:
    """A public client (no secret): its refresh tokens are bound to its DPoP key."""
    return public_client(client, scope="read")


def get_code(client: FlaskClient, registered: dict[str, Any], **extra: Any
             ) -> tuple[str, str, str]:
    """(code, code_verifier, redirect_uri) for the signed-in user."""
    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge, **extra)
    return authorize(client, params), verifier, params["redirect_uri"]


def redeem(client: FlaskClient, registered: dict[str, Any], code: tuple[str, str, str],
           dpop: str | None) -> Any:
    value, verifier, redirect_uri = code
    return post_token(client, registered, dpop, grant_type="authorization_code", code=value,
                      code_verifier=verifier, redirect_uri=redirect_uri)


def refresh(client: FlaskClient, registered: dict[str, Any], token: str, dpop: str | None
            ) -> Any:
    return post_token(client, registered, dpop, grant_type="refresh_token", refresh_token=token)


def test_code_with_proof_is_dpop_bound(client: FlaskClient, native_app: dict, signed_in: str,
                                       key: ProofKey) -> None:
    code = get_code(client, native_app)
    body = assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    assert body["refresh_token"]
    claims = decode_access_token(client, body["access_token"])[1]
    assert claims["sub"] == signed_in


def test_code_bound_by_dpop_jkt_redeemed_with_that_key(client: FlaskClient, native_app: dict,
                                                       signed_in: str, key: ProofKey) -> None:
    # DPOP-26: dpop_jkt at /authorize; the token request proves that key.
    code = get_code(client, native_app, dpop_jkt=key.jkt)
    assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)), key)


def test_code_bound_by_dpop_jkt_without_proof_is_invalid_grant(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-26 [silent → invalid_grant]: the code names a key, the request proves none.
    code = get_code(client, native_app, dpop_jkt=key.jkt)
    body = assert_token_error(redeem(client, native_app, code, None), 400, "invalid_grant")
    assert "access_token" not in body


def test_code_bound_by_dpop_jkt_with_other_key_is_invalid_grant(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-26: a stolen code is useless with the thief's key ...
    code = get_code(client, native_app, dpop_jkt=key.jkt)
    thief = ProofKey()
    body = assert_token_error(redeem(client, native_app, code, thief.proof(TOKEN_ENDPOINT)),
                              400, "invalid_grant")
    assert "access_token" not in body
    # ... and the attempt does not burn the code for its rightful holder.
    assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)), key)


def test_code_redeemed_with_invalid_proof_is_invalid_dpop_proof(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-20: proof validation applies to every grant.
    code = get_code(client, native_app)
    response = redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT, htm="GET"))
    assert_dpop_rejected(response, "DPoP proof htm does not match the request method")


def test_public_client_without_dpop_gets_bearer_tokens(client: FlaskClient, native_app: dict,
                                                       signed_in: str) -> None:
    # DPOP-21: no proof, no binding: Bearer on the code and on refresh.
    body = assert_bearer(client, redeem(client, native_app, get_code(client, native_app), None))
    assert_bearer(client, refresh(client, native_app, body["refresh_token"], None))


def test_public_client_refresh_with_same_key_is_dpop_bound(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-22: the RT is bound to the key; each refresh proves it, and the next one too.
    code = get_code(client, native_app)
    body = assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    rotated = assert_dpop_bound(
        client, refresh(client, native_app, body["refresh_token"], key.proof(TOKEN_ENDPOINT)), key)
    assert_dpop_bound(
        client, refresh(client, native_app, rotated["refresh_token"], key.proof(TOKEN_ENDPOINT)),
        key)


def test_public_client_refresh_with_other_key_is_invalid_grant(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-22 [silent → invalid_grant]: a stolen refresh token is useless with another key ...
    code = get_code(client, native_app)
    body = assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    thief = ProofKey()
    stolen = refresh(client, native_app, body["refresh_token"], thief.proof(TOKEN_ENDPOINT))
    assert "access_token" not in assert_token_error(stolen, 400, "invalid_grant")
    # ... and does not rotate (or revoke) the family: the rightful client still refreshes.
    assert_dpop_bound(
        client, refresh(client, native_app, body["refresh_token"], key.proof(TOKEN_ENDPOINT)), key)


def test_public_client_refresh_without_proof_is_invalid_grant(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    # DPOP-22 [silent → invalid_grant]: a bound refresh token without any proof.
    code = get_code(client, native_app)
    body = assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    response = refresh(client, native_app, body["refresh_token"], None)
    assert "access_token" not in assert_token_error(response, 400, "invalid_grant")


def test_public_client_refresh_with_invalid_proof_is_invalid_dpop_proof(
        client: FlaskClient, native_app: dict, signed_in: str, key: ProofKey) -> None:
    code = get_code(client, native_app)
    body = assert_dpop_bound(client, redeem(client, native_app, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    stale = key.proof(TOKEN_ENDPOINT, iat=int(time.time()) - DPOP_PROOF_WINDOW - 30)
    assert_dpop_rejected(refresh(client, native_app, body["refresh_token"], stale),
                         "DPoP proof has expired")


def test_confidential_client_refresh_token_is_not_key_bound(
        client: FlaskClient, signed_in: str, key: ProofKey) -> None:
    # DPOP-22: client authentication constrains a confidential client's refresh token.
    registered = confidential_client(client, scope="read")
    code = get_code(client, registered)
    body = assert_dpop_bound(client, redeem(client, registered, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    # Without a proof: a Bearer access token; with a new key: bound to that key.
    rotated = assert_bearer(client, refresh(client, registered, body["refresh_token"], None))
    new_key = ProofKey()
    assert_dpop_bound(client, refresh(client, registered, rotated["refresh_token"],
                                      new_key.proof(TOKEN_ENDPOINT)), new_key)


def test_dpop_bound_public_client_refresh_without_proof_is_invalid_dpop_proof(
        client: FlaskClient, signed_in: str, key: ProofKey) -> None:
    # DPOP-23 beats DPOP-22: the client itself requires a proof on every request.
    registered = public_client(client, scope="read", dpop_bound_access_tokens=True)
    code = get_code(client, registered)
    assert_dpop_rejected(redeem(client, registered, code, None), "DPoP proof required")
    body = assert_dpop_bound(client, redeem(client, registered, code, key.proof(TOKEN_ENDPOINT)),
                             key)
    assert_dpop_rejected(refresh(client, registered, body["refresh_token"], None),
                         "DPoP proof required")


@with_settings(dpop_required_grants=["refresh_token"])
def test_grant_requiring_dpop_for_refresh_without_proof_is_invalid_dpop_proof(
        client: FlaskClient, signed_in: str) -> None:
    registered = confidential_client(client, scope="read")
    body = assert_bearer(client, redeem(client, registered, get_code(client, registered), None))
    assert_dpop_rejected(refresh(client, registered, body["refresh_token"], None),
                         "DPoP proof required")
