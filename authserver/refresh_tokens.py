"""Our refresh tokens: hashed at rest, rotated on every use, reuse revokes the family.

RFC 6749 §6, RFC 9700 §4.14.2 (rotation and reuse detection), RFC 9449 §5 (binding of
public clients' refresh tokens to a DPoP key lives on the `Grant`).
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver.db import Database
from authserver.models import Grant, RefreshToken

REFRESH_TOKEN_BYTES = 32


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def issue(session: Session, grant: Grant, *, now: int, ttl: int) -> str:
    value = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    session.add(
        RefreshToken(token_hash=token_hash(value), grant_id=grant.id, issued_at=now,
                     expires_at=now + ttl)
    )
    return value


def find(session: Session, value: str) -> RefreshToken | None:
    return session.get(RefreshToken, token_hash(value))


def mark_rotated(session: Session, row: RefreshToken, *, now: int) -> bool:
    """Atomically mark a refresh token used. False if it was already used (reuse)."""
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == row.token_hash, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_grant(db: Database, grant_id: str, *, now: int) -> None:
    """Revoke a grant (its refresh tokens and access tokens) in its own committed transaction,
    so the revocation stands even though the request that detected the breach fails."""
    with db.session() as session:
        session.execute(
            update(Grant).where(Grant.id == grant_id, Grant.revoked_at.is_(None))
            .values(revoked_at=now)
        )


def new_grant_id() -> str:
    return "grt_" + secrets.token_urlsafe(18)
