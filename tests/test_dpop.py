"""RFC 9449 proof validation (authserver.dpop): one test per rejection reason, DPOP-xx IDs."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from requests_oauth2client import DPoPKey

from authserver.config import DPOP_FUTURE_SKEW, DPOP_NONCE_TTL, DPOP_PROOF_WINDOW
from authserver.dpop import (
    DPOP_SIGNING_ALGS,
    MAX_JTI_LENGTH,
    MAX_PROOF_BYTES,
    DPoPProof,
    NonceIssuer,
    access_token_hash,
    jwk_thumbprint,
    normalize_htu,
    validate_proof,
)
from authserver.errors import InvalidDpopProofError, UseDpopNonceError
from authserver.store import StoreUnavailableError
from authserver.store.memory import MemoryStore
from tests.store_helpers import CountingStore

URL = "https://as.example.com/token"
TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"  # RFC 9449 §7.1 example token
SECRET = b"s" * 32
VECTORS = Path(__file__).parent / "vectors" / "dpop"
NQCHARS = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 9449 §8.1: 1*NQCHAR

_KEYS: dict[str, Key] = {
    "ES256": ECKey.generate_key("P-256"),
    "ES384": ECKey.generate_key("P-384"),
    "ES512": ECKey.generate_key("P-521"),
    "RS256": RSAKey.generate_key(2048),
    "PS256": RSAKey.generate_key(2048),
    "EdDSA": OKPKey.generate_key("Ed25519"),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: dict[str, Any], claims: Any, key: Key) -> str:
    """Sign exactly `header` and `claims` (no library defaults), so tests control every byte."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = jws.JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode(), key)
    return signing_input + "." + b64(signature)


def make_proof(
    now: int,
    alg: str = "ES256",
    *,
    key: Key | None = None,
    header: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    key = key or _KEYS[alg]
    body = {"jti": f"jti-{claims!r}-{alg}", "htm": "POST", "htu": URL, "iat": now, **claims}
    for name in drop:
        body.pop(name, None)
    return sign(
        {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False), **(header or {})},
        body,
        key,
    )


def validate(proof: str | list[str], now: int, store: Any = None, **kwargs: Any) -> DPoPProof:
    values = [proof] if isinstance(proof, str) else proof
    kwargs.setdefault("method", "POST")
    kwargs.setdefault("url", URL)
    return validate_proof(values, now=now, store=store or MemoryStore(), **kwargs)


def rejected(proof: str | list[str], now: int, **kwargs: Any) -> InvalidDpopProofError:
    with pytest.raises(InvalidDpopProofError) as info:
        validate(proof, now, **kwargs)
    error = info.value
    assert type(error) is InvalidDpopProofError
    assert (error.error, error.status_code) == ("invalid_dpop_proof", 400)
    assert error.headers() == {"Cache-Control": "no-store"}
    return error


def json_parametrize(directory: Path) -> pytest.MarkDecorator:
    files = sorted(directory.glob("*.json"))
    assert files, f"no vectors in {directory}"
    return pytest.mark.parametrize(
        "vector", [json.loads(f.read_text()) for f in files], ids=[f.stem for f in files]
    )


# --- vectors signed by an independent JOSE library (jwskate) ----------------------------------


@json_parametrize(VECTORS)
def test_vector(vector: dict[str, Any], now: int) -> None:
    assert vector["now"] == now
    kwargs = {"method": vector["method"], "url": vector["url"],
              "access_token": vector["access_token"]}
    if "jkt" in vector["expect"]:
        proof = validate(vector["proof"], now, **kwargs)
        assert proof.jkt == vector["expect"]["jkt"] == jwk_thumbprint(proof.jwk)
    else:
        error = rejected(vector["proof"], now, **kwargs)
        assert error.description == vector["expect"]["error_description"]


