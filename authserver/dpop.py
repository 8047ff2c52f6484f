"""RFC 9449 (DPoP) §4.3 proof validation, §8/§9 nonces and §11.1 replay detection.

https://www.rfc-editor.org/rfc/rfc9449#section-4.3 — framework-free: no Flask, no clock (every
time-dependent function takes `now`), shared state only through `authserver.store.Store`.
The nonce issuer (`authserver.dpop_nonces`) and the `htu` normal form (`authserver.dpop_htu`)
live in their own modules and are re-exported here.
Rule IDs (DPOP-xx) are defined in docs/standards.md.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from joserfc import jwk as _jwk
from joserfc import jws as _jws
from joserfc.errors import JoseError
from joserfc.jwk import Key, RSAKey

from authserver.config import DPOP_FUTURE_SKEW, DPOP_PROOF_WINDOW
from authserver.dpop_htu import normalize_htu
from authserver.dpop_nonces import NONCE_FUTURE_SKEW, NonceIssuer
from authserver.encoding import b64url_decode, sha256_b64url
from authserver.errors import InvalidDpopProofError, UseDpopNonceError
from authserver.store import Store

#: Accepted proof algorithms; AS metadata `dpop_signing_alg_values_supported` is this tuple
#: (DPOP-05, DPOP-28). All asymmetric: a MAC key would have to be shared with us.
DPOP_SIGNING_ALGS: tuple[str, ...] = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
PROOF_TYP = "dpop+jwt"
#: Largest accepted `DPoP` header value. An RSA-4096 proof with `ath` and `nonce` is ~2.1 kB.
MAX_PROOF_BYTES = 4096
#: DPOP-12: bound `jti` so a client cannot make us hash or store arbitrary amounts of data.
MAX_JTI_LENGTH = 128
#: RSA moduli outside this range are refused: too weak below, too costly to verify above. A
#: huge public exponent would also make each verification costly (65537 has 17 bits).
MIN_RSA_KEY_BITS = 2048
MAX_RSA_KEY_BITS = 4096
MAX_RSA_E_BITS = 32
#: Every member that only a private (or symmetric) JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
ASYMMETRIC_KEY_TYPES = frozenset({"EC", "RSA", "OKP"})
#: Replay entries live under this prefix of the shared store.
REPLAY_KEY_PREFIX = "dpop:jti:"
#: Recent proof keys by canonical `jwk` JSON: a client signs many proofs with one key, and an
#: import plus RFC 7638 thumbprint costs ~165 µs. Bounded: a flood of fresh keys only evicts.
PROOF_KEY_CACHE_SIZE = 1024

# RFC 7515 §7.1: three base64url segments. Also the token68 syntax RFC 9449 §4.1 requires.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class _ProofRegistry(_jws.JWSRegistry):
    """joserfc's default 512-byte header cap would refuse RSA-2048 `jwk` headers."""

    max_header_length = MAX_PROOF_BYTES


_REGISTRY = _ProofRegistry()


@dataclass(frozen=True)
class DPoPProof:
    """A proof that passed every check. `jkt` is the RFC 7638 thumbprint of `jwk`."""

    jkt: str
    jti: str
    htm: str
    htu: str
    iat: int
    nonce: str | None
    ath: str | None
    jwk: dict[str, Any]
    #: The store values `validate_proof(read=…)` read with the replay entry, in its order.
    read: tuple[str | None, ...] = ()


class ProofKey(NamedTuple):
    """A proof's imported public `jwk` and its RFC 7638 thumbprint."""

    key: Key
    jkt: str


@dataclass(frozen=True)
class _Compact:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


