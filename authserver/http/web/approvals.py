"""Step-up approvals: the user's pending and decided approvals, and the decision."""

from __future__ import annotations

from typing import Any

from flask import abort, g, redirect, render_template, request, session, url_for

from authserver.http.unit_of_work import commit
from authserver.http.web.common import (
    audit_user_event,
    bp,
    check_csrf,
    current_user,
    identity,
    login_redirect,
    platform_name,
)
from authserver.models import User


def _card(item: Any) -> Any:
    from authserver.approvals import approval_card

    return approval_card(item, agent=identity(item.agent_id),
                         platform_name=platform_name(item.platform), now=g.now)


@bp.get("/approvals")
def approvals() -> Any:
    from authserver.approvals import decided_for_user, pending_for_user

    user = current_user()
    if user is None:
        return login_redirect()
    decided = None
    decided_id = session.pop("decided", None)
    if isinstance(decided_id, str):
        from authserver.models.approvals import Approval

        item = g.db.get(Approval, decided_id)
        if item is not None and item.user_id == user.id:
            decided = _card(item)
    return render_template(
        "approvals.html", decided=decided,
        cards=[_card(a) for a in pending_for_user(g.db, user.id, g.now)],
        history=[_card(a) for a in decided_for_user(g.db, user.id, g.now)])


def _own_approval(approval_id: str, user: User) -> Any:
    from authserver.models.approvals import Approval

    item = g.db.get(Approval, approval_id) if len(approval_id) <= 64 else None
    if item is None or item.user_id != user.id:  # only the bound user sees it
        abort(404)
    return item


@bp.get("/approvals/<approval_id>")
def approval(approval_id: str) -> Any:
    user = current_user()
    if user is None:
        return login_redirect()
    item = _own_approval(approval_id, user)
    return render_template("approvals.html", cards=[_card(item)], single=True)


@bp.post("/approvals/<approval_id>")
def decide(approval_id: str) -> Any:
    from authserver.approvals import decide_approval
    from authserver.errors import OAuthError
    from authserver.presentation import phrase_matches

    user = current_user()
    if user is None:
        return login_redirect()
    check_csrf()
    decision = request.form.get("decision")
    if decision not in ("approve", "decline"):
        abort(400, "decision must be approve or decline")
    if decision == "approve":
        # Destructive and bulk actions: Approve works only with the record's name (or the
        # number of records) typed in, a deliberate second step no stray click can make.
        card = _card(_own_approval(approval_id, user))
        if card.confirm_phrase is not None and card.state == "pending" and \
                not phrase_matches(card.confirm_phrase, request.form.get("confirm")):
            return render_template(
                "approvals.html", cards=[card], single=True,
                confirm_error=f"Type {card.confirm_phrase} exactly to approve; nothing was "
                              "approved."), 400
    try:
        item = decide_approval(g.db, approval_id, user_id=user.id,
                               approve=decision == "approve", now=g.now)
    except OAuthError as e:
        return render_template("error.html", error=e.error, description=e.description,
                               back=url_for("web.approvals"), back_label="Back to Approvals"
                               ), e.status_code
    audit_user_event("approval", "approved" if decision == "approve" else "declined",
                     user.id, item.platform, {"approval_id": item.id, "agent": item.agent_id},
                     agent_id=item.agent_id, intent=item.intent, approval_id=item.id)
    commit()
    session["decided"] = item.id
    return redirect(url_for("web.approvals"), 303)
