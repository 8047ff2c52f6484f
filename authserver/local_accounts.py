"""Local accounts: the minimal sign-in for development and the demo.

Production signs people in at the corporate IdP (authserver.identity). A local user is a
`User` with `idp_issuer = "local"`; the password is stored as a werkzeug scrypt hash.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from authserver.models import User

LOCAL_ISSUER = "local"


def local_user_id(username: str, tenant: str = "default") -> str:
    digest = hashlib.sha256(f"{LOCAL_ISSUER}|{tenant}|{username}".encode()).hexdigest()
    return "usr_" + digest[:26]


def create_local_user(session: Session, username: str, password: str, *, now: int,
                      name: str | None = None, email: str | None = None,
                      tenant: str = "default", groups: list[str] | None = None,
                      roles: list[str] | None = None) -> User:
    user = User(
        id=local_user_id(username, tenant),
        tenant=tenant,
        idp_issuer=LOCAL_ISSUER,
        idp_subject=username,
        email=email,
        name=name or username,
        groups=list(groups or []),
        roles=list(roles or []),
        password_hash=generate_password_hash(password),
        active=True,
        tokens_valid_after=0,
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user