# --- RFC 7638 thumbprints, `ath`, `htu` ------------------------------------------------------


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a public JWK. Raises ValueError if invalid."""
    return import_public_key(jwk).thumbprint()


def import_public_key(jwk: Mapping[str, Any]) -> Key:
    """Import a public JWK with joserfc. Raises ValueError for private, symmetric or bad keys."""
    if not isinstance(jwk, Mapping):
        raise ValueError("jwk is not a JSON object")
    if jwk.get("kty") not in ASYMMETRIC_KEY_TYPES:
        raise ValueError("jwk kty is not an asymmetric key type")
    if PRIVATE_JWK_MEMBERS.intersection(jwk):
        raise ValueError("jwk has private members")
    try:
        key = _jwk.import_key(dict(jwk))
        # joserfc imports lazily: touching the key validates it (e.g. the EC point is on the curve).
        key.public_key  # noqa: B018
    except (JoseError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"jwk does not import: {type(e).__name__}") from e
    if key.is_private:
        raise ValueError("jwk is a private key")
    return key


@functools.lru_cache(maxsize=PROOF_KEY_CACHE_SIZE)
def _import_proof_key(canonical_jwk: str) -> ProofKey:
    """The key for one canonical `jwk` text. The import depends only on the members, so a hit is
    as strict as an import (errors are never cached; each signature is still verified)."""
    key = import_public_key(json.loads(canonical_jwk))
    return ProofKey(key, key.thumbprint())


def _canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url (no padding) of SHA-256 over the ASCII access token."""
    return sha256_b64url(token.encode("ascii"))


@functools.lru_cache(maxsize=256)
def _normalize_own_url(url: str) -> str:
    """normalize_htu of the server's own URLs (token endpoint, gateway), each computed once."""
    return normalize_htu(url)


# --- §4.3 checks, in the order validate_proof runs them ---------------------------------------


def check_single_header(header_values: Sequence[str]) -> str:
    """DPOP-01: exactly one `DPoP` header. Zero is the caller's decision, but still refused."""
    if len(header_values) == 0:
        raise InvalidDpopProofError("DPoP proof required")
    if len(header_values) > 1:
        raise InvalidDpopProofError("Multiple DPoP headers")
    return header_values[0]


def check_proof_size(value: str) -> None:
    if len(value) > MAX_PROOF_BYTES:
        raise InvalidDpopProofError("DPoP proof is too large")


def parse_compact(value: str) -> _Compact:
    """DPOP-02: one JWS in compact serialization whose header and payload are JSON objects."""
    if not _COMPACT_JWS.fullmatch(value):
        raise InvalidDpopProofError("DPoP proof is not a compact JWS")
    try:
        obj = _jws.extract_compact(value.encode("ascii"), registry=_REGISTRY)
        claims = json.loads(obj.payload)
        signature = b64url_decode(obj.segments["signature"])
    except (JoseError, ValueError, TypeError) as e:
        raise InvalidDpopProofError("DPoP proof is not a well-formed JWT", debug=repr(e)) from e
    if not isinstance(obj.protected, dict) or not isinstance(claims, dict):
        raise InvalidDpopProofError("DPoP proof is not a well-formed JWT")
    if "crit" in obj.protected:
        # RFC 7515 §4.1.11: we understand no extension, so any `crit` makes the JWS invalid.
        raise InvalidDpopProofError("DPoP proof has unsupported critical headers")
    signing_input = obj.segments["header"] + b"." + obj.segments["payload"]
    return _Compact(obj.protected, claims, signing_input, signature)


def check_typ(header: Mapping[str, Any]) -> None:
    """DPOP-04: RFC 9449 §4.3 (4) `typ` is exactly `dpop+jwt`."""
    if header.get("typ") != PROOF_TYP:
        raise InvalidDpopProofError("DPoP proof typ must be dpop+jwt")