# --- accepted proofs ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", DPOP_SIGNING_ALGS)
def test_accepts_every_advertised_alg(alg: str, now: int) -> None:
    proof = validate(make_proof(now, alg, jti="j1"), now)
    assert proof == DPoPProof(
        jkt=_KEYS[alg].thumbprint(), jti="j1", htm="POST", htu=URL, iat=now, nonce=None,
        ath=None, jwk=_KEYS[alg].as_dict(private=False),
    )


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256"])
def test_accepts_requests_oauth2client_proof(alg: str, now: int) -> None:
    client_key = DPoPKey.generate(alg=alg, iat_generator=lambda: now)
    proof = client_key.proof(htm="GET", htu=URL + "?q=1", ath=access_token_hash(TOKEN))
    result = validate(str(proof), now, method="GET", access_token=TOKEN)
    assert result.jkt == client_key.dpop_jkt
    assert result.htu == URL


def test_accepts_float_iat(now: int) -> None:
    assert validate(make_proof(now, iat=now - 0.5), now).iat == now - 1


# --- DPOP-01/02: header count and syntax --------------------------------------------------------


def test_rejects_no_proof(now: int) -> None:
    assert rejected([], now).description == "DPoP proof required"


def test_rejects_two_dpop_headers(now: int) -> None:
    proof = make_proof(now)
    assert rejected([proof, proof], now).description == "Multiple DPoP headers"


def test_rejects_oversized_proof(now: int) -> None:
    proof = make_proof(now, padding="x" * MAX_PROOF_BYTES)
    assert rejected(proof, now).description == "DPoP proof is too large"


@pytest.mark.parametrize("value", ["", "abc", "a.b", "a.b.c.d.e", "a..c", "a b.c.d", "a.b.c="])
def test_rejects_value_that_is_not_compact_jws(value: str, now: int) -> None:
    assert rejected(value, now).description == "DPoP proof is not a compact JWS"


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"jti"'])
def test_rejects_payload_that_is_not_a_json_object(payload: bytes, now: int) -> None:
    proof = make_proof(now)
    header, _, signature = proof.split(".")
    error = rejected(f"{header}.{b64(payload)}.{signature}", now)
    assert error.description == "DPoP proof is not a well-formed JWT"


def test_rejects_header_that_is_not_json(now: int) -> None:
    _, payload, signature = make_proof(now).split(".")
    error = rejected(f"{b64(b'{nope')}.{payload}.{signature}", now)
    assert error.description == "DPoP proof is not a well-formed JWT"


def test_rejects_critical_header(now: int) -> None:
    proof = make_proof(now, header={"crit": ["exp"], "exp": now})
    assert rejected(proof, now).description == "DPoP proof has unsupported critical headers"


# --- DPOP-04/05/06/07: JOSE header, key, signature -----------------------------------------------


@pytest.mark.parametrize("typ", [None, "JWT", "DPoP+jwt", "application/dpop+jwt"])
def test_rejects_wrong_typ(typ: str | None, now: int) -> None:
    proof = make_proof(now, header={"typ": typ})
    assert rejected(proof, now).description == "DPoP proof typ must be dpop+jwt"


@pytest.mark.parametrize(("signature", "description"), [
    ("", "DPoP proof is not a compact JWS"),  # RFC 7515 §A.5: an unsecured JWS has none
    ("AA", "DPoP proof alg is not supported"),
])
def test_rejects_alg_none(signature: str, description: str, now: int) -> None:
    key = _KEYS["ES256"]
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.as_dict(private=False)}
    unsecured = sign(header, {"jti": "j", "htm": "POST", "htu": URL, "iat": now}, key)
    proof = unsecured.rsplit(".", 1)[0] + "." + signature
    assert rejected(proof, now).description == description


def test_rejects_alg_hs256(now: int) -> None:
    key = OctKey.generate_key(256)
    proof = make_proof(now, "HS256", key=key, header={"jwk": key.as_dict(private=True)})
    assert rejected(proof, now).description == "DPoP proof alg is not supported"


def test_rejects_asymmetric_alg_not_on_allowlist(now: int) -> None:
    assert rejected(make_proof(now, "ES512"), now).description == "DPoP proof alg is not supported"


def test_rejects_alg_outside_narrowed_allowlist(now: int) -> None:
    proof = make_proof(now, "EdDSA")
    assert rejected(proof, now, algs=("ES256",)).description == "DPoP proof alg is not supported"


