"""RFC 9449 §8 and §9 server nonces for DPoP proofs: stateless, HMAC-authenticated.

https://www.rfc-editor.org/rfc/rfc9449#section-8 — framework-free and clockless (`now` is
passed in). `authserver.dpop` re-exports `NonceIssuer`, so existing imports keep working.
Rule IDs (DPOP-10, DPOP-30..33) are defined in docs/standards.md.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence

from authserver.config import DPOP_FUTURE_SKEW, DPOP_NONCE_TTL
from authserver.encoding import b64url_decode, b64url_encode

#: Nonce layout: version (1) | issued-at (8, big-endian) | random (16) | HMAC-SHA256 tag (16).
NONCE_RANDOM_BYTES = 16
NONCE_TAG_BYTES = 16
MIN_NONCE_SECRET_BYTES = 32
#: A nonce minted by another instance whose clock runs slightly ahead is still accepted.
NONCE_FUTURE_SKEW = DPOP_FUTURE_SKEW
_NONCE_VERSION = b"\x01"
_NONCE_BODY_BYTES = 1 + 8 + NONCE_RANDOM_BYTES
_NONCE_KEY_LABEL = b"authserver:dpop-nonce:v1:"


class NonceIssuer:
    """Stateless server nonces (RFC 9449 §8): valid on every instance holding the secret(s).

    A nonce is base64url(version | issued-at | 128 random bits | truncated HMAC-SHA256), so it is
    unpredictable, 1*NQCHAR, and needs no store. The first secret signs; every secret verifies,
    which lets secrets rotate without invalidating nonces already handed out. `context`
    separates issuers that share a secret (the AS and a resource server must not accept each
    other's nonces, §9).
    """

    def __init__(
        self, secrets: Sequence[bytes], ttl: int = DPOP_NONCE_TTL, *, context: bytes = b""
    ) -> None:
        if not secrets:
            raise ValueError("NonceIssuer needs at least one secret")
        if any(len(secret) < MIN_NONCE_SECRET_BYTES for secret in secrets):
            raise ValueError(f"nonce secrets must be at least {MIN_NONCE_SECRET_BYTES} bytes")
        if ttl <= 0:
            raise ValueError("nonce ttl must be positive")
        # Derived keys: the configured secret may be shared with other uses (domain separation).
        self._keys = [
            hmac.new(secret, _NONCE_KEY_LABEL + context, hashlib.sha256).digest()
            for secret in secrets
        ]
        self.ttl = ttl

    def issue(self, now: int) -> str:
        body = _NONCE_VERSION + now.to_bytes(8, "big") + _secrets.token_bytes(NONCE_RANDOM_BYTES)
        raw = body + self._tag(self._keys[0], body)
        return b64url_encode(raw)

    def is_valid(self, nonce: str, now: int) -> bool:
        return self.problem(nonce, now) is None

    def problem(self, nonce: str, now: int) -> str | None:
        """None for a nonce this issuer gave out that is still live, else what is wrong (for
        the `use_dpop_nonce` description: the client learns which nonce to drop)."""
        foreign = "DPoP proof nonce was not issued by this server"
        if not isinstance(nonce, str) or len(nonce) > 2 * (_NONCE_BODY_BYTES + NONCE_TAG_BYTES):
            return foreign
        try:
            raw = b64url_decode(nonce)  # strict: no skipped characters
        except (binascii.Error, ValueError):
            return foreign
        if len(raw) != _NONCE_BODY_BYTES + NONCE_TAG_BYTES or raw[:1] != _NONCE_VERSION:
            return foreign
        body, tag = raw[:_NONCE_BODY_BYTES], raw[_NONCE_BODY_BYTES:]
        if not any(hmac.compare_digest(tag, self._tag(key, body)) for key in self._keys):
            return foreign
        issued_at = int.from_bytes(body[1:9], "big")
        if now < issued_at - NONCE_FUTURE_SKEW:
            return foreign  # authentic but from the future: a clock problem on our side
        if now >= issued_at + self.ttl:
            return "DPoP proof nonce has expired"
        return None

    @staticmethod
    def _tag(key: bytes, body: bytes) -> bytes:
        return hmac.new(key, body, hashlib.sha256).digest()[:NONCE_TAG_BYTES]


__all__ = [
    "MIN_NONCE_SECRET_BYTES",
    "NONCE_FUTURE_SKEW",
    "NONCE_RANDOM_BYTES",
    "NONCE_TAG_BYTES",
    "NonceIssuer",
]
