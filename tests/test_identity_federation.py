"""OIDC federation (authserver.identity.federation) against a real IdP on a loopback port."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OctKey

from authserver.identity import (
    ID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    Federation,
    IdentityError,
    IdPConfig,
    IdPUnavailableError,
    OIDCProvider,
)
from authserver.identity.federation import (
    ID_TOKEN_LEEWAY,
    JWKS_CACHE_TTL,
    JWKS_REFETCH_MIN_INTERVAL,
)
from authserver.store.memory import MemoryStore
from authserver.testing.idp import IdP, start_idp
from authserver.testing.server import free_port

CLIENT_ID = "authserver-rp"
CLIENT_SECRET = "rp-secret"
REDIRECT_URI = "http://127.0.0.1:8000/login/callback"
EDGE_AUD = "edge-chat-app"


class Clock:
    """The IdP's clock, moved by tests (the relying party gets `now` explicitly)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(now: int) -> Clock:
    return Clock(now)


@pytest.fixture
def idp(clock: Clock) -> Iterator[IdP]:
    server, _, thread = start_idp(clock=clock)
    server.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    yield server
    thread.stop()


def _config(idp: IdP, **overrides: object) -> IdPConfig:
    assert idp.issuer
    values: dict[str, object] = {"name": "corp", "issuer": idp.issuer, "client_id": CLIENT_ID,
                                 "client_secret": CLIENT_SECRET,
                                 "trusted_audiences": (EDGE_AUD,), **overrides}
    return IdPConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def provider(idp: IdP) -> OIDCProvider:
    return OIDCProvider(_config(idp), MemoryStore())


def _callback(provider: OIDCProvider, now: int, login_hint: str = "alice",
              nonce: str | None = None) -> tuple[dict[str, str], str, str, str]:
    """Browser-less sign-in: follow our authorization request to the IdP and back."""
    start = provider.begin_login(redirect_uri=REDIRECT_URI, now=now, login_hint=login_hint)
    url = start.url
    if nonce is not None:  # an attacker re-using a nonce in a fresh authorization request
        url = url.replace("nonce=" + start.nonce, "nonce=" + nonce)
    resp = requests.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return params, start.state, nonce or start.nonce, start.code_verifier


def _login(provider: OIDCProvider, now: int, login_hint: str = "alice") -> dict[str, object]:
    params, state, nonce, verifier = _callback(provider, now, login_hint)
    code = provider.verify_callback(params, expected_state=state, now=now)
    return provider.complete_login(code=code, redirect_uri=REDIRECT_URI, expected_nonce=nonce,
                                   code_verifier=verifier, now=now)


def _header(token: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))


# --- sign-in through the IdP ------------------------------------------------------------------


def test_login_through_idp_returns_verified_claims(
    idp: IdP, store: object, now: int
) -> None:
    provider = OIDCProvider(_config(idp), store)  # type: ignore[arg-type]
    claims = _login(provider, now)
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["sub"] == idp.users["alice"]["sub"]
    assert (claims["email"], claims["groups"], claims["tenant"]) == (
        "alice@acme.example", ["sales"], "acme")


def test_begin_login_sends_pkce_s256_state_and_nonce(provider: OIDCProvider, now: int) -> None:
    start = provider.begin_login(redirect_uri=REDIRECT_URI, now=now)
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    assert query["code_challenge_method"] == "S256"
    assert (query["state"], query["nonce"]) == (start.state, start.nonce)
    assert query["scope"] == "openid email profile"
    assert len(start.code_verifier) >= 43
    assert start.code_verifier not in start.url
    assert start.code_verifier not in repr(start)


def test_login_replayed_nonce(idp: IdP, store: object, now: int) -> None:
    provider = OIDCProvider(_config(idp), store)  # type: ignore[arg-type]
    params, _, nonce, verifier = _callback(provider, now)
    provider.complete_login(code=params["code"], redirect_uri=REDIRECT_URI,
                            expected_nonce=nonce, code_verifier=verifier, now=now)
    # A second, genuine code whose ID token carries the nonce already used.
    params2, _, _, verifier2 = _callback(provider, now, nonce=nonce)
    with pytest.raises(IdentityError) as e:
        provider.complete_login(code=params2["code"], redirect_uri=REDIRECT_URI,
                                expected_nonce=nonce, code_verifier=verifier2, now=now)
    assert e.value.debug == "login: nonce replayed"
    assert e.value.error == "invalid_request"


