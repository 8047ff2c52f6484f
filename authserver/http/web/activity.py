"""Activity: the user's audit trail, filtered and paged, and its CSV or JSON export."""

from __future__ import annotations

from typing import Any

from flask import abort, g, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from authserver.http.web.common import (
    bp,
    current_user,
    identity,
    login_redirect,
    platform_name,
    services,
)

#: Rows per Activity page; what one export holds at most.
ACTIVITY_PAGE = 25
EXPORT_LIMIT = 10_000


def _activity_filters() -> dict[str, Any]:
    from authserver.presentation import OUTCOME_FILTERS

    args = request.args
    filters: dict[str, Any] = {}
    agent = args.get("agent", "")
    if agent and len(agent) <= 255:
        filters["agent"] = agent
    platform = args.get("platform", "")
    if platform in services().platforms:
        filters["platform"] = platform
    if args.get("outcome", "") in OUTCOME_FILTERS:
        filters["outcome"] = args["outcome"]
    return filters


def _activity_query(user_id: str, filters: dict[str, Any]) -> Any:
    from authserver.models.audit import AuditEvent
    from authserver.presentation import OUTCOME_FILTERS

    query = select(AuditEvent).where(AuditEvent.user_id == user_id)
    if "agent" in filters:
        query = query.where(AuditEvent.agent_id == filters["agent"])
    if "platform" in filters:
        query = query.where(AuditEvent.platform == filters["platform"])
    if "outcome" in filters:
        query = query.where(AuditEvent.outcome.in_(sorted(OUTCOME_FILTERS[filters["outcome"]])))
    return query


def _activity_row(e: Any) -> dict[str, Any]:
    from authserver.presentation import event_sentence, is_possible_injection, is_refusal

    agent = identity(e.agent_id) if e.agent_id else None
    platform = platform_name(e.platform)
    return {
        "event": e, "count": 1, "first_at": e.created_at,
        "sentence": event_sentence(e, agent=agent.name if agent else "An agent",
                                   platform=platform),
        "agent": agent, "platform": platform,
        "refused": is_refusal(e), "injection": is_possible_injection(e),
        "key": (e.event, e.outcome, e.reason, e.agent_id, e.platform, e.intent_hash),
    }


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Repeated identical gateway calls, one after another, become one row ("20 times")."""
    out: list[dict[str, Any]] = []
    for row in rows:
        last = out[-1] if out else None
        if last is not None and row["event"].event == "gateway_call" and \
                last["key"] == row["key"]:
            last["count"] += 1
            last["first_at"] = row["event"].created_at
        else:
            out.append(row)
    return out


@bp.get("/activity")
def activity() -> Any:
    from authserver.models.audit import AuditEvent

    user = current_user()
    if user is None:
        return login_redirect()
    filters = _activity_filters()
    query = _activity_query(user.id, filters)
    before = request.args.get("before", "")
    if before.isdigit() and len(before) <= 18:
        query = query.where(AuditEvent.seq < int(before))
    events = list(g.db.scalars(query.order_by(AuditEvent.seq.desc())
                               .limit(ACTIVITY_PAGE + 1)).all())
    older = events[ACTIVITY_PAGE - 1].seq if len(events) > ACTIVITY_PAGE else None
    rows = _grouped([_activity_row(e) for e in events[:ACTIVITY_PAGE]])
    agent_ids = sorted({a for a in g.db.scalars(
        select(AuditEvent.agent_id).where(AuditEvent.user_id == user.id,
                                          AuditEvent.agent_id.is_not(None)).distinct())
        if a is not None})
    return render_template(
        "activity.html", rows=rows, filters=filters, paged=bool(before),
        older_url=url_for("web.activity", before=older, **filters) if older else None,
        newest_url=url_for("web.activity", **filters),
        agents=[identity(a) for a in agent_ids],
        platforms=sorted((n, p.display_name) for n, p in services().platforms.items()),
        export_csv=url_for("web.activity_export", format="csv", **filters),
        export_json=url_for("web.activity_export", format="json", **filters))


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.get("/activity/export")
def activity_export() -> Any:
    import csv
    import io
    import json

    from authserver.models.audit import AuditEvent
    from authserver.presentation import iso_utc

    user = current_user()
    if user is None:
        return login_redirect()
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "json"):
        abort(400, "format must be csv or json")
    events = g.db.scalars(_activity_query(user.id, _activity_filters())
                          .order_by(AuditEvent.seq.desc()).limit(EXPORT_LIMIT)).all()
    records = []
    for e in events:
        row = _activity_row(e)
        intent = e.intent if isinstance(e.intent, dict) else {}
        records.append({
            "seq": e.seq, "time": iso_utc(e.created_at), "event": e.event,
            "outcome": e.outcome, "reason": e.reason, "summary": row["sentence"],
            "possible_prompt_injection": row["injection"],
            "agent_id": e.agent_id, "agent_name": row["agent"].name if row["agent"] else None,
            "platform": e.platform, "action": intent.get("action"),
            "resource": intent.get("resource"), "count": intent.get("count"),
            "correlation_id": e.correlation_id,
        })
    if fmt == "json":
        body = json.dumps(records, ensure_ascii=False, indent=1)
        mimetype = "application/json"
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["seq"])
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_cell(v) for k, v in record.items()})
        body, mimetype = out.getvalue(), "text/csv"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="activity.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response
