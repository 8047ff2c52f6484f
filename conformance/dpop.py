"""RFC 9449 §4: DPoP proof construction for the conformance suite, including bad proofs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

# Algorithms this suite can sign with, in order of preference when a server offers several.
SIGNABLE_ALGS = ("ES256", "Ed25519", "EdDSA", "PS256", "RS256", "ES384", "ES512", "PS384", "RS384")

# Sentinel: remove this header member / claim from the proof.
DROP: Any = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ath_for(token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(ASCII access token))."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def choose_alg(supported: list[str] | None) -> str | None:
    """First alg we can sign with that the server lists, or None."""
    for alg in SIGNABLE_ALGS:
        if supported and alg in supported:
            return alg
    return None


def _generate(alg: str) -> Any:
    if alg in ("ES256", "ES384", "ES512"):
        return ECKey.generate_key({"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg])
    if alg in ("Ed25519", "EdDSA"):
        return OKPKey.generate_key("Ed25519")
    if alg[:2] in ("PS", "RS"):
        return RSAKey.generate_key(2048)
    raise ValueError(f"cannot generate a key for {alg}")


def _merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for name, value in (overrides or {}).items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


class DpopKey:
    """A fresh key pair (never reused across runs) that signs DPoP proofs."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        self.key = _generate(alg)

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    @property
    def private_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=True))

    @property
    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 JWK thumbprint, base64url (the `cnf.jkt` value)."""
        return str(self.key.thumbprint())

    def proof(
        self,
        htm: str,
        htu: str,
        *,
        ath: str | None = None,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        signer: DpopKey | None = None,
    ) -> str:
        """A DPoP proof; `header`/`claims` override or DROP members; `signer` signs instead."""
        protected = _merge({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk}, header)
        body: dict[str, Any] = {"jti": secrets.token_urlsafe(18), "htm": htm, "htu": htu,
                                "iat": int(time.time())}
        if ath is not None:
            body["ath"] = ath
        if nonce is not None:
            body["nonce"] = nonce
        body = _merge(body, claims)
        payload = json.dumps(body, separators=(",", ":")).encode()
        key = (signer or self).key
        return str(jws.serialize_compact(protected, payload, key, algorithms=[protected["alg"]]))


def unsigned_proof(public_jwk: dict[str, Any], htm: str, htu: str, nonce: str | None) -> str:
    """`alg: none` proof (must be rejected, RFC 9449 §4.3 (5))."""
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk}
    body: dict[str, Any] = {"jti": secrets.token_urlsafe(18), "htm": htm, "htu": htu,
                            "iat": int(time.time())}
    if nonce is not None:
        body["nonce"] = nonce
    parts = [json.dumps(header).encode(), json.dumps(body).encode()]
    return ".".join(b64url(p) for p in parts) + "."


def hmac_proof(htm: str, htu: str, nonce: str | None) -> str:
    """HS256 proof with a symmetric `jwk` (must be rejected, RFC 9449 §4.3 (5) and (7))."""
    secret = secrets.token_bytes(32)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64url(secret)}}
    body: dict[str, Any] = {"jti": secrets.token_urlsafe(18), "htm": htm, "htu": htu,
                            "iat": int(time.time())}
    if nonce is not None:
        body["nonce"] = nonce
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)