def test_login_nonce_mismatch(provider: OIDCProvider, now: int) -> None:
    params, _, _, verifier = _callback(provider, now)
    with pytest.raises(IdentityError) as e:
        provider.complete_login(code=params["code"], redirect_uri=REDIRECT_URI,
                                expected_nonce="another-nonce", code_verifier=verifier, now=now)
    assert e.value.debug == "nonce mismatch"


def test_login_wrong_code_verifier(provider: OIDCProvider, now: int) -> None:
    params, _, nonce, _ = _callback(provider, now)
    with pytest.raises(IdentityError) as e:
        provider.complete_login(code=params["code"], redirect_uri=REDIRECT_URI,
                                expected_nonce=nonce, code_verifier="x" * 64, now=now)
    assert e.value.debug == "login: token endpoint 400 'invalid_grant'"


def test_login_wrong_client_secret(idp: IdP, now: int) -> None:
    provider = OIDCProvider(_config(idp, client_secret="wrong"), MemoryStore())
    params, _, nonce, verifier = _callback(provider, now)
    with pytest.raises(IdentityError) as e:
        provider.complete_login(code=params["code"], redirect_uri=REDIRECT_URI,
                                expected_nonce=nonce, code_verifier=verifier, now=now)
    assert e.value.debug == "login: token endpoint 401 'invalid_client'"


def test_callback_state_mismatch(provider: OIDCProvider, now: int) -> None:
    params, _, _, _ = _callback(provider, now)
    with pytest.raises(IdentityError) as e:
        provider.verify_callback(params, expected_state="other-state", now=now)
    assert e.value.debug == "login callback: state mismatch"


def test_callback_iss_mismatch(provider: OIDCProvider, now: int) -> None:
    params, state, _, _ = _callback(provider, now)
    with pytest.raises(IdentityError) as e:
        provider.verify_callback({**params, "iss": "https://evil.example"},
                                 expected_state=state, now=now)
    assert e.value.debug == "login callback: iss mismatch (mix-up)"


def test_callback_iss_missing_although_idp_sends_it(provider: OIDCProvider, now: int) -> None:
    params, state, _, _ = _callback(provider, now)
    del params["iss"]
    with pytest.raises(IdentityError) as e:
        provider.verify_callback(params, expected_state=state, now=now)
    assert e.value.debug == "login callback: iss missing"


def test_callback_idp_error(provider: OIDCProvider, now: int) -> None:
    params, state, _, _ = _callback(provider, now, login_hint="mallory")
    assert params["error"] == "access_denied"
    with pytest.raises(IdentityError) as e:
        provider.verify_callback(params, expected_state=state, now=now)
    assert e.value.debug == "login callback: idp error 'access_denied'"


# --- ID token validation: one test per rejection -----------------------------------------------


def _reject(provider: OIDCProvider, token: str, now: int, nonce: str | None = None) -> str:
    with pytest.raises(IdentityError) as e:
        provider.verify_id_token(token, now=now, nonce=nonce, audiences=(CLIENT_ID,))
    assert e.value.error == "invalid_request"
    assert e.value.status_code == 400
    assert e.value.description == IdentityError.GENERIC_DESCRIPTION
    assert e.value.debug
    return e.value.debug


def test_minted_id_token_verifies(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("bob", aud=CLIENT_ID, nonce="n1")
    claims = provider.verify_id_token(token, now=now, nonce="n1", audiences=(CLIENT_ID,))
    assert claims["sub"] == idp.users["bob"]["sub"]


def test_id_token_wrong_iss(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, iss=f"{idp.issuer}/other")
    assert _reject(provider, token, now) == "iss mismatch"


def test_id_token_wrong_aud(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud="some-other-client")
    assert _reject(provider, token, now) == "aud mismatch"


def test_id_token_expired(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, exp_in=-ID_TOKEN_LEEWAY)
    assert _reject(provider, token, now) == "expired"


def test_id_token_expired_within_leeway_is_accepted(
    idp: IdP, provider: OIDCProvider, now: int
) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, exp_in=-ID_TOKEN_LEEWAY + 1)
    assert provider.verify_id_token(token, now=now, nonce=None, audiences=(CLIENT_ID,))


def test_id_token_bad_signature(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, sign_with=IdP.foreign_key())
    assert _reject(provider, token, now) == "bad signature (BadSignatureError)"


