"""The agents acting for a user, and withdrawing one (a per-(user, agent) revocation epoch).

Withdrawing an agent kills, on their next use and on every instance, every assertion,
capability token and access token the agent holds for that user, and revokes the user's
standing delegations (grants) to it. The database row is the epoch: it is durable and shared.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.models import AgentRevocation, AuditEvent, Client, Grant


@dataclass(frozen=True)
class AgentSummary:
    client_id: str
    name: str
    last_seen: int | None
    withdrawn_at: int | None


def agents_for_user(session: Session, user_id: str) -> list[AgentSummary]:
    """Agents with a standing grant from the user or that acted in the user's name."""
    seen: dict[str, int | None] = {}
    for client_id, created in session.execute(
        select(Grant.client_id, Grant.created_at).where(Grant.user_id == user_id)
    ):
        seen[client_id] = max(created, seen.get(client_id) or 0)
    for agent_id, created in session.execute(
        select(AuditEvent.agent_id, AuditEvent.created_at)
        .where(AuditEvent.user_id == user_id, AuditEvent.agent_id.is_not(None))
    ):
        if agent_id is not None:
            seen[agent_id] = max(created, seen.get(agent_id) or 0)
    withdrawn = {
        r.agent_id: r.revoked_before
        for r in session.scalars(select(AgentRevocation).where(AgentRevocation.user_id == user_id))
    }
    summaries = []
    for client_id, last_seen in sorted(seen.items()):
        client = session.get(Client, client_id)
        if client is None or client.attributes.get("trusted_edge"):
            continue
        name = str(client.client_metadata.get("client_name") or client_id)
        summaries.append(AgentSummary(client_id, name, last_seen, withdrawn.get(client_id)))
    return summaries


def withdraw_agent(session: Session, user_id: str, agent_id: str, *, now: int) -> None:
    row = session.get(AgentRevocation, (user_id, agent_id))
    if row is None:
        session.add(AgentRevocation(user_id=user_id, agent_id=agent_id, revoked_before=now))
    else:
        row.revoked_before = max(row.revoked_before, now)
    session.execute(
        update(Grant).where(Grant.user_id == user_id, Grant.client_id == agent_id,
                            Grant.revoked_at.is_(None)).values(revoked_at=now)
    )