def test_rejects_missing_jwk(now: int) -> None:
    proof = make_proof(now, header={"jwk": None})
    assert rejected(proof, now).description == "DPoP proof has no jwk header"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_rejects_jwk_with_private_members(alg: str, now: int) -> None:
    proof = make_proof(now, alg, header={"jwk": _KEYS[alg].as_dict(private=True)})
    assert rejected(proof, now).description == (
        "DPoP proof jwk must not contain private key members"
    )


def test_rejects_symmetric_jwk(now: int) -> None:
    proof = make_proof(now, header={"jwk": {"kty": "oct", "k": b64(b"k" * 32)}})
    assert rejected(proof, now).description == "DPoP proof jwk must not be a symmetric key"


def test_rejects_jwk_that_is_not_a_valid_key(now: int) -> None:
    jwk = _KEYS["ES256"].as_dict(private=False)
    proof = make_proof(now, header={"jwk": {**jwk, "y": jwk["x"]}})  # not on the curve
    assert rejected(proof, now).description == "DPoP proof jwk is not a valid public key"


@pytest.mark.parametrize(("alg", "key_alg"), [("ES256", "ES384"), ("ES256", "RS256"),
                                              ("EdDSA", "ES256"), ("RS256", "EdDSA")])
def test_rejects_jwk_that_does_not_fit_alg(alg: str, key_alg: str, now: int) -> None:
    key = _KEYS[key_alg]
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    proof = b64(json.dumps(header).encode()) + "." + b64(b"{}") + "." + b64(b"sig")
    assert rejected(proof, now).description == "DPoP proof jwk does not match alg"


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # joserfc warns, we refuse
def test_rejects_weak_rsa_key(now: int) -> None:
    proof = make_proof(now, "RS256", key=RSAKey.generate_key(1024, private=True))
    assert rejected(proof, now).description == "DPoP proof RSA key is not accepted"


def test_rejects_rsa_key_with_huge_exponent(now: int) -> None:
    jwk = {**_KEYS["RS256"].as_dict(private=False), "e": b64((2**64 + 1).to_bytes(9, "big"))}
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    proof = b64(json.dumps(header).encode()) + "." + b64(b"{}") + "." + b64(b"sig")
    assert rejected(proof, now).description == "DPoP proof RSA key is not accepted"


def test_rejects_signature_by_another_key(now: int) -> None:
    proof = make_proof(now, key=ECKey.generate_key("P-256"),
                       header={"jwk": _KEYS["ES256"].as_dict(private=False)})
    assert rejected(proof, now).description == "DPoP proof signature is invalid"


def test_rejects_tampered_payload(now: int) -> None:
    header, _, signature = make_proof(now).split(".")
    claims = {"jti": "j", "htm": "POST", "htu": URL, "iat": now}
    proof = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert rejected(proof, now).description == "DPoP proof signature is invalid"


# --- DPOP-03: claims ---------------------------------------------------------------------------


@pytest.mark.parametrize(("claim", "description"), [
    ("jti", "DPoP proof jti is missing or not a string"),
    ("htm", "DPoP proof htm is missing or not a string"),
    ("htu", "DPoP proof htu is missing or not a string"),
    ("iat", "DPoP proof iat is missing or not a number"),
])
def test_rejects_missing_required_claim(claim: str, description: str, now: int) -> None:
    assert rejected(make_proof(now, drop=(claim,)), now).description == description


@pytest.mark.parametrize(("claims", "description"), [
    ({"jti": 7}, "DPoP proof jti is missing or not a string"),
    ({"jti": ""}, "DPoP proof jti is missing or not a string"),
    ({"htm": ["POST"]}, "DPoP proof htm is missing or not a string"),
    ({"iat": "1800000000"}, "DPoP proof iat is missing or not a number"),
    ({"iat": True}, "DPoP proof iat is missing or not a number"),
    ({"nonce": 1}, "DPoP proof nonce is not a string"),
    ({"ath": None}, "DPoP proof ath is not a string"),
])
def test_rejects_wrongly_typed_claim(claims: dict[str, Any], description: str, now: int) -> None:
    assert rejected(make_proof(now, **claims), now).description == description