def test_id_token_alg_none(idp: IdP, provider: OIDCProvider, now: int) -> None:
    _, payload, _ = idp.mint_id_token("alice", aud=CLIENT_ID).split(".")
    forged_header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "none", "kid": idp.current_kid}).encode()).rstrip(b"=").decode()
    assert _reject(provider, f"{forged_header}.{payload}.", now) == "alg 'none' not allowed"


def test_id_token_hs256_with_client_secret(idp: IdP, provider: OIDCProvider, now: int) -> None:
    key = OctKey.import_key(CLIENT_SECRET.encode() * 8)
    claims = {"iss": idp.issuer, "sub": "x", "aud": CLIENT_ID, "iat": now, "exp": now + 60}
    token = jwt.encode({"alg": "HS256"}, claims, key, algorithms=["HS256"])
    assert _reject(provider, token, now) == "alg 'HS256' not allowed"


def test_id_token_unknown_kid(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, kid="never-published",
                              sign_with=IdP.foreign_key())
    assert _reject(provider, token, now) == "unknown kid 'never-published'"


def test_id_token_missing_nonce(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID)
    assert _reject(provider, token, now, nonce="expected") == "nonce mismatch"


def test_id_token_iat_in_the_future(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, extra={"iat": now + 3600})
    assert _reject(provider, token, now) == "iat in the future"


def test_id_token_not_yet_valid(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, extra={"nbf": now + 3600})
    assert _reject(provider, token, now) == "not yet valid (nbf)"


def test_id_token_missing_exp(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, extra={"exp": None})
    assert _reject(provider, token, now) == "exp or iat missing"


def test_id_token_missing_sub(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, extra={"sub": None})
    assert _reject(provider, token, now) == "sub missing or invalid"


def test_id_token_multiple_audiences_without_azp(
    idp: IdP, provider: OIDCProvider, now: int
) -> None:
    token = idp.mint_id_token("alice", aud=[CLIENT_ID, "other"])
    assert _reject(provider, token, now) == "azp missing with multiple audiences"


def test_id_token_azp_names_another_client(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=[CLIENT_ID, "other"], extra={"azp": "other"})
    assert _reject(provider, token, now) == "azp mismatch"


def test_id_token_typ_of_another_token_kind(idp: IdP, provider: OIDCProvider, now: int) -> None:
    token = idp.mint_id_token("alice", aud=CLIENT_ID, header={"typ": "logout+jwt"})
    assert _reject(provider, token, now) == "typ 'logout+jwt' not accepted here"


def test_id_token_crit_header(idp: IdP, provider: OIDCProvider, now: int) -> None:
    # joserfc refuses to sign an unknown crit; the check runs before the signature anyway.
    _, payload, signature = idp.mint_id_token("alice", aud=CLIENT_ID).split(".")
    header = {"alg": "RS256", "kid": idp.current_kid, "crit": ["x-policy"], "x-policy": 1}
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    assert _reject(provider, f"{encoded}.{payload}.{signature}", now) == \
        "crit header not understood"


def test_id_token_encrypted_form_is_refused(provider: OIDCProvider, now: int) -> None:
    assert _reject(provider, "a.b.c.d.e", now) == "not a compact JWS"


def test_id_token_too_long(provider: OIDCProvider, now: int) -> None:
    assert _reject(provider, "a" * 20_000, now) == "token missing or too long"


# --- keys: caching and rotation ------------------------------------------------------------------


def test_jwks_is_cached_between_verifications(idp: IdP, provider: OIDCProvider,
                                              now: int) -> None:
    for _ in range(3):
        provider.verify_id_token(idp.mint_id_token("alice", aud=CLIENT_ID), now=now,
                                 nonce=None, audiences=(CLIENT_ID,))
    assert idp.jwks_requests == 1


def test_unknown_kid_after_rotation_refetches_jwks(idp: IdP, provider: OIDCProvider,
                                                   now: int) -> None:
    provider.verify_id_token(idp.mint_id_token("alice", aud=CLIENT_ID), now=now, nonce=None,
                             audiences=(CLIENT_ID,))
    new_kid = idp.rotate_keys(keep_old=True)
    token = idp.mint_id_token("alice", aud=CLIENT_ID)
    assert _header(token)["kid"] == new_kid
    assert provider.verify_id_token(token, now=now, nonce=None, audiences=(CLIENT_ID,))
    assert idp.jwks_requests == 2


