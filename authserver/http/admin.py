"""Admin HTTP API, enabled only when `admin_token` is configured (Bearer, constant-time)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, json, request

from authserver.errors import InvalidTokenError
from authserver.http.unit_of_work import commit, end_reads
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
    end_reads()  # deprovisioning writes in transactions of its own
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


# --- resource servers (the same as `authserver resources add|list|remove`) ------------------


@bp.get("/resources")
def resources_list() -> Response:
    from authserver import resource_servers

    return _json([resource_servers.as_dict(r) for r in resource_servers.list_all(g.db)])


@bp.post("/resources")
def resources_add() -> Response:
    """JSON `{"uri", "name", "scopes": [...], "token_types": ["dpop", "bearer"],
    "introspection": false}`: 201 with the resource (and, with `introspection`, its client's
    id and secret, shown once); 400 `invalid_request` if malformed, 409 if registered."""
    from authserver import resource_servers
    from authserver.errors import InvalidRequestError

    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) - {"uri", "name", "scopes", "token_types",
                                                  "introspection"}:
        raise InvalidRequestError("The body must be a JSON object with uri, name and "
                                  "optionally scopes, token_types, introspection")
    scopes = body.get("scopes", [])
    token_types = body.get("token_types", list(resource_servers.TOKEN_TYPES))
    introspection = body.get("introspection", False)
    if not isinstance(scopes, list) or not isinstance(token_types, list) \
            or not isinstance(introspection, bool):
        raise InvalidRequestError("scopes and token_types must be arrays, introspection a "
                                  "boolean")
    services = current_app.extensions["authserver"]
    try:
        reg = resource_servers.add(
            g.db, uri=body.get("uri"), name=body.get("name"), scopes=scopes,
            token_types=token_types, introspection=introspection,
            issuer=services.settings.issuer, supported_scopes=services.settings.scopes,
            now=g.now)
    except resource_servers.DuplicateResourceError as e:
        return _json({"error": "resource_exists", "error_description": str(e)}, 409)
    except resource_servers.ResourceServerError as e:
        raise InvalidRequestError(str(e)) from e
    out = resource_servers.as_dict(reg.resource)
    if reg.client_secret:
        out["client_secret"] = reg.client_secret
    commit()  # a failed commit: 503, and no secret is shown
    return _json(out, 201)


@bp.delete("/resources")
def resources_remove() -> Response:
    """`?uri=<the resource, any spelling>`: 200 `{"removed": uri}`, 404 if not registered."""
    from authserver import resource_servers
    from authserver.errors import InvalidRequestError

    uri = request.args.get("uri")
    if not uri:
        raise InvalidRequestError("uri is required")
    try:
        row = resource_servers.remove(g.db, uri)
    except LookupError:
        abort(404)
    commit()
    return _json({"removed": row.uri})
