"""The test OIDC provider itself (authserver.testing.idp), over real loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import KeySet

from authserver.testing.idp import IdP, start_idp

CLIENT_ID = "rp-client"
CLIENT_SECRET = "rp-secret with spaces&symbols"
REDIRECT_URI = "http://127.0.0.1:9/callback"
VERIFIER = "v" * 50


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(
        b"="
    ).decode()


@pytest.fixture
def served(now: int) -> Iterator[tuple[IdP, str]]:
    idp, base_url, thread = start_idp(clock=lambda: now)
    idp.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    yield idp, base_url
    thread.stop()


def _authorize(base_url: str, **overrides: str) -> requests.Response:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
              "scope": "openid email", "state": "st-1", "nonce": "n-1",
              "code_challenge": _challenge(VERIFIER), "code_challenge_method": "S256",
              "login_hint": "alice", **overrides}
    params = {k: v for k, v in params.items() if v != ""}
    return requests.get(base_url + "/authorize?" + urlencode(params), allow_redirects=False,
                        timeout=5)


def _code(resp: requests.Response) -> str:
    assert resp.status_code == 302
    return parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]


def _redeem(base_url: str, code: str, *, verifier: str = VERIFIER, basic: bool = True
            ) -> requests.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier}
    if basic:
        return requests.post(base_url + "/token", data=form, timeout=5,
                             auth=requests.auth.HTTPBasicAuth(
                                 quote(CLIENT_ID, safe=""),
                                 quote(CLIENT_SECRET, safe="")))
    form |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return requests.post(base_url + "/token", data=form, timeout=5)


def test_discovery_issuer_is_the_served_url(served: tuple[IdP, str]) -> None:
    idp, base_url = served
    doc = requests.get(base_url + "/.well-known/openid-configuration", timeout=5).json()
    assert doc["issuer"] == base_url == idp.issuer
    assert doc["jwks_uri"] == base_url + "/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True


def test_jwks_publishes_the_current_kid_without_private_members(
    served: tuple[IdP, str],
) -> None:
    idp, base_url = served
    keys = requests.get(base_url + "/jwks", timeout=5).json()["keys"]
    assert [k["kid"] for k in keys] == [idp.current_kid]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(keys[0])
    assert idp.jwks_requests == 1


def test_authorize_with_login_hint_redirects_with_code_state_and_iss(
    served: tuple[IdP, str],
) -> None:
    _, base_url = served
    resp = _authorize(base_url)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-1"]
    assert query["iss"] == [base_url]
    assert query["code"][0]


def test_authorize_without_login_hint_shows_a_form(served: tuple[IdP, str]) -> None:
    _, base_url = served
    resp = _authorize(base_url, login_hint="")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert 'name="username"' in resp.text


def test_form_post_signs_the_user_in(served: tuple[IdP, str]) -> None:
    _, base_url = served
    form = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
            "scope": "openid", "state": "s", "code_challenge": _challenge(VERIFIER),
            "code_challenge_method": "S256", "username": "bob"}
    resp = requests.post(base_url + "/authorize", data=form, allow_redirects=False, timeout=5)
    body = _redeem(base_url, _code(resp)).json()
    claims = jwt.decode(body["id_token"], KeySet.import_key_set(
        requests.get(base_url + "/jwks", timeout=5).json())).claims
    assert claims["email"] == "bob@acme.example"


def test_authorize_unregistered_redirect_uri_is_not_redirected(
    served: tuple[IdP, str],
) -> None:
    _, base_url = served
    resp = _authorize(base_url, redirect_uri="http://127.0.0.1:9/evil")
    assert resp.status_code == 400
    assert "Location" not in resp.headers


def test_authorize_without_pkce_s256_is_invalid_request(served: tuple[IdP, str]) -> None:
    _, base_url = served
    resp = _authorize(base_url, code_challenge_method="plain")
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["st-1"]


def test_authorize_unknown_user_is_access_denied(served: tuple[IdP, str]) -> None:
    _, base_url = served
    resp = _authorize(base_url, login_hint="mallory")
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["access_denied"]


@pytest.mark.parametrize("basic", [True, False], ids=["client_secret_basic",
                                                      "client_secret_post"])
def test_token_returns_signed_id_token(served: tuple[IdP, str], now: int, basic: bool) -> None:
    idp, base_url = served
    resp = _redeem(base_url, _code(_authorize(base_url)), basic=basic)
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    token = jwt.decode(body["id_token"], KeySet.import_key_set(idp.jwks()))  # type: ignore[arg-type]
    assert token.header["kid"] == idp.current_kid
    claims = token.claims
    assert (claims["iss"], claims["aud"], claims["nonce"]) == (base_url, CLIENT_ID, "n-1")
    assert claims["sub"] == idp.users["alice"]["sub"]
    assert (claims["groups"], claims["roles"], claims["tenant"]) == (["sales"], ["rep"], "acme")
    assert claims["iat"] == now


def test_token_wrong_client_secret_is_invalid_client(served: tuple[IdP, str]) -> None:
    _, base_url = served
    code = _code(_authorize(base_url))
    resp = requests.post(base_url + "/token", timeout=5, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER, "client_id": CLIENT_ID, "client_secret": "wrong"})
    assert resp.status_code == 401
    assert resp.json() == {"error": "invalid_client"}
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_token_code_is_single_use(served: tuple[IdP, str]) -> None:
    _, base_url = served
    code = _code(_authorize(base_url))
    assert _redeem(base_url, code).status_code == 200
    resp = _redeem(base_url, code)
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid_grant"})


def test_token_wrong_code_verifier_is_invalid_grant(served: tuple[IdP, str]) -> None:
    _, base_url = served
    resp = _redeem(base_url, _code(_authorize(base_url)), verifier="w" * 50)
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid_grant"})


def test_userinfo_returns_the_users_claims(served: tuple[IdP, str]) -> None:
    _, base_url = served
    access_token = _redeem(base_url, _code(_authorize(base_url,
                                                      login_hint="carol"))).json()["access_token"]
    resp = requests.get(base_url + "/userinfo", timeout=5,
                        headers={"Authorization": f"Bearer {access_token}"})
    assert resp.json()["roles"] == ["admin"]


def test_userinfo_without_a_token_is_invalid_token(served: tuple[IdP, str]) -> None:
    _, base_url = served
    resp = requests.get(base_url + "/userinfo", timeout=5)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("keep_old", [True, False])
def test_rotate_keys_publishes_the_new_kid(served: tuple[IdP, str], keep_old: bool) -> None:
    idp, base_url = served
    old = idp.current_kid
    new = idp.rotate_keys(keep_old=keep_old)
    kids = [k["kid"] for k in requests.get(base_url + "/jwks", timeout=5).json()["keys"]]
    assert kids == ([new, old] if keep_old else [new])
    assert jwt.decode(idp.mint_id_token("alice", aud="x"),
                      KeySet.import_key_set(idp.jwks())).header["kid"] == new  # type: ignore[arg-type]


def test_mint_id_token_can_sign_with_a_removed_kid(served: tuple[IdP, str]) -> None:
    idp, _ = served
    old = idp.current_kid
    idp.rotate_keys(keep_old=False)
    token = idp.mint_id_token("alice", aud="x", kid=old)
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == old
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(token, KeySet.import_key_set(idp.jwks()))  # type: ignore[arg-type]


def test_mint_id_token_sign_with_forges_the_published_kid(served: tuple[IdP, str]) -> None:
    idp, _ = served
    forger = IdP.foreign_key()
    token = idp.mint_id_token("alice", aud="x", sign_with=forger)
    assert jwt.decode(token, forger).header["kid"] == idp.current_kid
    with pytest.raises(BadSignatureError):
        jwt.decode(token, KeySet.import_key_set(idp.jwks()))  # type: ignore[arg-type]