def test_rejects_nan_iat(now: int) -> None:
    header, _, _ = make_proof(now).split(".")
    key = _KEYS["ES256"]
    proof = sign(json.loads(base64.urlsafe_b64decode(header + "==")),
                 {"jti": "j", "htm": "POST", "htu": URL, "iat": float("nan")}, key)
    assert rejected(proof, now).description == "DPoP proof iat is missing or not a number"


def test_rejects_jti_longer_than_bound(now: int) -> None:
    proof = make_proof(now, jti="j" * (MAX_JTI_LENGTH + 1))
    assert rejected(proof, now).description == "DPoP proof jti is too long"


# --- DPOP-08/09: method and URI -----------------------------------------------------------------


@pytest.mark.parametrize("htm", ["GET", "post", "POST "])
def test_rejects_htm_mismatch(htm: str, now: int) -> None:
    error = rejected(make_proof(now, htm=htm), now)
    assert error.description == "DPoP proof htm does not match the request method"


@pytest.mark.parametrize("htu", [
    "https://as.example.com/token/", "http://as.example.com/token",
    "https://as.example.com:8443/token", "https://evil.example.com/token",
    "https://as.example.com/TOKEN", "https://as.example.com/%74oke%6E/x",
])
def test_rejects_htu_mismatch(htu: str, now: int) -> None:
    error = rejected(make_proof(now, htu=htu), now)
    assert error.description == "DPoP proof htu does not match the request URI"


@pytest.mark.parametrize("htu", ["/token", "urn:x:token", "ftp://as.example.com/token",
                                 "https://user@as.example.com/token", "https://as.example.com:x/",
                                 "https://as.example.com/%zz"])
def test_rejects_htu_that_is_not_an_http_uri(htu: str, now: int) -> None:
    error = rejected(make_proof(now, htu=htu), now)
    assert error.description == "DPoP proof htu is not a valid URI"


@pytest.mark.parametrize("htu", [
    "https://as.example.com/token?x=1", "https://as.example.com/token#f",
    "HTTPS://AS.EXAMPLE.COM/token", "https://as.example.com:443/token",
    "https://as.example.com/%74oke%6E", "https://as.example.com/a/../token",
])
def test_accepts_htu_equal_after_normalization(htu: str, now: int) -> None:
    assert validate(make_proof(now, htu=htu), now).htu == URL


@pytest.mark.parametrize(("url", "normal"), [
    ("HTTP://Example.COM:80", "http://example.com/"),
    ("https://example.com:8443/a?b#c", "https://example.com:8443/a"),
    ("https://[::1]:443/%7euser/%2f", "https://[::1]/~user/%2F"),
    ("https://example.com/a b/é", "https://example.com/a%20b/%C3%A9"),
    ("https://example.com/a/./b/../c/..", "https://example.com/a/"),
])
def test_normalize_htu(url: str, normal: str) -> None:
    assert normalize_htu(url) == normal


# --- DPOP-11: time window -----------------------------------------------------------------------


def test_rejects_proof_older_than_window(now: int) -> None:
    proof = make_proof(now, iat=now - DPOP_PROOF_WINDOW - 1)
    assert rejected(proof, now).description == "DPoP proof has expired"


def test_rejects_proof_from_the_future(now: int) -> None:
    proof = make_proof(now, iat=now + DPOP_FUTURE_SKEW + 1)
    assert rejected(proof, now).description == "DPoP proof iat is in the future"


@pytest.mark.parametrize("offset", [-DPOP_PROOF_WINDOW, DPOP_FUTURE_SKEW])
def test_accepts_proof_at_window_edges(offset: int, now: int) -> None:
    assert validate(make_proof(now, iat=now + offset), now).iat == now + offset


def test_custom_window_is_honoured(now: int) -> None:
    proof = make_proof(now, iat=now - 11)
    assert rejected(proof, now, window=10).description == "DPoP proof has expired"


# --- DPOP-10/30/33: nonces ----------------------------------------------------------------------


