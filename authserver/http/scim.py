"""SCIM 2.0 endpoints at /scim/v2 (RFC 7644 §3, §4; docs/standards.md SCIM-01..07), for IdPs
with `scim_token_sha256`.

The rules are in authserver/scim.py (Users) and authserver/scim_groups.py (Groups); this
layer authenticates the IdP, parses JSON, answers
`application/scim+json`, renders every error as a SCIM error body (RFC 7644 §3.12), and runs
deprovisioning through authserver.deprovisioning. Every write commits explicitly
(`unit_of_work.commit`) before the resource is read back and answered.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from authserver import scim, scim_discovery, scim_groups
from authserver.audit import AuditRecord
from authserver.http.unit_of_work import commit
from authserver.identity.federation import IdPConfig
from authserver.observability import correlation_id

bp = Blueprint("scim", __name__, url_prefix="/scim/v2")


def _services() -> Any:
    return current_app.extensions["authserver"]


def _base_url() -> str:
    return _services().settings.issuer + "/scim/v2"


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype=scim.MEDIA_TYPE)
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@bp.errorhandler(scim.ScimError)
def _scim_error(error: scim.ScimError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="scim"'} if error.status == 401 else None
    return _answer(error.body(), error.status, headers)


@bp.errorhandler(404)
@bp.errorhandler(405)
def _http_error(error: Any) -> Response:
    return _answer(scim.ScimError(error.code, error.name).body(), error.code)


@bp.before_request
def authenticate() -> None:
    federation = _services().federation
    configs = federation.configs() if federation is not None else []
    config = scim.authenticate(configs, request.headers.get("Authorization"))
    if config is None:
        raise scim.ScimError(401, "A valid SCIM bearer token is required")
    g.scim_idp = config


def _idp() -> IdPConfig:
    return g.scim_idp


def _body() -> Any:
    try:
        return json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise scim.ScimError(400, "The body is not JSON", "invalidSyntax") from e


def _audit(action: str, user_id: str, scim_id: str) -> None:
    _services().audit.append(g.db, AuditRecord(
        event="scim_user", outcome="allowed", correlation_id=correlation_id(),
        user_id=user_id, detail={"action": action, "idp": _idp().name, "scim_id": scim_id}),
        now=g.now)


def _apply_active(user_id: str, active: bool, was_active: bool) -> None:
    """SCIM-04: deactivate exactly as `authserver users deprovision` does; reactivate."""
    if active == was_active:
        return
    if active:
        from authserver.identity.users import reactivate_user

        reactivate_user(g.db, user_id)
        _audit("enable", user_id, "")
        return
    from authserver.deprovisioning import deprovision

    # The request's own unit first: deprovisioning writes the same rows in units of its own.
    commit()
    deprovision(_services(), user_id, now=g.now, correlation_id=correlation_id())


def _resource(scim_id: str) -> dict[str, Any]:
    g.db.expire_all()
    row, user = scim.get_user(g.db, _idp(), scim_id)
    return scim.to_resource(row, user, _base_url())


@bp.get("/ServiceProviderConfig")
def service_provider_config() -> Response:
    return _answer(scim_discovery.service_provider_config(_base_url()))


@bp.get("/ResourceTypes")
def resource_types() -> Response:
    types = scim_discovery.resource_types(_base_url())
    return _answer({"schemas": [scim.LIST_SCHEMA], "totalResults": len(types),
                    "Resources": types, "startIndex": 1, "itemsPerPage": len(types)})


@bp.get("/ResourceTypes/User")
def resource_type_user() -> Response:
    return _answer(scim_discovery.resource_types(_base_url())[0])


@bp.get("/ResourceTypes/Group")
def resource_type_group() -> Response:
    return _answer(scim_discovery.resource_types(_base_url())[1])


@bp.get("/Schemas")
def schemas() -> Response:
    found = scim_discovery.schemas(_base_url())
    return _answer({"schemas": [scim.LIST_SCHEMA], "totalResults": len(found),
                    "Resources": found, "startIndex": 1, "itemsPerPage": len(found)})


@bp.get(f"/Schemas/{scim.USER_SCHEMA}")
def schema_user() -> Response:
    return _answer(scim_discovery.schemas(_base_url())[0])


@bp.get(f"/Schemas/{scim_groups.GROUP_SCHEMA}")
def schema_group() -> Response:
    return _answer(scim_discovery.schemas(_base_url())[1])


@bp.post("/Users")
def create_user() -> Response:
    data = scim.parse_user(_body())
    row, user = scim.create_user(g.db, _idp(), data, now=g.now)
    scim_id, user_id = row.id, user.id
    _audit("create", user_id, scim_id)
    if not data.active:
        _apply_active(user_id, False, True)
    commit()
    resource = _resource(scim_id)
    return _answer(resource, 201, {"Location": resource["meta"]["location"]})


@bp.get("/Users")
def list_users() -> Response:
    start = request.args.get("startIndex", 1, type=int) or 1
    count = request.args.get("count", scim.MAX_PAGE, type=int)
    total, rows = scim.list_users(g.db, _idp(), filter_=request.args.get("filter"),
                                  start_index=start, count=scim.MAX_PAGE if count is None
                                  else count)
    resources = [_resource(r.id) for r in rows]
    return _answer({"schemas": [scim.LIST_SCHEMA], "totalResults": total,
                    "startIndex": max(start, 1), "itemsPerPage": len(resources),
                    "Resources": resources})


@bp.get("/Users/<scim_id>")
def get_user(scim_id: str) -> Response:
    return _answer(_resource(scim_id))


@bp.put("/Users/<scim_id>")
def replace_user(scim_id: str) -> Response:
    data = scim.parse_user(_body())
    row, user = scim.get_user(g.db, _idp(), scim_id)
    was_active, user_id = bool(user.active), user.id
    scim.replace_user(g.db, _idp(), row, user, data, now=g.now)
    _audit("replace", user_id, scim_id)
    _apply_active(user_id, data.active, was_active)
    commit()
    return _answer(_resource(scim_id))


@bp.patch("/Users/<scim_id>")
def patch_user(scim_id: str) -> Response:
    body = _body()
    row, user = scim.get_user(g.db, _idp(), scim_id)
    was_active, user_id = bool(user.active), user.id
    active = scim.patch_user(g.db, _idp(), row, user, body, now=g.now)
    _audit("patch", user_id, scim_id)
    if active is not None:
        _apply_active(user_id, active, was_active)
    commit()
    return _answer(_resource(scim_id))


@bp.delete("/Users/<scim_id>")
def delete_user(scim_id: str) -> Response:
    row, user = scim.get_user(g.db, _idp(), scim_id)
    was_active, user_id = bool(user.active), user.id
    g.db.delete(row)
    _audit("delete", user_id, scim_id)
    g.db.flush()
    # Our user stays (deprovisioned: the audit trail names them); the SCIM resource is gone.
    _apply_active(user_id, False, was_active)
    commit()
    return Response(status=204)


# --- Groups (SCIM-06/07) ---------------------------------------------------------------------


def _audit_group(action: str, group_id: str) -> None:
    _services().audit.append(g.db, AuditRecord(
        event="scim_group", outcome="allowed", correlation_id=correlation_id(),
        detail={"action": action, "idp": _idp().name, "scim_id": group_id}), now=g.now)


def _group(group_id: str) -> dict[str, Any]:
    g.db.flush()
    return scim_groups.to_resource(g.db, scim_groups.get_group(g.db, _idp(), group_id),
                                   _base_url())


@bp.post("/Groups")
def create_group() -> Response:
    group = scim_groups.create_group(g.db, _idp(), scim_groups.parse_group(_body()), now=g.now)
    group_id = group.id
    _audit_group("create", group_id)
    commit()
    resource = _group(group_id)
    return _answer(resource, 201, {"Location": resource["meta"]["location"]})


@bp.get("/Groups")
def list_groups() -> Response:
    start = request.args.get("startIndex", 1, type=int) or 1
    count = request.args.get("count", scim.MAX_PAGE, type=int)
    total, rows = scim_groups.list_groups(
        g.db, _idp(), filter_=request.args.get("filter"), start_index=start,
        count=scim.MAX_PAGE if count is None else count)
    resources = [scim_groups.to_resource(g.db, r, _base_url()) for r in rows]
    return _answer({"schemas": [scim.LIST_SCHEMA], "totalResults": total,
                    "startIndex": max(start, 1), "itemsPerPage": len(resources),
                    "Resources": resources})


@bp.get("/Groups/<group_id>")
def get_group(group_id: str) -> Response:
    return _answer(_group(group_id))


@bp.put("/Groups/<group_id>")
def replace_group(group_id: str) -> Response:
    data = scim_groups.parse_group(_body())
    scim_groups.replace_group(g.db, _idp(), scim_groups.get_group(g.db, _idp(), group_id),
                              data, now=g.now)
    _audit_group("replace", group_id)
    commit()
    return _answer(_group(group_id))


@bp.patch("/Groups/<group_id>")
def patch_group(group_id: str) -> Response:
    body = _body()
    scim_groups.patch_group(g.db, _idp(), scim_groups.get_group(g.db, _idp(), group_id), body,
                            now=g.now)
    _audit_group("patch", group_id)
    commit()
    return _answer(_group(group_id))


@bp.delete("/Groups/<group_id>")
def delete_group(group_id: str) -> Response:
    scim_groups.delete_group(g.db, scim_groups.get_group(g.db, _idp(), group_id))
    _audit_group("delete", group_id)
    commit()
    return Response(status=204)
