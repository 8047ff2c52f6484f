"""A user leaves: every token and assertion dies on its next use, on every instance, and their
downstream grants are revoked at each platform (SSF/CAEP-style, driven by an admin)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from authserver.audit import AuditRecord
from authserver.broker.records import user_connections
from authserver.broker.revoke import revoke_all_for_user
from authserver.identity.users import deprovision_user
from authserver.models import Grant
from authserver.services import Services
from authserver.sessions import end_all_sessions


def deprovision(services: Services, user_id: str, *, now: int,
                correlation_id: str | None) -> dict[str, Any]:
    """Raises LookupError for an unknown user.

    Returns the HTTP contract's body: `revoked_connections` names the platforms whose
    connection was deleted (and whose grant we asked the platform to revoke);
    `downstream_grants_revoked` is how many.
    """
    s = services
    with s.db.session() as session:
        # The epoch (DB and shared store) first: from here on every token issued so far fails.
        deprovision_user(session, s.store, user_id, now=now)
        end_all_sessions(s.store, user_id)  # signed out at once, on every instance
        session.execute(update(Grant).where(Grant.user_id == user_id,
                                            Grant.revoked_at.is_(None)).values(revoked_at=now))
        platforms = sorted(c.platform for c in user_connections(session, user_id))
    revoked = revoke_all_for_user(s.db, s.store, s.vault, s.platforms, user_id, now)
    with s.db.session() as session:
        s.audit.append(session, AuditRecord(
            event="deprovision", outcome="revoked", correlation_id=correlation_id,
            user_id=user_id, detail={"downstream_grants_revoked": revoked,
                                     "revoked_connections": platforms}), now=now)
    return {"user_id": user_id, "deprovisioned_at": now, "revoked_connections": platforms,
            "downstream_grants_revoked": revoked}