def nonce_rejected(proof: str, now: int, **kwargs: Any) -> UseDpopNonceError:
    nonces: NonceIssuer = kwargs.setdefault("nonces", NonceIssuer([SECRET]))
    with pytest.raises(UseDpopNonceError) as info:
        validate(proof, now, **kwargs)
    error = info.value
    assert (error.error, error.status_code) == ("use_dpop_nonce", 400)
    assert error.headers() == {"Cache-Control": "no-store", "DPoP-Nonce": error.nonce}
    assert nonces.is_valid(error.nonce, now)
    return error


def test_requires_nonce_when_missing(now: int) -> None:
    error = nonce_rejected(make_proof(now), now, nonce_required=True)
    assert error.description == "Authorization server requires nonce in DPoP proof"


def test_rejects_expired_nonce(now: int) -> None:
    stale = NonceIssuer([SECRET]).issue(now - DPOP_NONCE_TTL)
    error = nonce_rejected(make_proof(now, nonce=stale), now, nonce_required=True)
    assert error.description == "DPoP proof nonce has expired"


def test_rejects_nonce_from_another_issuer(now: int) -> None:
    foreign = NonceIssuer([b"o" * 32]).issue(now)
    error = nonce_rejected(make_proof(now, nonce=foreign), now, nonce_required=True)
    assert error.description == "DPoP proof nonce was not issued by this server"


def test_rejects_stale_nonce_even_when_not_required(now: int) -> None:
    stale = NonceIssuer([SECRET]).issue(now - DPOP_NONCE_TTL)
    error = nonce_rejected(make_proof(now, nonce=stale), now)
    assert error.description == "DPoP proof nonce has expired"


def test_accepts_valid_nonce(now: int) -> None:
    nonces = NonceIssuer([SECRET])
    nonce = nonces.issue(now - 10)
    proof = validate(make_proof(now, nonce=nonce), now, nonces=nonces, nonce_required=True)
    assert proof.nonce == nonce


def test_accepts_proof_without_nonce_when_not_required(now: int) -> None:
    assert validate(make_proof(now), now, nonces=NonceIssuer([SECRET])).nonce is None


def test_nonce_required_without_issuer_is_a_configuration_error(now: int) -> None:
    with pytest.raises(ValueError, match="NonceIssuer"):
        validate(make_proof(now), now, nonce_required=True)


def test_nonce_is_opaque_unpredictable_nqchar(now: int) -> None:
    nonces = NonceIssuer([SECRET])
    first, second = nonces.issue(now), nonces.issue(now)
    assert first != second
    assert NQCHARS.match(first) and NQCHARS.match(second)


def test_nonce_valid_for_its_ttl_only(now: int) -> None:
    nonces = NonceIssuer([SECRET], ttl=30)
    nonce = nonces.issue(now)
    assert nonces.is_valid(nonce, now + 29)
    assert not nonces.is_valid(nonce, now + 30)


def test_nonce_from_the_future_is_invalid(now: int) -> None:
    nonces = NonceIssuer([SECRET])
    assert not nonces.is_valid(nonces.issue(now + DPOP_FUTURE_SKEW + 1), now)


def test_nonce_valid_on_every_instance_sharing_the_secret(now: int) -> None:
    assert NonceIssuer([SECRET]).is_valid(NonceIssuer([SECRET]).issue(now), now)


def test_nonce_rotation_first_secret_signs_all_verify(now: int) -> None:
    old, new = b"o" * 32, b"n" * 32
    issued_before_rotation = NonceIssuer([old]).issue(now)
    rotated = NonceIssuer([new, old])
    assert rotated.is_valid(issued_before_rotation, now)
    assert NonceIssuer([new]).is_valid(rotated.issue(now), now)
    assert not NonceIssuer([new]).is_valid(issued_before_rotation, now)


def test_nonce_context_separates_issuers(now: int) -> None:
    as_nonce = NonceIssuer([SECRET], context=b"as").issue(now)
    assert not NonceIssuer([SECRET], context=b"rs").is_valid(as_nonce, now)


