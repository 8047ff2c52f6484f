"""RFC 9449 §7 resource-server verification (authserver.resource): DPOP-13/14/31/4x, JAT-05.

Tokens are verified over real HTTP with `jwks_verifier` against a loopback JWKS server; proofs
and DPoP requests are made by an independent client (requests_oauth2client).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey
from requests_oauth2client import DPoPKey, DPoPToken

from authserver.dpop import NonceIssuer, access_token_hash
from authserver.errors import (
    InvalidTokenError,
    ResourceError,
    ResourceInvalidDpopProofError,
    ResourceInvalidRequestError,
    ResourceUseDpopNonceError,
    TemporarilyUnavailableError,
)
from authserver.keys import InvalidSignatureError
from authserver.resource import JWKS_MIN_REFETCH_INTERVAL, ResourceVerifier, jwks_verifier
from authserver.store import StoreUnavailableError
from authserver.store.memory import MemoryStore
from authserver.testing.server import ServerThread, free_port
from tests.store_helpers import CountingStore

ISSUER = "https://as.example.com"
AUDIENCE = "https://rs.example.com/api"
URL = "https://rs.example.com/api/items"
ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'  # DPOP_SIGNING_ALGS, as the challenge spells it
PRM = "https://rs.example.com/.well-known/oauth-protected-resource"


class JwksServer:
    """A loopback JWKS endpoint whose keys, status and request count the tests control."""

    def __init__(self) -> None:
        self.keys: list[ECKey] = [ECKey.generate_key("P-256", auto_kid=True)]
        self.status = 200
        self.hits = 0
        self._mutex = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        import json

        with self._mutex:
            self.hits += 1
        body = json.dumps({"keys": [
            {**k.as_dict(private=False), "use": "sig", "alg": "ES256"} for k in self.keys
        ]}).encode()
        start_response(f"{self.status} X", [("Content-Type", "application/json")])
        return [body]


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[JwksServer, str]]:
    app = JwksServer()
    with ServerThread(app) as base_url:
        yield app, base_url + "/jwks"


@pytest.fixture
def jwks(jwks_server: tuple[JwksServer, str]) -> tuple[JwksServer, str]:
    app, uri = jwks_server
    app.keys, app.status, app.hits = app.keys[:1], 200, 0
    return app, uri


@pytest.fixture
def client_key(now: int) -> DPoPKey:
    return DPoPKey.generate(alg="ES256", iat_generator=lambda: now)


def mint(jwks: tuple[JwksServer, str], now: int, jkt: str | None, *, typ: str = "at+jwt",
         key: ECKey | None = None, **overrides: Any) -> str:
    key = key or jwks[0].keys[0]
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": "agent",
                              "iat": now, "exp": now + 60, "jti": "at-1"}
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": typ}, claims, key)


def make_verifier(jwks: tuple[JwksServer, str], store: Any = None, **kwargs: Any
                  ) -> ResourceVerifier:
    kwargs.setdefault("audience", AUDIENCE)
    return ResourceVerifier(issuer=ISSUER, verify_jwt=jwks_verifier(jwks[1], issuer=ISSUER),
                            store=store or MemoryStore(), **kwargs)


def request(token: str | None, client_key: DPoPKey, *, method: str = "GET", url: str = URL,
            nonce: str | None = None) -> dict[str, list[str]]:
    """Authorization and DPoP headers exactly as requests_oauth2client sends them."""
    if token is None:
        return {"authorization": [], "dpop": []}
    prepared = requests.Request(
        method, url, auth=DPoPToken(access_token=token, _dpop_key=client_key)
    ).prepare()
    dpop = prepared.headers["DPoP"]
    if nonce is not None:
        dpop = str(client_key.proof(htm=method, htu=url, ath=access_token_hash(token),
                                    nonce=nonce))
    return {"authorization": [prepared.headers["Authorization"]], "dpop": [dpop]}


def refused(verifier: ResourceVerifier, headers: dict[str, list[str]], now: int,
            cls: type[ResourceError], status: int, challenge: str, *, method: str = "GET"
            ) -> ResourceError:
    with pytest.raises(ResourceError) as info:
        verifier.verify(method=method, url=URL, now=now, **headers)
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.headers()["WWW-Authenticate"] == challenge
    return error


def challenge(error: str, description: str, extra: str = "") -> str:
    return f'DPoP error="{error}", error_description="{description}", {extra}{ALGS}'


# --- accepted ----------------------------------------------------------------------------------


def test_accepts_dpop_bound_token_with_proof(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt)
    claims = make_verifier(jwks).verify(method="GET", url=URL, now=now,
                                        **request(token, client_key))
    assert (claims["sub"], claims["cnf"]) == ("user-1", {"jkt": client_key.dpop_jkt})


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_accepts_other_proof_algs(alg: str, jwks: Any, now: int) -> None:
    key = DPoPKey.generate(alg=alg, iat_generator=lambda: now)
    token = mint(jwks, now, key.dpop_jkt)
    assert make_verifier(jwks).verify(method="POST", url=URL, now=now,
                                      **request(token, key, method="POST"))


def test_accepts_audience_predicate_and_aud_list(jwks: Any, client_key: DPoPKey,
                                                 now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, aud=["other", AUDIENCE + "/items"])
    verifier = make_verifier(jwks, audience=lambda aud: aud.startswith(AUDIENCE + "/"))
    assert verifier.verify(method="GET", url=URL, now=now, **request(token, client_key))


# --- DPOP-41/42/43: credentials -----------------------------------------------------------------


def test_no_authorization_gets_bare_challenge(jwks: Any, now: int) -> None:
    error = refused(make_verifier(jwks), {"authorization": [], "dpop": []}, now,
                    InvalidTokenError, 401, f"DPoP {ALGS}")
    assert error.body() == {}


def test_unsupported_scheme_gets_bare_challenge(jwks: Any, now: int) -> None:
    headers = {"authorization": ["Basic dXNlcjpwYXNz"], "dpop": []}
    refused(make_verifier(jwks), headers, now, InvalidTokenError, 401, f"DPoP {ALGS}")


def test_bare_challenge_names_resource_metadata(jwks: Any, now: int) -> None:
    verifier = make_verifier(jwks, resource_metadata=PRM)
    refused(verifier, {"authorization": [], "dpop": []}, now, InvalidTokenError, 401,
            f'DPoP resource_metadata="{PRM}", {ALGS}')


def test_bound_token_presented_as_bearer_is_invalid_token(jwks: Any, client_key: DPoPKey,
                                                          now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    headers["authorization"] = [headers["authorization"][0].replace("DPoP ", "Bearer ", 1)]
    refused(make_verifier(jwks), headers, now, InvalidTokenError, 401,
            challenge("invalid_token", "Bearer scheme not accepted, use DPoP"))


def test_two_authorization_headers_are_invalid_request(jwks: Any, client_key: DPoPKey,
                                                       now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    headers["authorization"] *= 2
    refused(make_verifier(jwks), headers, now, ResourceInvalidRequestError, 400,
            challenge("invalid_request", "Multiple Authorization headers"))


@pytest.mark.parametrize("value", ["DPoP", "DPoP a b", "DPoP tok{en}"])
def test_malformed_authorization_is_invalid_request(value: str, jwks: Any, now: int) -> None:
    refused(make_verifier(jwks), {"authorization": [value], "dpop": []}, now,
            ResourceInvalidRequestError, 400,
            challenge("invalid_request", "Malformed Authorization header"))


# --- JAT-05: the access token -------------------------------------------------------------------


def invalid_token(jwks: Any, token: str, client_key: DPoPKey, now: int, description: str,
                  **kwargs: Any) -> None:
    refused(make_verifier(jwks, **kwargs), request(token, client_key), now, InvalidTokenError,
            401, challenge("invalid_token", description))


def test_rejects_token_signed_by_unknown_key(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, key=ECKey.generate_key("P-256", auto_kid=True))
    invalid_token(jwks, token, client_key, now, "Invalid access token")


def test_rejects_token_with_wrong_typ(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, typ="JWT")
    invalid_token(jwks, token, client_key, now, "Invalid access token")


def test_rejects_token_from_other_issuer(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, iss="https://evil.example.com")
    invalid_token(jwks, token, client_key, now, "Invalid access token")


def test_rejects_issuer_other_than_configured(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt)
    verifier = ResourceVerifier(
        issuer="https://other.example.com", audience=AUDIENCE, store=MemoryStore(),
        verify_jwt=jwks_verifier(jwks[1], issuer=ISSUER),
    )
    refused(verifier, request(token, client_key), now, InvalidTokenError, 401,
            challenge("invalid_token", "Access token issuer not accepted"))


@pytest.mark.parametrize("aud", ["https://other.example.com", ["a", "b"], None, 7])
def test_rejects_token_for_another_audience(aud: Any, jwks: Any, client_key: DPoPKey,
                                            now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, aud=aud)
    invalid_token(jwks, token, client_key, now, "Access token audience is not this resource")


def test_rejects_expired_token(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, iat=now - 120, exp=now - 30)
    invalid_token(jwks, token, client_key, now, "Access token expired")


@pytest.mark.parametrize("claims", [{"nbf": 1_800_000_031}, {"iat": 1_800_000_031}])
def test_rejects_token_not_yet_valid(claims: dict[str, Any], jwks: Any, client_key: DPoPKey,
                                     now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, **claims)
    invalid_token(jwks, token, client_key, now, "Access token not yet valid")


@pytest.mark.parametrize("claims", [{"exp": None}, {"iat": None}, {"exp": "soon"},
                                    {"nbf": True}])
def test_rejects_token_with_bad_time_claims(claims: dict[str, Any], jwks: Any,
                                            client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt, **claims)
    invalid_token(jwks, token, client_key, now, "Access token time claims are invalid")


def test_rejects_unbound_token_with_dpop_scheme(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, None)
    invalid_token(jwks, token, client_key, now, "Access token is not DPoP-bound")


def test_rejects_proof_key_other_than_token_binding(jwks: Any, client_key: DPoPKey,
                                                     now: int) -> None:
    # DPOP-14: RFC 9449 §7.1 answers a key-binding failure with invalid_token.
    other = DPoPKey.generate(alg="ES256", iat_generator=lambda: now)
    token = mint(jwks, now, other.dpop_jkt)
    invalid_token(jwks, token, client_key, now, "DPoP proof key does not match the token")


# --- the proof (validate_proof's checks, in their 401 form) -------------------------------------


def invalid_proof(verifier: ResourceVerifier, headers: dict[str, list[str]], now: int,
                  description: str, extra: str = "") -> None:
    refused(verifier, headers, now, ResourceInvalidDpopProofError, 401,
            challenge("invalid_dpop_proof", description, extra))


def test_rejects_missing_proof(jwks: Any, client_key: DPoPKey, now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    invalid_proof(make_verifier(jwks), {**headers, "dpop": []}, now, "DPoP proof required")


def test_rejects_two_proofs(jwks: Any, client_key: DPoPKey, now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    headers["dpop"] *= 2
    invalid_proof(make_verifier(jwks), headers, now, "Multiple DPoP headers")


def test_rejects_proof_for_another_uri(jwks: Any, client_key: DPoPKey, now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt)
    headers = request(token, client_key, url="https://rs.example.com/api/other")
    invalid_proof(make_verifier(jwks), headers, now,
                  "DPoP proof htu does not match the request URI")


def test_rejects_proof_for_another_method(jwks: Any, client_key: DPoPKey, now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key, method="GET")
    with pytest.raises(ResourceInvalidDpopProofError) as info:
        make_verifier(jwks).verify(method="DELETE", url=URL, now=now, **headers)
    assert info.value.description == "DPoP proof htm does not match the request method"


def test_rejects_proof_with_ath_of_another_token(jwks: Any, client_key: DPoPKey,
                                                 now: int) -> None:
    # DPOP-13: the proof was made for a different access token.
    token = mint(jwks, now, client_key.dpop_jkt)
    headers = request(token, client_key)
    headers["dpop"] = request(mint(jwks, now, client_key.dpop_jkt, jti="at-2"), client_key)["dpop"]
    invalid_proof(make_verifier(jwks), headers, now,
                  "DPoP proof ath does not match the access token")


def test_rejects_proof_without_ath(jwks: Any, client_key: DPoPKey, now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    headers["dpop"] = [str(client_key.proof(htm="GET", htu=URL))]
    invalid_proof(make_verifier(jwks), headers, now,
                  "DPoP proof ath is required with an access token")


def test_rejects_proof_alg_outside_configured_algs(jwks: Any, now: int) -> None:
    key = DPoPKey.generate(alg="EdDSA", iat_generator=lambda: now)
    verifier = make_verifier(jwks, algs=("ES256",))
    refused(verifier, request(mint(jwks, now, key.dpop_jkt), key), now,
            ResourceInvalidDpopProofError, 401,
            'DPoP error="invalid_dpop_proof", error_description="DPoP proof alg is not supported",'
            ' algs="ES256"')


def test_rejects_replayed_request(jwks: Any, client_key: DPoPKey, store: Any, now: int) -> None:
    verifier = make_verifier(jwks, store)
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    verifier.verify(method="GET", url=URL, now=now, **headers)
    invalid_proof(verifier, headers, now, "DPoP proof replayed")


def test_challenge_names_resource_metadata(jwks: Any, client_key: DPoPKey, now: int) -> None:
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    invalid_proof(make_verifier(jwks, resource_metadata=PRM), {**headers, "dpop": []}, now,
                  "DPoP proof required", f'resource_metadata="{PRM}", ')


def test_store_unavailable_propagates(jwks: Any, client_key: DPoPKey, now: int) -> None:
    class UnavailableStore(MemoryStore):
        def add_if_absent(self, key: str, ttl: int) -> bool:
            raise StoreUnavailableError(debug="redis: ConnectionError")

    verifier = make_verifier(jwks, UnavailableStore())
    with pytest.raises(StoreUnavailableError):
        verifier.verify(method="GET", url=URL, now=now,
                        **request(mint(jwks, now, client_key.dpop_jkt), client_key))


# --- issue 18: store reads with the proof's replay entry ----------------------------------------


def epoch_of(claims: Any) -> list[str]:
    return [f"conn-epoch:{claims['sub']}"]


def test_verify_and_read_reads_the_keys_the_verified_claims_name(
        jwks: Any, client_key: DPoPKey, now: int) -> None:
    store = CountingStore()
    store.set("conn-epoch:user-1", "1700000000")
    claims, values = make_verifier(jwks, store).verify_and_read(
        method="GET", url=URL, now=now, read=epoch_of,
        **request(mint(jwks, now, client_key.dpop_jkt), client_key))
    assert claims["sub"] == "user-1" and values == ["1700000000"]
    assert store.calls == ["add_if_absent_and_get"]  # the replay entry and the read together


def test_verify_and_read_of_a_refused_request_reads_nothing(
        jwks: Any, client_key: DPoPKey, now: int) -> None:
    store = CountingStore()
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key, method="POST")
    with pytest.raises(ResourceInvalidDpopProofError) as exc:
        make_verifier(jwks, store).verify_and_read(method="GET", url=URL, now=now,
                                                   read=epoch_of, **headers)
    assert exc.value.status_code == 401
    assert exc.value.headers()["WWW-Authenticate"] == challenge(
        "invalid_dpop_proof", "DPoP proof htm does not match the request method")
    assert store.calls == []


def test_verify_and_read_of_a_replayed_proof_is_refused(
        jwks: Any, client_key: DPoPKey, now: int) -> None:
    verifier = make_verifier(jwks, CountingStore())
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key)
    verifier.verify_and_read(method="GET", url=URL, now=now, read=epoch_of, **headers)
    with pytest.raises(ResourceInvalidDpopProofError) as exc:
        verifier.verify_and_read(method="GET", url=URL, now=now, read=epoch_of, **headers)
    assert exc.value.status_code == 401
    assert exc.value.headers()["WWW-Authenticate"] == challenge("invalid_dpop_proof",
                                                                "DPoP proof replayed")


def test_verify_and_read_of_a_bearer_token_reads_on_its_own(jwks: Any, now: int) -> None:
    store = CountingStore()
    store.set("conn-epoch:user-1", "7")
    claims, values = bearer_verifier(jwks, store=store).verify_and_read(
        method="GET", url=URL, now=now, read=epoch_of, **bearer(mint(jwks, now, None)))
    assert claims["sub"] == "user-1" and values == ["7"] and store.calls == ["get"]


# --- DPOP-31: resource-server nonces -----------------------------------------------------------


def test_requires_nonce(jwks: Any, client_key: DPoPKey, now: int) -> None:
    nonces = NonceIssuer([b"r" * 32], context=b"rs")
    verifier = make_verifier(jwks, nonces=nonces, nonce_required=True)
    token = mint(jwks, now, client_key.dpop_jkt)
    error = refused(verifier, request(token, client_key), now, ResourceUseDpopNonceError, 401,
                    challenge("use_dpop_nonce", "Resource server requires nonce in DPoP proof"))
    assert isinstance(error, ResourceUseDpopNonceError)
    assert error.headers()["DPoP-Nonce"] == error.nonce
    assert nonces.is_valid(error.nonce, now)
    retried = request(token, client_key, nonce=error.nonce)
    assert verifier.verify(method="GET", url=URL, now=now, **retried)["sub"] == "user-1"


def test_rejects_authorization_server_nonce(jwks: Any, client_key: DPoPKey, now: int) -> None:
    secret = b"r" * 32
    verifier = make_verifier(jwks, nonces=NonceIssuer([secret], context=b"rs"),
                             nonce_required=True)
    as_nonce = NonceIssuer([secret], context=b"as").issue(now)
    headers = request(mint(jwks, now, client_key.dpop_jkt), client_key, nonce=as_nonce)
    # The challenge says what was wrong: a nonce was sent, but not one of this server's.
    refused(verifier, headers, now, ResourceUseDpopNonceError, 401,
            challenge("use_dpop_nonce", "DPoP proof nonce was not issued by this server"))


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"algs": ("HS256",)}, {"algs": ()},
                                    {"nonce_required": True}])
def test_refuses_unsafe_configuration(kwargs: dict[str, Any], jwks: Any) -> None:
    with pytest.raises(ValueError):
        make_verifier(jwks, **kwargs)


# --- jwks_verifier ------------------------------------------------------------------------------


def test_jwks_fetched_once_while_cached(jwks: Any, now: int) -> None:
    verify = jwks_verifier(jwks[1], issuer=ISSUER, cache_seconds=300)
    assert verify(mint(jwks, now, "jkt"), now)["iss"] == ISSUER
    assert verify(mint(jwks, now, "jkt"), now + 299)["iss"] == ISSUER
    assert jwks[0].hits == 1
    verify(mint(jwks, now, "jkt"), now + 300)
    assert jwks[0].hits == 2


def test_jwks_refetched_for_a_rotated_key_at_most_once_per_interval(jwks: Any, now: int) -> None:
    verify = jwks_verifier(jwks[1], issuer=ISSUER)
    verify(mint(jwks, now, "jkt"), now)
    rotated = ECKey.generate_key("P-256", auto_kid=True)
    jwks[0].keys.append(rotated)
    with pytest.raises(InvalidSignatureError, match="unknown kid"):
        verify(mint(jwks, now, "jkt", key=rotated), now + JWKS_MIN_REFETCH_INTERVAL - 1)
    assert jwks[0].hits == 1
    assert verify(mint(jwks, now, "jkt", key=rotated), now + JWKS_MIN_REFETCH_INTERVAL)
    assert jwks[0].hits == 2


@pytest.mark.parametrize("header", [{"typ": "JWT"}, {"alg": "ES384"}, {"kid": None}])
def test_jwks_verifier_rejects_header(header: dict[str, Any], jwks: Any, now: int) -> None:
    key = jwks[0].keys[0]
    protected = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt", **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    signing_key = ECKey.generate_key("P-384") if protected["alg"] == "ES384" else key
    token = jwt.encode(protected, {"iss": ISSUER}, signing_key, algorithms=[protected["alg"]])
    with pytest.raises(InvalidSignatureError):
        jwks_verifier(jwks[1], issuer=ISSUER)(token, now)


def test_jwks_verifier_accepts_long_form_typ(jwks: Any, now: int) -> None:
    token = mint(jwks, now, "jkt", typ="application/at+jwt")
    assert jwks_verifier(jwks[1], issuer=ISSUER)(token, now)["sub"] == "user-1"


def test_jwks_unavailable_fails_closed_with_503(jwks: Any, client_key: DPoPKey, now: int) -> None:
    jwks[0].status = 500
    with pytest.raises(TemporarilyUnavailableError) as info:
        make_verifier(jwks).verify(method="GET", url=URL, now=now,
                                   **request(mint(jwks, now, client_key.dpop_jkt), client_key))
    assert (info.value.error, info.value.status_code) == ("temporarily_unavailable", 503)


def test_jwks_unreachable_fails_closed_with_503(now: int) -> None:
    verify = jwks_verifier(f"http://127.0.0.1:{free_port()}/jwks", issuer=ISSUER)
    token = jwt.encode({"alg": "ES256", "kid": "k", "typ": "at+jwt"}, {"iss": ISSUER},
                       ECKey.generate_key("P-256"))
    with pytest.raises(TemporarilyUnavailableError):
        verify(token, now)


# --- allow_bearer: RFC 6750 for tokens that are not DPoP-bound (RFC 9449 §7.2, issue 14) ------

BOTH_BARE = f'Bearer resource_metadata="{PRM}", DPoP resource_metadata="{PRM}", {ALGS}'


def bearer(token: str) -> dict[str, list[str]]:
    return {"authorization": [f"Bearer {token}"], "dpop": []}


def bearer_verifier(jwks: Any, **kwargs: Any) -> ResourceVerifier:
    return make_verifier(jwks, allow_bearer=True, resource_metadata=PRM, **kwargs)


def test_bearer_accepted_for_an_unbound_token(jwks: Any, now: int) -> None:
    claims = bearer_verifier(jwks).verify(method="GET", url=URL, now=now,
                                          **bearer(mint(jwks, now, None)))
    assert claims["sub"] == "user-1" and "cnf" not in claims


def test_dpop_still_accepted_when_bearer_is_allowed(jwks: Any, client_key: DPoPKey,
                                                    now: int) -> None:
    token = mint(jwks, now, client_key.dpop_jkt)
    assert bearer_verifier(jwks).verify(method="GET", url=URL, now=now,
                                        **request(token, client_key))["cnf"]


def test_bearer_refused_for_a_dpop_bound_token(jwks: Any, client_key: DPoPKey,
                                               now: int) -> None:
    """RFC 9449 §7.2: a DPoP-bound token sent as Bearer is invalid_token, in the Bearer
    challenge the client attempted, followed by the DPoP challenge it must use."""
    error = refused(bearer_verifier(jwks), bearer(mint(jwks, now, client_key.dpop_jkt)), now,
                    InvalidTokenError, 401,
                    'Bearer error="invalid_token", error_description="DPoP-bound access token '
                    f'sent with the Bearer scheme, use DPoP", resource_metadata="{PRM}", '
                    f'DPoP resource_metadata="{PRM}", {ALGS}')
    assert error.body()["error"] == "invalid_token"


def test_bearer_errors_use_the_bearer_challenge(jwks: Any, now: int) -> None:
    refused(bearer_verifier(jwks), bearer(mint(jwks, now, None, aud="https://other.example")),
            now, InvalidTokenError, 401,
            'Bearer error="invalid_token", error_description="Access token audience is not '
            f'this resource", resource_metadata="{PRM}", DPoP resource_metadata="{PRM}", {ALGS}')


def test_bearer_expired_token_is_invalid_token(jwks: Any, now: int) -> None:
    token = mint(jwks, now - 120, None)
    refused(bearer_verifier(jwks), bearer(token), now, InvalidTokenError, 401,
            'Bearer error="invalid_token", error_description="Access token expired", '
            f'resource_metadata="{PRM}", DPoP resource_metadata="{PRM}", {ALGS}')


def test_no_credentials_offers_both_schemes(jwks: Any, now: int) -> None:
    error = refused(bearer_verifier(jwks), {"authorization": [], "dpop": []}, now,
                    InvalidTokenError, 401,
                    f'DPoP resource_metadata="{PRM}", {ALGS}, Bearer resource_metadata="{PRM}"')
    assert error.body() == {}


def test_unbound_token_with_the_dpop_scheme_is_still_refused(jwks: Any, client_key: DPoPKey,
                                                             now: int) -> None:
    refused(bearer_verifier(jwks), request(mint(jwks, now, None), client_key), now,
            InvalidTokenError, 401,
            f'DPoP error="invalid_token", error_description="Access token is not DPoP-bound", '
            f'resource_metadata="{PRM}", {ALGS}, Bearer resource_metadata="{PRM}"')


def test_malformed_bearer_is_invalid_request(jwks: Any, now: int) -> None:
    refused(bearer_verifier(jwks), {"authorization": ["Bearer a b"], "dpop": []}, now,
            ResourceInvalidRequestError, 400,
            'Bearer error="invalid_request", error_description="Malformed Authorization '
            f'header", resource_metadata="{PRM}", DPoP resource_metadata="{PRM}", {ALGS}')


@pytest.mark.parametrize("spelling", ["HTTPS://RS.EXAMPLE.COM/api", AUDIENCE + "/",
                                      "https://rs.example.com:443/api"])
def test_audience_compared_after_normalisation(spelling: str, jwks: Any, now: int) -> None:
    token = mint(jwks, now, None, aud=spelling)
    assert bearer_verifier(jwks).verify(method="GET", url=URL, now=now, **bearer(token))
