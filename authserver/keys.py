"""Signing keys (RFC 7517 JWKS, RFC 7638 thumbprints as `kid`), rotation with overlap.

The only module that touches private signing keys. The newest unretired key signs; every key
not yet expired verifies and is published, so tokens signed before a rotation stay verifiable
until they expire. Private JWKs are stored envelope-encrypted (authserver.kms).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver import kms as envelope
from authserver.config import ConfigError
from authserver.db import Database
from authserver.kms import KMS, EnvelopeIntegrityError, KEKError, describe
from authserver.models import KeyCheck, SigningKey

SIGNING_ALG = "ES256"
#: How long a retired key stays published: the longest-lived token we sign, plus leeway.
KEY_OVERLAP = 24 * 3600
#: How often a process re-reads which key is active (another process may have rotated).
ACTIVE_KEY_CACHE_SECONDS = 30
_AAD = b"authserver:signing-key:"


class InvalidSignatureError(Exception):
    """A JWT did not verify against our keys (bad signature, unknown kid, wrong typ or alg)."""


class KeyRing:
    def __init__(self, db: Database, kms: KMS, previous: tuple[KMS, ...] = ()) -> None:
        self._db = db
        self._kms = kms
        # Older KEKs only decrypt, during a KEK rotation (`authserver kms rotate`).
        self._keks = {k.key_id: k for k in (*previous, kms)}
        self._mutex = threading.Lock()
        self._active: tuple[float, ECKey] | None = None
        self._public: KeySet = KeySet([])

    # --- lifecycle ---------------------------------------------------------------------------

    @staticmethod
    def has_stored_keys(session: Session) -> bool:
        """Whether the database already holds signing keys (wrapped by some KEK)."""
        return session.scalars(select(SigningKey.kid).limit(1)).first() is not None

    def check_keks(self, session: Session, now: int) -> None:
        """Prove at start-up that the configured KEKs open every signing key still in use.

        Raises `KEKError` naming the KEK file: an instance with the wrong KEK would otherwise
        report ready and fail every token request.
        """
        rows = session.scalars(select(SigningKey).where(
            (SigningKey.expires_at.is_(None)) | (SigningKey.expires_at > now)))
        for row in rows:
            try:
                kek_id = json.loads(row.private_jwk_ciphertext).get("kek")
                envelope.decrypt(self._keks.get(kek_id, self._kms), row.private_jwk_ciphertext,
                                 _AAD + row.kid.encode())
            except (EnvelopeIntegrityError, ValueError, AttributeError) as e:
                known = ", ".join(describe(k) for k in self._keks.values())
                raise KEKError(
                    f"{describe(self._kms)} does not open signing key {row.kid} stored in the "
                    f"database (tried: {known}); configure the KEK this database was created "
                    "with, or list it in previous_kek_files during a KEK rotation") from e

    def ensure_key(self, session: Session, now: int) -> None:
        """Create the first signing key if there is none (first start)."""
        if session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))).first():
            return
        self._create(session, now)

    def rotate(self, session: Session, now: int, overlap: int = KEY_OVERLAP) -> str:
        """Publish a new key and retire the current ones (still published for `overlap`)."""
        for key in session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
            key.retired_at = now
            key.expires_at = now + overlap
        kid = self._create(session, now)
        with self._mutex:
            self._active = None
        return kid

    def _create(self, session: Session, now: int) -> str:
        key = ECKey.generate_key("P-256", auto_kid=True)
        kid = key.kid
        assert kid
        private = json.dumps(key.as_dict(private=True))
        session.add(
            SigningKey(
                kid=kid,
                alg=SIGNING_ALG,
                public_jwk={**key.as_dict(private=False), "use": "sig", "alg": SIGNING_ALG},
                private_jwk_ciphertext=envelope.encrypt(
                    self._kms, private.encode(), _AAD + kid.encode()
                ),
                created_at=now,
            )
        )
        session.flush()
        return kid

    # --- publishing and verifying ------------------------------------------------------------

    def jwks(self, now: int) -> dict[str, Any]:
        with self._db.session() as session:
            keys = session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
            return {
                "keys": [
                    k.public_jwk for k in keys if k.expires_at is None or k.expires_at > now
                ]
            }

    def _reload_public(self, now: int) -> KeySet:
        keyset = KeySet.import_key_set(self.jwks(now))  # type: ignore[arg-type]
        with self._mutex:
            self._public = keyset
        return keyset

    def verify(self, token: str, *, typ: str | tuple[str, ...], now: int) -> dict[str, Any]:
        """Verify signature, `alg` and JOSE `typ`; return the claims (claims are NOT validated).

        Raises `InvalidSignatureError`. An unknown `kid` triggers one reload (rotation).
        """
        typs = (typ,) if isinstance(typ, str) else typ
        for attempt in (0, 1):
            keyset = self._public if attempt == 0 else self._reload_public(now)
            try:
                decoded = jwt.decode(token, keyset, algorithms=[SIGNING_ALG])
            except (JoseError, ValueError, TypeError) as e:
                # TypeError: joserfc on a header member of the wrong type ("crit": null).
                if attempt == 0 and _is_unknown_kid(e):
                    continue
                raise InvalidSignatureError(type(e).__name__) from e
            if decoded.header.get("typ") not in typs:
                raise InvalidSignatureError("unexpected typ")
            return dict(decoded.claims)
        raise InvalidSignatureError("unknown kid")

    # --- signing -----------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], *, typ: str) -> str:
        key = self._active_key()
        return jwt.encode({"alg": SIGNING_ALG, "kid": key.kid, "typ": typ}, claims, key)

    def _active_key(self) -> ECKey:
        cached = self._active
        if cached and time.monotonic() - cached[0] < ACTIVE_KEY_CACHE_SECONDS:
            return cached[1]
        with self._db.session() as session:
            row = session.scalars(
                select(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .order_by(SigningKey.created_at.desc())
            ).first()
            if row is None:
                raise RuntimeError("no active signing key; run `authserver db upgrade`")
            kek_id = json.loads(row.private_jwk_ciphertext).get("kek")
            private = envelope.decrypt(
                self._keks.get(kek_id, self._kms), row.private_jwk_ciphertext,
                _AAD + row.kid.encode()
            )
        key = ECKey.import_key(json.loads(private))
        with self._mutex:
            self._active = (time.monotonic(), key)
        return key


#: The fixed label whose HMAC under SECRET_KEY is its check value (key_checks.value).
SECRET_KEY_CHECK_LABEL = b"authserver:secret-key-check:v1"


def secret_key_check_value(secret: str) -> str:
    """A check value that identifies `secret` without revealing it (128 bits of an HMAC)."""
    return hmac.new(secret.encode(), SECRET_KEY_CHECK_LABEL, hashlib.sha256).hexdigest()[:32]


def check_secret_key(session: Session, secret: str, now: int) -> None:
    """Store SECRET_KEY's check value on the first start; refuse to start when it differs.

    Every instance of a deployment must share SECRET_KEY: with another one, its browser
    sessions and DPoP nonces fail at every other instance (as `use_dpop_nonce` loops).
    Raises `ConfigError` (the message names the setting, never a value).
    """
    value = secret_key_check_value(secret)
    row = session.get(KeyCheck, "secret_key")
    if row is None:
        try:
            with session.begin_nested():
                session.add(KeyCheck(name="secret_key", value=value, created_at=now))
            return
        except IntegrityError:  # another instance stored it first: compare with theirs
            row = session.get(KeyCheck, "secret_key", populate_existing=True)
            if row is None:
                raise
    if not hmac.compare_digest(row.value, value):
        raise ConfigError(
            "secret_key (AUTHSERVER_SECRET_KEY) differs from the one this database was first "
            "started with: every instance of a deployment must use the same secret_key (set "
            "it explicitly; a generated one belongs to one data dir)")


def _is_unknown_kid(error: Exception) -> bool:
    return isinstance(error, InvalidKeyIdError)


def rewrap_signing_keys(session: Session, old: KMS, new: KMS) -> int:
    """Re-wrap every stored private signing key from `old` to `new` (KEK rotation)."""
    changed = 0
    for row in session.scalars(select(SigningKey)):
        if json.loads(row.private_jwk_ciphertext).get("kek") == new.key_id:
            continue
        row.private_jwk_ciphertext = envelope.rewrap(
            old, new, row.private_jwk_ciphertext, _AAD + row.kid.encode())
        changed += 1
    return changed
