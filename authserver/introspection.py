"""RFC 7662 introspection and RFC 7009 revocation, for our access and refresh tokens."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from authserver import refresh_tokens
from authserver.clients import ClientRecord
from authserver.keys import KeyRing
from authserver.models import Grant
from authserver.tokens import (
    TokenNotLiveError,
    check_token_live,
    revoke_access_token,
    verify_access_token,
)
from authserver.urls import normalize_resource

INACTIVE: dict[str, Any] = {"active": False}
_AT_MEMBERS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "cnf",
               "act", "authorization_details", "auth_time")


def may_see(caller: ClientRecord, claims: dict[str, Any]) -> bool:
    """INT-05: the token's own client, or a resource server in the token's audience."""
    if caller.client_id == claims.get("client_id"):
        return True
    aud = claims.get("aud")
    audiences = {aud} if isinstance(aud, str) else set(aud or [])
    served = {normalize_resource(r) for r in caller.attributes.get("resources") or []
              if isinstance(r, str)}
    served.discard(None)
    return any(isinstance(a, str) and normalize_resource(a) in served for a in audiences)


def introspect(session: Session, keyring: KeyRing, issuer: str, caller: ClientRecord, token: str,
               *, now: int) -> dict[str, Any]:
    if token.count(".") == 2:
        try:
            claims = verify_access_token(keyring, issuer, token, now=now, leeway=0)
            check_token_live(session, claims)
        except TokenNotLiveError:
            return INACTIVE
        if not may_see(caller, claims):
            return INACTIVE
        body = {"active": True, **{k: claims[k] for k in _AT_MEMBERS if k in claims}}
        # RFC 9449 §6.2: a bound token introspects with token_type DPoP and its cnf.
        body["token_type"] = "DPoP" if "cnf" in claims else "Bearer"
        return body
    row = refresh_tokens.find(session, token)
    if row is None or row.rotated_at is not None or row.expires_at <= now:
        return INACTIVE
    grant = session.get(Grant, row.grant_id)
    if grant is None or grant.revoked_at is not None or grant.client_id != caller.client_id:
        return INACTIVE
    body = {"active": True, "client_id": grant.client_id, "scope": grant.scope,
            "exp": row.expires_at, "iat": row.issued_at, "token_type": "refresh_token"}
    if grant.user_id:
        body["sub"] = grant.user_id
    return body


def revoke(session: Session, keyring: KeyRing, issuer: str, caller: ClientRecord, token: str,
           *, now: int) -> None:
    """Revoke if the token is ours and belongs to `caller`; otherwise do nothing (REV-02/04)."""
    if token.count(".") == 2:
        try:
            claims = verify_access_token(keyring, issuer, token, now=now)
        except TokenNotLiveError:
            return
        if claims.get("client_id") == caller.client_id:
            revoke_access_token(session, claims)
        return
    row = refresh_tokens.find(session, token)
    if row is None:
        return
    grant = session.get(Grant, row.grant_id)
    if grant is not None and grant.client_id == caller.client_id and grant.revoked_at is None:
        # REV-05: revoking a refresh token revokes its family and the family's access tokens.
        grant.revoked_at = now
