"""Envelope encryption: AES-256-GCM data keys wrapped by a key-encryption key (KEK).

Only this module sees a KEK. `LocalKMS` keeps it in a file (0600, created on the first start of
an empty database only); a cloud KMS implements the same two methods. Associated data binds a
ciphertext to its owner (e.g. user and platform), so rows cannot be swapped between owners.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authserver.config import ConfigError
from authserver.encoding import b64url_decode, b64url_encode
from authserver.errors import ServerError, TemporarilyUnavailableError

ENVELOPE_VERSION = 1
_NONCE_BYTES = 12


class KMSUnavailableError(TemporarilyUnavailableError):
    """The KMS could not wrap or unwrap: fail closed (503)."""


class KEKError(ConfigError):
    """The KEK file is missing, unreadable, malformed, or does not open the stored keys: the
    instance must not start. The message names the file, never its content."""


class EnvelopeIntegrityError(ServerError):
    """A ciphertext did not authenticate (tampered, swapped or wrong key)."""


class KMS(Protocol):
    key_id: str

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalKMS:
    """A KEK in a local file: 32 random bytes, base64, mode 0600.

    With `create`, a missing file is created (atomically: a process starting at the same time
    reads the whole key or none). Raises `KEKError` naming the file if it is missing (and not
    to be created), unreadable, not base64 or not 32 bytes.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if create and not self.path.exists():
            _create_kek_file(self.path)
        try:
            text = self.path.read_text()
        except FileNotFoundError as e:
            raise KEKError(f"key-encryption key file {self.path} does not exist") from e
        except (OSError, UnicodeError) as e:
            raise KEKError(f"key-encryption key file {self.path} cannot be read "
                           f"({type(e).__name__})") from e
        try:
            kek = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise KEKError(f"key-encryption key file {self.path} is not valid base64") from e
        if len(kek) != 32:
            raise KEKError(f"key-encryption key file {self.path} must hold 32 base64-encoded "
                           f"bytes, not {len(kek)}")
        self._aead = AESGCM(kek)
        # A key id that names the KEK without revealing it (for re-wrapping on rotation).
        self.key_id = "local:" + b64url_encode(
            AESGCM(kek).encrypt(b"\0" * _NONCE_BYTES, b"key-id", None)[:8])

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)
        except InvalidTag as e:
            raise EnvelopeIntegrityError(debug="data key did not unwrap") from e


def _create_kek_file(path: Path) -> None:
    """Write a new KEK to a temporary file, then link it into place (fails if it exists)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
                fh.flush()
                os.fsync(fh.fileno())
            # If another process created it first, use theirs.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise KEKError(f"key-encryption key file {path} cannot be created "
                       f"({type(e).__name__})") from e


def describe(kms: KMS) -> str:
    """How an error message names a KMS: the file of a local KEK, else its key id."""
    path = getattr(kms, "path", None)
    return f"key-encryption key file {path}" if path is not None else f"KMS key {kms.key_id}"


def encrypt(kms: KMS, plaintext: bytes, aad: bytes) -> str:
    """Encrypt under a fresh data key; returns a self-describing JSON envelope."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    return json.dumps(
        {
            "v": ENVELOPE_VERSION,
            "kek": kms.key_id,
            "wk": b64url_encode(kms.wrap(data_key, aad)),
            "n": b64url_encode(nonce),
            "ct": b64url_encode(ciphertext),
        },
        separators=(",", ":"),
    )


def decrypt(kms: KMS, envelope: str, aad: bytes) -> bytes:
    """Decrypt an envelope; raises `EnvelopeIntegrityError` if anything fails to authenticate."""
    try:
        doc = json.loads(envelope)
        if doc.get("v") != ENVELOPE_VERSION:
            raise ValueError("unknown envelope version")
        data_key = kms.unwrap(b64url_decode(doc["wk"]), aad)
        return AESGCM(data_key).decrypt(b64url_decode(doc["n"]), b64url_decode(doc["ct"]), aad)
    except EnvelopeIntegrityError:
        raise
    except (InvalidTag, ValueError, KeyError, TypeError) as e:
        raise EnvelopeIntegrityError(debug=f"envelope: {type(e).__name__}") from e


def rewrap(old: KMS, new: KMS, envelope: str, aad: bytes) -> str:
    """Re-wrap the data key under `new` (KEK rotation) without touching the ciphertext."""
    doc = json.loads(envelope)
    data_key = old.unwrap(b64url_decode(doc["wk"]), aad)
    doc["wk"] = b64url_encode(new.wrap(data_key, aad))
    doc["kek"] = new.key_id
    return json.dumps(doc, separators=(",", ":"))

