"""Agents acting for me: what each may do, when it was last used, and withdrawing it."""

from __future__ import annotations

from typing import Any

from flask import abort, g, redirect, render_template, request, url_for
from sqlalchemy import select

from authserver.http.unit_of_work import commit
from authserver.http.web.common import (
    audit_user_event,
    bp,
    check_csrf,
    current_user,
    identity,
    login_redirect,
    notice,
    platform_name,
    pop_notice,
)

#: Events an agent starts (what "last used" means on the Agents page).
AGENT_EVENTS = ("token_exchange", "gateway_call", "edge_mint")


def _agent_rows(user_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import func

    from authserver.agents import agents_for_user
    from authserver.errors import InvalidAuthorizationDetailsError
    from authserver.intent import describe_mandate
    from authserver.models import Client, Grant
    from authserver.models.audit import AuditEvent
    from authserver.presentation import action_infinitive, scope_in_words

    rows = []
    for a in agents_for_user(g.db, user_id):
        client = g.db.get(Client, a.client_id)
        attributes = dict(client.attributes) if client is not None else {}
        grants = list(g.db.scalars(select(Grant).where(
            Grant.user_id == user_id, Grant.client_id == a.client_id,
            Grant.revoked_at.is_(None)).order_by(Grant.created_at)))
        first_seen, last_used = g.db.execute(
            select(func.min(AuditEvent.created_at), func.max(AuditEvent.created_at)).where(
                AuditEvent.user_id == user_id, AuditEvent.agent_id == a.client_id,
                AuditEvent.event.in_(AGENT_EVENTS))).one()
        mandate: list[str] = []
        for grant in grants:
            if grant.authorization_details:
                try:
                    mandate.extend(describe_mandate(grant.authorization_details))
                except InvalidAuthorizationDetailsError:  # stored from a verified request
                    mandate.append("(a permission this page cannot describe)")
        withdrawn = a.withdrawn_at is not None and (last_used is None or
                                                    last_used <= a.withdrawn_at)
        rows.append({
            "summary": a, "identity": identity(a.client_id),
            "platforms": [platform_name(p) for p in attributes.get("allowed_platforms") or []],
            "actions": [action_infinitive(x) for x in attributes.get("allowed_actions") or []],
            "scopes": sorted({scope_in_words(sc) for gr in grants for sc in gr.scope.split()}),
            "mandate": mandate,
            "granted_at": grants[0].created_at if grants else first_seen,
            "last_used": last_used, "withdrawn": withdrawn,
        })
    return rows


@bp.get("/agents")
def agents() -> Any:
    user = current_user()
    if user is None:
        return login_redirect()
    return render_template("agents.html", rows=_agent_rows(user.id), notice=pop_notice())


@bp.route("/agents/<agent_id>/withdraw", methods=["GET", "POST"])
def withdraw(agent_id: str) -> Any:
    """GET asks "Withdraw …?"; only that page's form (confirmed=yes) withdraws."""
    from authserver.agents import withdraw_agent

    user = current_user()
    if user is None:
        return login_redirect()
    if len(agent_id) > 255:
        abort(404)
    row = next((r for r in _agent_rows(user.id) if r["summary"].client_id == agent_id), None)
    if row is None:
        abort(404)
    name = row["identity"].name
    if request.method == "GET":
        return render_template("confirm.html", title=f"Withdraw {name}?",
                               body=[f"{name} stops at once: every token it holds for you "
                                     "fails on its next use, and its standing access is "
                                     "revoked.",
                                     "It can act for you again only after you sign in to it "
                                     "and allow it anew."],
                               connected=not row["withdrawn"],
                               action=url_for("web.withdraw", agent_id=agent_id),
                               button="Withdraw", back=url_for("web.agents"))
    check_csrf()
    if request.form.get("confirmed") != "yes":
        return redirect(url_for("web.withdraw", agent_id=agent_id), 303)
    if row["withdrawn"]:
        notice(f"{name} was already withdrawn.")  # no second audit record
        return redirect(url_for("web.agents"), 303)
    withdraw_agent(g.db, user.id, agent_id, now=g.now)
    audit_user_event("agent_withdrawn", "revoked", user.id, None, {"agent": agent_id},
                     agent_id=agent_id)
    commit()
    notice(f"You withdrew {name}.")
    return redirect(url_for("web.agents"), 303)