def check_alg(header: Mapping[str, Any], algs: Sequence[str]) -> str:
    """DPOP-05: an asymmetric algorithm on our allowlist (never `none`, never HS*)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algs or alg not in DPOP_SIGNING_ALGS:
        raise InvalidDpopProofError("DPoP proof alg is not supported")
    return alg


def check_public_jwk(header: Mapping[str, Any]) -> ProofKey:
    """DPOP-06: `jwk` is present and is a public asymmetric key (no private members, no oct).

    Returns the imported key with its thumbprint, from a bounded cache of recent keys."""
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProofError("DPoP proof has no jwk header")
    if jwk.get("kty") == "oct" or "k" in jwk:
        raise InvalidDpopProofError("DPoP proof jwk must not be a symmetric key")
    if PRIVATE_JWK_MEMBERS.intersection(jwk):
        raise InvalidDpopProofError("DPoP proof jwk must not contain private key members")
    try:
        return _import_proof_key(_canonical_json(jwk))
    except ValueError as e:
        raise InvalidDpopProofError("DPoP proof jwk is not a valid public key",
                                    debug=str(e)) from e


def check_key_fits_alg(key: Key, alg: str) -> None:
    """DPOP-05/07: the key type and curve match `alg`; RSA moduli are of sane size."""
    try:
        _jws.JWSRegistry.algorithms[alg].check_key(key)
    except (JoseError, ValueError) as e:
        raise InvalidDpopProofError("DPoP proof jwk does not match alg", debug=repr(e)) from e
    if isinstance(key, RSAKey):
        bits = key.public_key.key_size
        exponent_bits = key.public_key.public_numbers().e.bit_length()
        if not MIN_RSA_KEY_BITS <= bits <= MAX_RSA_KEY_BITS or exponent_bits > MAX_RSA_E_BITS:
            raise InvalidDpopProofError("DPoP proof RSA key is not accepted",
                                        debug=f"n: {bits} bits, e: {exponent_bits} bits")


def verify_signature(compact: _Compact, alg: str, key: Key) -> None:
    """DPOP-07: the signature verifies with the key in the proof's own `jwk` header.

    High-S ECDSA signatures ((r, n - s) for a valid (r, s)) are accepted on purpose: JOSE
    libraries do not normalise s (about half of requests-oauth2client's ES256 proofs are
    high-S), so refusing them would refuse honest clients. Malleability gains nothing here:
    the replay check keys on (htu, jti, jkt), never on the signature bytes.
    """
    # The algorithm model is called directly (not jws.validate_compact): the allowlist is
    # already enforced above, and joserfc would otherwise warn on every EdDSA proof.
    try:
        ok = _jws.JWSRegistry.algorithms[alg].verify(compact.signing_input, compact.signature, key)
    except (JoseError, ValueError, TypeError) as e:
        raise InvalidDpopProofError("DPoP proof signature is invalid", debug=repr(e)) from e
    if not ok:
        raise InvalidDpopProofError("DPoP proof signature is invalid")


def check_claims(claims: Mapping[str, Any]) -> None:
    """DPOP-03: `jti`, `htm`, `htu` (strings) and `iat` (a number) are present and well-typed."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidDpopProofError("DPoP proof jti is missing or not a string")
    if len(jti) > MAX_JTI_LENGTH:
        raise InvalidDpopProofError("DPoP proof jti is too long")
    for name in ("htm", "htu"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise InvalidDpopProofError(f"DPoP proof {name} is missing or not a string")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise InvalidDpopProofError("DPoP proof iat is missing or not a number")
    for name in ("nonce", "ath"):
        if name in claims and not isinstance(claims[name], str):
            raise InvalidDpopProofError(f"DPoP proof {name} is not a string")


def check_htm(htm: str, method: str) -> None:
    """DPOP-08: `htm` equals the request method; methods are case-sensitive (RFC 9110 §9.1)."""
    if htm != method:
        raise InvalidDpopProofError("DPoP proof htm does not match the request method")


def check_htu(htu: str, url: str) -> str:
    """DPOP-09: `htu` equals the external request URI after normalization; returns it."""
    expected = _normalize_own_url(url)  # our own URL: a failure here is a bug, not a 400
    if htu == url:
        return expected  # sent verbatim (the usual case): the same normal form, computed once
    try:
        presented = normalize_htu(htu)
    except ValueError as e:
        raise InvalidDpopProofError("DPoP proof htu is not a valid URI", debug=str(e)) from e
    if presented != expected:
        raise InvalidDpopProofError("DPoP proof htu does not match the request URI")
    return presented


def check_iat(iat: float, now: int, window: int, future_skew: int) -> None:
    """DPOP-11: issued within `window` seconds, and at most `future_skew` seconds ahead."""
    if iat > now + future_skew:
        raise InvalidDpopProofError("DPoP proof iat is in the future")
    if iat < now - window:
        raise InvalidDpopProofError("DPoP proof has expired")


def check_nonce(
    nonce: str | None, nonces: NonceIssuer | None, nonce_required: bool, now: int
) -> None:
    """DPOP-10/30/33: a required nonce must be present and currently valid.

    Raises UseDpopNonceError carrying a fresh nonce. A nonce sent where none is required is
    still checked when we can (a stale one gets a fresh one back); with no issuer it is ignored.
    """
    if nonces is None:
        return
    if nonce is None:
        if nonce_required:
            # §11.3: refusing nonce-less proofs is what stops a downgrade once nonces are on.
            raise UseDpopNonceError(nonces.issue(now))
        return
    problem = nonces.problem(nonce, now)
    if problem is not None:
        raise UseDpopNonceError(nonces.issue(now), problem)


def check_ath(ath: str | None, access_token: str | None) -> None:
    """DPOP-03/13: with an access token, `ath` is present and equals its hash."""
    if access_token is None:
        return
    if ath is None:
        raise InvalidDpopProofError("DPoP proof ath is required with an access token")
    if not hmac.compare_digest(ath.encode(), access_token_hash(access_token).encode()):
        raise InvalidDpopProofError("DPoP proof ath does not match the access token")


def replay_key(htu: str, jti: str, jkt: str) -> str:
    """DPOP-12: the store key for one (htu, jti, key) triple; hashed, so its size is fixed."""
    material = json.dumps([htu, jti, jkt], separators=(",", ":")).encode()
    return REPLAY_KEY_PREFIX + hashlib.sha256(material).hexdigest()


def check_not_replayed(store: Store, key: str, ttl: int, read: Sequence[str] = ()
                       ) -> list[str | None]:
    """DPOP-12: first use records the proof; a second use is refused.

    Runs last, so a proof that fails any other check never occupies the cache. A store error
    raises StoreUnavailableError (503): an unanswered lookup is never read as "not seen".
    The keys of `read` are read in the same round trip (`Store.add_if_absent_and_get`); their
    values are returned.
    """
    if read:
        added, values = store.add_if_absent_and_get(key, ttl, read)
    else:
        added, values = store.add_if_absent(key, ttl), []
    if not added:
        raise InvalidDpopProofError("DPoP proof replayed")
    return values


# --- the pipeline ------------------------------------------------------------------------------


def validate_proof(
    header_values: Sequence[str],
    *,
    method: str,
    url: str,
    now: int,
    store: Store,
    nonces: NonceIssuer | None = None,
    nonce_required: bool = False,
    access_token: str | None = None,
    window: int = DPOP_PROOF_WINDOW,
    future_skew: int = DPOP_FUTURE_SKEW,
    algs: Sequence[str] = DPOP_SIGNING_ALGS,
    read: Sequence[str] = (),
) -> DPoPProof:
    """Validate the `DPoP` header values of one request (RFC 9449 §4.3) and record the proof.

    `url` is the external request URI (built from the configured issuer, not from Host).
    `algs` may narrow DPOP_SIGNING_ALGS, never widen it. `read`: store keys the caller needs
    next, read in the replay entry's round trip (`DPoPProof.read`); nothing is read for a
    proof that fails a check. Returns the proof; raises InvalidDpopProofError,
    UseDpopNonceError (with a fresh `DPoP-Nonce`) or StoreUnavailableError.
    """
    if nonce_required and nonces is None:
        raise ValueError("nonce_required needs a NonceIssuer")
    value = check_single_header(header_values)
    check_proof_size(value)
    compact = parse_compact(value)
    check_typ(compact.header)
    alg = check_alg(compact.header, algs)
    proof_key = check_public_jwk(compact.header)
    check_key_fits_alg(proof_key.key, alg)
    verify_signature(compact, alg, proof_key.key)
    claims = compact.claims
    check_claims(claims)
    check_htm(claims["htm"], method)
    htu = check_htu(claims["htu"], url)
    check_iat(claims["iat"], now, window, future_skew)
    nonce: str | None = claims.get("nonce")
    check_nonce(nonce, nonces, nonce_required, now)
    ath: str | None = claims.get("ath")
    check_ath(ath, access_token)
    jkt = proof_key.jkt
    # §11.1: the entry must outlive every moment at which this proof could still be accepted.
    ttl = window + future_skew
    if nonces is not None and nonce is not None:
        ttl = max(ttl, nonces.ttl + NONCE_FUTURE_SKEW)
    values = check_not_replayed(store, replay_key(htu, claims["jti"], jkt), ttl, read)
    return DPoPProof(
        jkt=jkt,
        jti=claims["jti"],
        htm=claims["htm"],
        htu=htu,
        iat=int(claims["iat"]),
        nonce=nonce,
        ath=ath,
        jwk=dict(compact.header["jwk"]),
        read=tuple(values),
    )
