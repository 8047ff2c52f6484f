"""Admin HTTP API, enabled only when `admin_token` is configured (Bearer, constant-time)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, json, request

from authserver.errors import InvalidTokenError
from authserver.observability import correlation_id

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin() -> None:
    expected = current_app.extensions["authserver"].settings.admin_token
    if not expected:
        abort(404)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise InvalidTokenError(scheme="Bearer", challenge_only=True)
    if not hmac.compare_digest(value.encode(), expected.encode()):
        raise InvalidTokenError("Invalid admin token", scheme="Bearer")


def _json(body: Any, status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/users/<user_ref>/deprovision")
def deprovision(user_ref: str) -> Response:
    """`user_ref`: our id, the IdP's `sub` or the e-mail address (409 if it fits several)."""
    from authserver.deprovisioning import deprovision as run
    from authserver.identity.users import AmbiguousUserError, resolve_user

    try:
        user_id = resolve_user(g.db, user_ref)
    except AmbiguousUserError as e:
        return _json({"error": "ambiguous_user", "candidates": e.candidates}, 409)
    except LookupError:
        abort(404)
    g.db.rollback()  # deprovisioning writes in transactions of its own
    try:
        result = run(current_app.extensions["authserver"], user_id, now=g.now,
                     correlation_id=correlation_id())
    except LookupError:
        abort(404)
    return _json(result)


@bp.get("/audit")
def audit_tail() -> Response:
    from authserver.audit import event_as_dict

    services = current_app.extensions["authserver"]
    limit = min(max(request.args.get("limit", 20, type=int) or 20, 1), 1000)
    return _json([event_as_dict(e) for e in services.audit.tail(g.db, limit)])


@bp.get("/audit/verify")
def audit_verify() -> Response:
    result = current_app.extensions["authserver"].audit.verify(g.db)
    return _json({"ok": result.ok, "count": result.count,
                  "first_bad_seq": result.first_bad_seq, "reason": result.reason})