@pytest.mark.parametrize("mutate", [
    lambda n: n[:-2] + ("AA" if n[-2:] != "AA" else "BB"),
    lambda n: n[:-1],
    lambda n: n + "A",
    lambda n: "!" + n[1:],
    lambda n: "",
    lambda n: 12345,
    lambda n: n * 10,
])
def test_nonce_tampered_or_garbage_is_invalid(mutate: Any, now: int) -> None:
    nonces = NonceIssuer([SECRET])
    assert nonces.is_valid(nonces.issue(now), now)
    assert not nonces.is_valid(mutate(nonces.issue(now)), now)


@pytest.mark.parametrize("secrets", [[], [b"short"]])
def test_nonce_issuer_refuses_weak_configuration(secrets: list[bytes]) -> None:
    with pytest.raises(ValueError):
        NonceIssuer(secrets)


# --- DPOP-03/13: ath ----------------------------------------------------------------------------


def test_rejects_missing_ath_with_access_token(now: int) -> None:
    error = rejected(make_proof(now), now, access_token=TOKEN)
    assert error.description == "DPoP proof ath is required with an access token"


def test_rejects_ath_of_another_token(now: int) -> None:
    proof = make_proof(now, ath=access_token_hash(TOKEN + "x"))
    error = rejected(proof, now, access_token=TOKEN)
    assert error.description == "DPoP proof ath does not match the access token"