def test_unknown_kid_refetch_is_rate_limited(idp: IdP, provider: OIDCProvider,
                                             now: int) -> None:
    provider.verify_id_token(idp.mint_id_token("alice", aud=CLIENT_ID), now=now, nonce=None,
                             audiences=(CLIENT_ID,))
    idp.rotate_keys(keep_old=True)
    provider.verify_id_token(idp.mint_id_token("alice", aud=CLIENT_ID), now=now, nonce=None,
                             audiences=(CLIENT_ID,))
    bogus = idp.mint_id_token("alice", aud=CLIENT_ID, kid="made-up", sign_with=IdP.foreign_key())
    assert _reject(provider, bogus, now + 1) == "unknown kid 'made-up'"
    assert idp.jwks_requests == 2  # no fetch for a kid seen too soon after the last refetch
    _reject(provider, bogus, now + JWKS_REFETCH_MIN_INTERVAL)
    assert idp.jwks_requests == 3


def test_removed_kid_after_rotation_is_rejected(idp: IdP, provider: OIDCProvider,
                                                clock: Clock, now: int) -> None:
    old_kid = idp.current_kid
    provider.verify_id_token(idp.mint_id_token("alice", aud=CLIENT_ID), now=now, nonce=None,
                             audiences=(CLIENT_ID,))
    idp.rotate_keys(keep_old=False)
    later = now + JWKS_CACHE_TTL
    clock.now = later  # the token itself is fresh; only its key is gone
    token = idp.mint_id_token("alice", aud=CLIENT_ID, kid=old_kid)
    assert _reject(provider, token, later) == f"unknown kid {old_kid!r}"


def test_removed_kid_never_fetched_is_rejected(idp: IdP, provider: OIDCProvider,
                                               now: int) -> None:
    old_kid = idp.current_kid
    idp.rotate_keys(keep_old=False)
    token = idp.mint_id_token("alice", aud=CLIENT_ID, kid=old_kid)
    assert _reject(provider, token, now) == f"unknown kid {old_kid!r}"


def test_es256_idp_is_supported(clock: Clock, now: int) -> None:
    server, _, thread = start_idp(clock=clock, alg="ES256")
    try:
        server.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
        claims = _login(OIDCProvider(_config(server), MemoryStore()), now, login_hint="carol")
        assert claims["roles"] == ["admin"]
    finally:
        thread.stop()


# --- discovery -------------------------------------------------------------------------------


def test_discovery_issuer_mismatch(idp: IdP, now: int) -> None:
    provider = OIDCProvider(_config(idp, issuer=f"{idp.issuer}/"), MemoryStore())
    with pytest.raises(IdPUnavailableError) as e:
        provider.metadata(now=now)
    assert e.value.error == "temporarily_unavailable"
    assert e.value.debug == "idp corp: discovery issuer mismatch"


def test_idp_unreachable_fails_closed(now: int) -> None:
    config = IdPConfig(name="down", issuer=f"http://127.0.0.1:{free_port()}",
                       client_id="c", client_secret="s")
    with pytest.raises(IdPUnavailableError) as e:
        OIDCProvider(config, MemoryStore()).begin_login(redirect_uri=REDIRECT_URI, now=now)
    assert e.value.status_code == 503


# --- trusted issuers: IdP tokens as RFC 8693 subject tokens ------------------------------------


@pytest.fixture
def federation(idp: IdP) -> Federation:
    return Federation([_config(idp)], MemoryStore())


def test_subject_token_from_a_configured_idp(idp: IdP, federation: Federation,
                                             now: int) -> None:
    config, claims = federation.verify_subject_token(
        idp.mint_id_token("alice", aud=EDGE_AUD), now=now)
    assert config.name == "corp"
    assert claims["sub"] == idp.users["alice"]["sub"]


def test_subject_token_for_a_trusted_audience(idp: IdP, federation: Federation,
                                              now: int) -> None:
    token = idp.mint_id_token("alice", aud=EDGE_AUD, extra={"azp": EDGE_AUD})
    assert federation.verify_subject_token(token, now=now)[0].name == "corp"


def test_subject_token_jwt_type_accepts_an_at_jwt(idp: IdP, federation: Federation,
                                                  now: int) -> None:
    token = idp.mint_id_token("alice", aud=EDGE_AUD, header={"typ": "at+jwt"})
    assert federation.verify_subject_token(token, now=now, token_type=JWT_TOKEN_TYPE)


