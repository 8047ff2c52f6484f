"""Envelope encryption of downstream tokens (AES-256-GCM data keys wrapped by the KMS).

The associated data binds every ciphertext to its user, platform and token kind, so a row (or
one column) copied to another user or platform fails to decrypt, and a refresh token cannot be
presented where an access token is expected. A KEK rotation re-wraps the data keys only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver import kms as envelope
from authserver.kms import KMS, EnvelopeIntegrityError
from authserver.models.broker import Connection

log = logging.getLogger(__name__)

TOKEN_KINDS = ("access_token", "refresh_token")


def _aad(user_id: str, platform: str, kind: str) -> bytes:
    # Platform names are slugs and kinds a closed set, neither containing "|": the AAD parses
    # unambiguously from the right, whatever the user id holds.
    if kind not in TOKEN_KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    if not platform or "|" in platform:
        raise ValueError("platform names may not contain '|'")
    return f"{user_id}|{platform}|{kind}".encode()


class Vault:
    """Seal and open downstream tokens. `previous` KMSes only decrypt (during a rotation)."""

    def __init__(self, kms: KMS, previous: Sequence[KMS] = ()) -> None:
        self.kms = kms
        self._by_key_id = {k.key_id: k for k in (*previous, kms)}

    def seal(self, user_id: str, platform: str, kind: str, token: str) -> str:
        if not token:
            raise ValueError("refusing to seal an empty token")
        return envelope.encrypt(self.kms, token.encode(), _aad(user_id, platform, kind))

    def open(self, user_id: str, platform: str, kind: str, sealed: str) -> str:
        """The plaintext token; raises `EnvelopeIntegrityError` if it does not authenticate
        (tampered, swapped between users/platforms/kinds, or sealed under an unknown KEK)."""
        kek = self._kek_for(sealed)
        return envelope.decrypt(kek, sealed, _aad(user_id, platform, kind)).decode()

    def _kek_for(self, sealed: str) -> KMS:
        try:
            key_id = json.loads(sealed).get("kek")
        except (ValueError, AttributeError) as e:
            raise EnvelopeIntegrityError(debug="vault: malformed envelope") from e
        kek = self._by_key_id.get(key_id) if isinstance(key_id, str) else None
        if kek is None:
            raise EnvelopeIntegrityError(debug="vault: envelope sealed under an unknown KEK")
        return kek


def rewrap_all(session: Session, old_kms: KMS, new_kms: KMS) -> int:
    """Re-wrap every connection's data keys from `old_kms` to `new_kms`; returns rows changed.

    Resumable: envelopes already under `new_kms` are skipped. Each update is a compare-and-set
    on the ciphertexts read, so a concurrent refresh (which writes fresh envelopes) wins and
    is simply not re-wrapped here. The caller commits.
    """
    changed = 0
    rows = session.execute(
        select(Connection.id, Connection.user_id, Connection.platform,
               Connection.access_token_ciphertext, Connection.refresh_token_ciphertext)
    ).all()
    for conn_id, user_id, platform, access_ct, refresh_ct in rows:
        new_access = _rewrap_one(old_kms, new_kms, access_ct, _aad(user_id, platform,
                                                                   "access_token"))
        new_refresh = None if refresh_ct is None else _rewrap_one(
            old_kms, new_kms, refresh_ct, _aad(user_id, platform, "refresh_token"))
        if new_access == access_ct and new_refresh == refresh_ct:
            continue
        stmt = (
            update(Connection)
            .where(Connection.id == conn_id, Connection.access_token_ciphertext == access_ct)
            .values(access_token_ciphertext=new_access, refresh_token_ciphertext=new_refresh)
        )
        stmt = stmt.where(Connection.refresh_token_ciphertext.is_(None) if refresh_ct is None
                          else Connection.refresh_token_ciphertext == refresh_ct)
        changed += session.execute(stmt).rowcount  # type: ignore[attr-defined]
    log.info("vault rewrap: %d connection(s) re-wrapped to %s", changed, new_kms.key_id)
    return changed


def _rewrap_one(old_kms: KMS, new_kms: KMS, sealed: str, aad: bytes) -> str:
    try:
        key_id = json.loads(sealed).get("kek")
    except (ValueError, AttributeError) as e:
        raise EnvelopeIntegrityError(debug="vault: malformed envelope") from e
    if key_id == new_kms.key_id:
        return sealed
    return envelope.rewrap(old_kms, new_kms, sealed, aad)