def test_access_token_hash_matches_rfc9449_example() -> None:
    assert access_token_hash(TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_jwk_thumbprint_matches_rfc7638_example() -> None:
    jwk = {
        "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
             "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
             "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
             "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqD"
             "Kgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("jwk", [{"kty": "oct", "k": "AAAA"}, _KEYS["ES256"].as_dict(private=True)])
def test_jwk_thumbprint_refuses_non_public_keys(jwk: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        jwk_thumbprint(jwk)


# --- DPOP-12: replay ----------------------------------------------------------------------------


def test_rejects_replayed_proof(store: Any, now: int) -> None:
    proof = make_proof(now, jti="replayed")
    validate(proof, now, store=store)
    assert rejected(proof, now + 1, store=store).description == "DPoP proof replayed"


def test_rejects_same_jti_and_key_in_a_new_proof(store: Any, now: int) -> None:
    validate(make_proof(now, jti="same"), now, store=store)
    proof = make_proof(now + 1, jti="same", iat=now + 1)
    assert rejected(proof, now + 1, store=store).description == "DPoP proof replayed"


def test_accepts_same_jti_for_another_htu(store: Any, now: int) -> None:
    other = "https://as.example.com/par"
    validate(make_proof(now, jti="shared"), now, store=store)
    assert validate(make_proof(now, jti="shared", htu=other), now, store=store, url=other)


def test_accepts_same_jti_from_another_key(store: Any, now: int) -> None:
    validate(make_proof(now, "ES256", jti="shared"), now, store=store)
    assert validate(make_proof(now, "EdDSA", jti="shared"), now, store=store)


def test_rejected_proof_does_not_consume_its_jti(store: Any, now: int) -> None:
    proof = make_proof(now, ath=access_token_hash(TOKEN))
    rejected(proof, now, store=store, access_token=TOKEN + "x")
    assert validate(proof, now, store=store, access_token=TOKEN).ath == access_token_hash(TOKEN)


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.ttls: list[int] = []

    def add_if_absent(self, key: str, ttl: int) -> bool:
        self.ttls.append(ttl)
        return super().add_if_absent(key, ttl)


def test_replay_entry_outlives_the_acceptance_window(now: int) -> None:
    store = RecordingStore()
    validate(make_proof(now), now, store=store)
    assert store.ttls == [DPOP_PROOF_WINDOW + DPOP_FUTURE_SKEW]


def test_replay_entry_outlives_the_nonce_when_nonces_are_used(now: int) -> None:
    store, nonces = RecordingStore(), NonceIssuer([SECRET])
    validate(make_proof(now, nonce=nonces.issue(now)), now, store=store, nonces=nonces)
    assert store.ttls == [DPOP_NONCE_TTL + DPOP_FUTURE_SKEW]


# --- issue 18: the caller's reads ride on the replay entry's round trip -----------------------


def test_read_keys_come_back_with_the_recorded_proof(now: int) -> None:
    store = CountingStore()
    store.set("conn-epoch:u:crm", "41")
    proof = validate(make_proof(now), now, store=store, read=["conn-epoch:u:crm", "absent"])
    assert proof.read == ("41", None)
    # One call for the replay entry and both reads; no lone GET.
    assert store.calls == ["add_if_absent_and_get"]
    assert validate(make_proof(now, jti="other"), now, store=store).read == ()


def test_a_replayed_proof_with_reads_is_still_refused(now: int) -> None:
    store, proof = CountingStore(), make_proof(now)
    validate(proof, now, store=store, read=["conn-epoch:u:crm"])
    error = rejected(proof, now, store=store, read=["conn-epoch:u:crm"])
    assert error.description == "DPoP proof replayed"


def test_a_refused_proof_reads_nothing(now: int) -> None:
    store = CountingStore()
    rejected(make_proof(now, htm="GET"), now, store=store, read=["conn-epoch:u:crm"])
    assert store.calls == []


class UnavailableStore(MemoryStore):
    def add_if_absent(self, key: str, ttl: int) -> bool:
        raise StoreUnavailableError(debug="redis: ConnectionError")


def test_store_unavailable_propagates(now: int) -> None:
    with pytest.raises(StoreUnavailableError) as info:
        validate(make_proof(now), now, store=UnavailableStore())
    assert (info.value.error, info.value.status_code) == ("temporarily_unavailable", 503)


# --- issue 20: ECDSA malleability (high-S) ------------------------------------------------------

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_high_s_es256_proof_is_accepted_but_its_replay_is_not(now: int) -> None:
    """Decision: high-S is not refused (JOSE libraries do not normalise s, so about half of
    honest ES256 proofs are high-S); the other signature of a proof is still a replay,
    because the replay key is (htu, jti, jkt), not the signature."""
    proof = make_proof(now, jti="malleable")
    head, payload, signature = proof.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    other = f"{head}.{payload}.{b64(r + (P256_ORDER - s).to_bytes(32, 'big'))}"
    assert other != proof
    store = MemoryStore()
    validate(other, now, store=store)  # the twin signature verifies
    error = rejected(proof, now, store=store)
    assert "replay" in error.description.lower() or "used" in error.description.lower()


# --- the proof-key cache and the htu fast path (issue 18) --------------------------------------


def test_cached_proof_key_still_verifies_every_signature(now: int) -> None:
    """A key seen before (a cache hit) is the same key object and thumbprint, and a proof that
    names it but is signed by another key is still refused."""
    from authserver.dpop import check_public_jwk

    header = {"jwk": _KEYS["ES256"].as_dict(private=False)}
    first = validate(make_proof(now, jti="cached-1"), now)
    reordered = {"jwk": dict(reversed(list(header["jwk"].items())))}  # same key, other order
    assert check_public_jwk(header) is check_public_jwk(reordered)
    assert check_public_jwk(header).jkt == first.jkt == jwk_thumbprint(first.jwk)
    forged = make_proof(now, key=ECKey.generate_key("P-256"), header=header, jti="cached-2")
    assert rejected(forged, now).description == "DPoP proof signature is invalid"
    assert validate(make_proof(now, jti="cached-3"), now).jkt == first.jkt


def test_invalid_jwk_is_refused_every_time(now: int) -> None:
    """Import errors are never cached: the same bad key is refused on each proof."""
    jwk = {**_KEYS["ES256"].as_dict(private=False), "x": b64(b"\x00" * 32)}  # not on the curve
    for jti in ("bad-1", "bad-2"):
        proof = make_proof(now, header={"jwk": jwk}, jti=jti)
        assert rejected(proof, now).description == "DPoP proof jwk is not a valid public key"


def test_htu_sent_verbatim_and_normalised_forms_agree(now: int) -> None:
    url = "https://AS.example.com:443/a/../token"
    verbatim = validate(make_proof(now, htu=url, jti="v"), now, url=url)
    normal = validate(make_proof(now, htu=URL, jti="n"), now, url=url)
    assert verbatim.htu == normal.htu == URL
    other = make_proof(now, htu="https://as.example.com/other", jti="m")
    assert rejected(other, now, url=url).description == (
        "DPoP proof htu does not match the request URI"
    )