def test_subject_token_id_token_type_refuses_an_at_jwt(idp: IdP, federation: Federation,
                                                       now: int) -> None:
    token = idp.mint_id_token("alice", aud=EDGE_AUD, header={"typ": "at+jwt"})
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(token, now=now, token_type=ID_TOKEN_TYPE)
    assert e.value.debug == "typ 'at+jwt' not accepted here"


def test_subject_token_unknown_issuer(clock: Clock, federation: Federation, now: int) -> None:
    other, _, thread = start_idp(clock=clock)
    try:
        token = other.mint_id_token("alice", aud=EDGE_AUD)
        with pytest.raises(IdentityError) as e:
            federation.verify_subject_token(token, now=now)
    finally:
        thread.stop()
    assert e.value.error == "invalid_request"
    assert e.value.debug == f"untrusted issuer {other.issuer!r}"
    assert e.value.body() == {"error": "invalid_request",
                              "error_description": IdentityError.GENERIC_DESCRIPTION}


def test_subject_token_claiming_a_trusted_issuer_but_signed_elsewhere(
    idp: IdP, clock: Clock, federation: Federation, now: int
) -> None:
    other, _, thread = start_idp(clock=clock)
    try:
        # Another IdP's genuine key, but the token claims our trusted issuer and its kid.
        token = other.mint_id_token("alice", aud=EDGE_AUD, iss=idp.issuer, kid=idp.current_kid,
                                    sign_with=other._signing)
        with pytest.raises(IdentityError) as e:
            federation.verify_subject_token(token, now=now)
    finally:
        thread.stop()
    assert e.value.debug == "bad signature (BadSignatureError)"


def test_subject_token_wrong_aud(idp: IdP, federation: Federation, now: int) -> None:
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(idp.mint_id_token("alice", aud="elsewhere"), now=now)
    assert e.value.debug == "aud mismatch"


def test_subject_token_expired(idp: IdP, federation: Federation, now: int) -> None:
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(
            idp.mint_id_token("alice", aud=EDGE_AUD, exp_in=-3600), now=now)
    assert e.value.debug == "expired"


def test_subject_token_idp_closed_to_machine_tokens(idp: IdP, now: int) -> None:
    federation = Federation([_config(idp, allow_machine_tokens=False)], MemoryStore())
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(idp.mint_id_token("alice", aud=EDGE_AUD), now=now)
    assert e.value.debug == "idp corp does not accept machine tokens"


def test_subject_token_unsupported_type(idp: IdP, federation: Federation, now: int) -> None:
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(idp.mint_id_token("alice", aud=EDGE_AUD), now=now,
                                        token_type="urn:ietf:params:oauth:token-type:saml2")
    assert e.value.debug == "unsupported subject_token_type " \
                            "'urn:ietf:params:oauth:token-type:saml2'"


def test_subject_token_not_a_jwt(federation: Federation, now: int) -> None:
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token("opaque-access-token", now=now)
    assert e.value.debug == "not a compact JWS"


def test_subject_token_for_our_own_login_client_is_refused(idp: IdP, federation: Federation,
                                                         now: int) -> None:
    """Issue 20 hardening: an ID token for authserver's own login client (a browser sign-in)
    is not for the edge to exchange."""
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(idp.mint_id_token("alice", aud=CLIENT_ID), now=now)
    assert e.value.error == "invalid_request"
    assert e.value.debug == "aud is our own login client"


def test_subject_token_also_for_our_own_login_client_is_refused(
    idp: IdP, federation: Federation, now: int
) -> None:
    token = idp.mint_id_token("alice", aud=[EDGE_AUD, CLIENT_ID], extra={"azp": EDGE_AUD})
    with pytest.raises(IdentityError) as e:
        federation.verify_subject_token(token, now=now)
    assert e.value.debug == "aud is our own login client"


def test_our_own_login_client_cannot_be_a_trusted_audience(idp: IdP) -> None:
    with pytest.raises(ValueError, match="trusted_audiences"):
        _config(idp, trusted_audiences=(EDGE_AUD, CLIENT_ID))


