"""Our refresh tokens: hashed at rest, rotated on every use, reuse revokes the family.

RFC 6749 §6, RFC 9700 §4.14.2 (rotation and reuse detection), RFC 9449 §5 (binding of
public clients' refresh tokens to a DPoP key lives on the `Grant`).

A rotation's successor is not random: it is HMAC(successor key, presented token), where the
successor key is derived from SECRET_KEY (`successor_key`). So the server can hand the *same*
successor back to a client whose token response was lost (issue 13, item 6) without ever
storing a refresh token, in clear or encrypted: the retired row keeps only the successor's hash
and the DPoP key the rotation saw (`retry_successor`). Without SECRET_KEY the successor of a
token cannot be computed, and a database dump holds neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.db import Database
from authserver.encoding import b64url_encode
from authserver.models import Grant, RefreshToken

REFRESH_TOKEN_BYTES = 32
#: A rotation may carry a `rotated_at` up to this many seconds after the `now` of a request
#: that races it: concurrent requests read the clock at their start, so the loser of the race
#: can have read it before the winner (a second boundary between them, or another host's
#: clock a little ahead). Such a retry is the same rotation, not reuse.
ROTATED_AHEAD_TOLERANCE = 5


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


#: The label the successor key is derived under (HMAC-SHA256 of SECRET_KEY); a new label is a
#: new key, never the secret itself.
SUCCESSOR_KEY_LABEL = b"authserver refresh-token successor v1"


def successor_key(secret: str) -> bytes:
    """The key rotations derive successors with, from the deployment's SECRET_KEY (which every
    instance shares, so a retry may land on any of them)."""
    return hmac.new(secret.encode(), SUCCESSOR_KEY_LABEL, hashlib.sha256).digest()


def derive_successor(key: bytes, value: str) -> str:
    """The successor of refresh token `value`: 32 bytes, base64url, like a fresh token."""
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return b64url_encode(mac)


def rotate(session: Session, row: RefreshToken, value: str, *, key: bytes, jkt: str | None,
           now: int, ttl: int) -> str | None:
    """Atomically retire `row` (whose token is `value`) and add its successor; the successor,
    or None if `row` was already retired (by a concurrent request, or long ago).

    The conditional UPDATE is the single point of decision: of any number of concurrent
    rotations of one token exactly one changes the row and adds the one new family member.
    """
    successor = derive_successor(key, value)
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == row.token_hash, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now, successor_hash=token_hash(successor), rotated_jkt=jkt)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    session.add(RefreshToken(token_hash=token_hash(successor), grant_id=row.grant_id,
                             issued_at=now, expires_at=now + ttl))
    return successor


def retry_successor(session: Session, row: RefreshToken, value: str, *, key: bytes,
                    jkt: str | None, now: int, interval: int) -> str | None:
    """The successor that the rotation of `row` issued, again, if this request is a retry of
    that rotation; None if it is reuse (the caller revokes the family).

    A retry: `interval` > 0 and at most `interval` seconds since the rotation (or a rotation
    at most ROTATED_AHEAD_TOLERANCE seconds "after" `now`: a concurrent one), the same DPoP
    key as the rotation (or again none), and the successor still unused and unexpired (a
    client that used its successor did receive it, so the old token is someone else's copy).
    The caller has already checked that the client is the grant's, authenticated or bound to
    the grant's DPoP key.
    """
    if interval <= 0:
        return None
    current = session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == row.token_hash)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if current is None or current.rotated_at is None or current.successor_hash is None:
        return None
    if not -ROTATED_AHEAD_TOLERANCE <= now - current.rotated_at <= interval:
        return None
    if (current.rotated_jkt or "") != (jkt or ""):
        return None
    successor = derive_successor(key, value)
    if not hmac.compare_digest(token_hash(successor), current.successor_hash):
        return None  # derived under another SECRET_KEY: fail closed
    issued = session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == current.successor_hash)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if issued is None or issued.rotated_at is not None or issued.expires_at <= now:
        return None
    return successor


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