def test_subject_token_is_single_use(idp: IdP, federation: Federation, now: int) -> None:
    token = idp.mint_id_token("alice", aud=EDGE_AUD)  # no jti: its hash is what is spent
    _, claims = federation.verify_subject_token(token, now=now)
    federation.spend_subject_token(token, claims, now=now)
    _, claims = federation.verify_subject_token(token, now=now)
    with pytest.raises(IdentityError) as e:
        federation.spend_subject_token(token, claims, now=now)
    assert e.value.error == "invalid_request"
    assert e.value.debug == "subject_token already used"


def test_subject_token_with_another_signature_is_still_spent(idp: IdP, federation: Federation,
                                                             now: int) -> None:
    """ECDSA signatures are malleable ((r, n - s) verifies too): what is spent is the signed
    content, not the token's bytes."""
    token = idp.mint_id_token("alice", aud=EDGE_AUD)
    claims = federation.verify_subject_token(token, now=now)[1]
    federation.spend_subject_token(token, claims, now=now)
    head, payload, _ = token.split(".")
    with pytest.raises(IdentityError):
        federation.spend_subject_token(f"{head}.{payload}.b3RoZXI", claims, now=now)


def test_subject_token_single_use_by_jti(idp: IdP, federation: Federation, now: int) -> None:
    first = idp.mint_id_token("alice", aud=EDGE_AUD, extra={"jti": "j-1"})
    again = idp.mint_id_token("alice", aud=EDGE_AUD, extra={"jti": "j-1", "auth_time": 1})
    assert first != again
    federation.spend_subject_token(first, federation.verify_subject_token(first, now=now)[1],
                                   now=now)
    with pytest.raises(IdentityError):
        federation.spend_subject_token(
            again, federation.verify_subject_token(again, now=now)[1], now=now)


def test_spent_subject_token_is_remembered_until_it_expires(idp: IdP, now: int) -> None:
    from authserver.identity.federation import ID_TOKEN_LEEWAY

    store = MemoryStore()
    federation = Federation([_config(idp)], store)
    token = idp.mint_id_token("alice", aud=EDGE_AUD, exp_in=120)
    seen: list[int] = []
    original = store.add_if_absent

    def add_if_absent(key: str, ttl: int) -> bool:
        seen.append(ttl)
        return original(key, ttl)

    store.add_if_absent = add_if_absent  # type: ignore[method-assign]
    federation.spend_subject_token(token, federation.verify_subject_token(token, now=now)[1],
                                   now=now)
    assert seen == [120 + ID_TOKEN_LEEWAY]


def test_trusted_audiences_are_not_accepted_for_login(idp: IdP, provider: OIDCProvider,
                                                      now: int) -> None:
    token = idp.mint_id_token("alice", aud=EDGE_AUD, nonce="n")
    assert _reject(provider, token, now, nonce="n") == "aud mismatch"


# --- configuration ---------------------------------------------------------------------------


def test_from_settings_merges_the_claim_map() -> None:
    config = IdPConfig.from_settings("okta", {
        "issuer": "https://corp.okta.example", "client_id": "c", "client_secret": "s",
        "scopes": "openid email groups", "claim_map": {"groups": "grp"},
        "trusted_audiences": "edge"})
    assert config.claim_map["groups"] == "grp"
    assert config.claim_map["email"] == "email"
    assert config.scopes == ("openid", "email", "groups")
    assert config.trusted_audiences == ("edge",)


def test_from_settings_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        IdPConfig.from_settings("x", {"issuer": "https://i.example", "client_id": "c",
                                      "client_secret": "s", "audience": "typo"})


def test_config_plain_http_issuer_off_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        IdPConfig(name="x", issuer="http://idp.example", client_id="c", client_secret="s")


def test_config_scopes_without_openid() -> None:
    with pytest.raises(ValueError, match="openid"):
        IdPConfig(name="x", issuer="https://idp.example", client_id="c", client_secret="s",
                  scopes=("email",))


def test_config_repr_hides_the_client_secret() -> None:
    config = IdPConfig(name="x", issuer="https://idp.example", client_id="c",
                       client_secret="very-secret-value")
    assert "very-secret-value" not in repr(config)


def test_federation_duplicate_issuer() -> None:
    a = IdPConfig(name="a", issuer="https://idp.example", client_id="c", client_secret="s")
    b = IdPConfig(name="b", issuer="https://idp.example", client_id="d", client_secret="s")
    with pytest.raises(ValueError, match="duplicate IdP issuer"):
        Federation([a, b], MemoryStore())
