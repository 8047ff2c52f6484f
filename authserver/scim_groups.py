"""SCIM 2.0 Groups, the subset IdPs push (RFC 7643 §4.2, RFC 7644 §3; docs/standards.md
SCIM-06/07).

An IdP provisions groups of its own SCIM users: create, get, list with `displayName eq` /
`externalId eq`, PUT, PATCH (`members` add/remove, `displayName`, `externalId`; the forms Okta
and Entra ID send) and DELETE. `displayName` is unique per IdP, compared case-insensitively;
members are that IdP's SCIM users only (another's ids are `invalidValue`).

Membership feeds policy as the sign-in `groups` claim does: each member's `users.groups` (the
list Cedar sees as `principal.groups` at the next exchange) gains the group's display name
when they join, loses it when they leave or the group is deleted, and follows a rename. The
IdP speaks for the same attribute in its tokens (`claim_map` groups: sign-in, edge mint and
ID-JAG set it from the claim, empty without one), so the latest word of either wins. No
Flask here; every function takes the session and `now`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from authserver.identity.federation import IdPConfig
from authserver.models import ScimGroup, ScimGroupMember, ScimUser, User
from authserver.scim import MAX_ATTRIBUTE, MAX_OPERATIONS, MAX_PAGE, PATCH_SCHEMA, ScimError
from authserver.scim import _iso as iso

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
MAX_MEMBERS = 1000
_FILTER = re.compile(r'^\s*(displayName|externalId)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)
#: `members[value eq "<id>"]`, how Okta names the member a remove takes out.
_MEMBER_PATH = re.compile(r'^members\[value eq "([^"\\]{1,64})"\]$', re.I)


@dataclass(frozen=True)
class GroupInput:
    display_name: str
    external_id: str | None
    members: tuple[str, ...] | None  # None: not given


def _string(value: Any, name: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ATTRIBUTE:
        raise ScimError(400, f"{name} must be a non-empty string of at most {MAX_ATTRIBUTE} "
                        "characters", "invalidValue")
    return value


def _member_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS or not all(
            isinstance(m, dict) and isinstance(m.get("value"), str) for m in value):
        raise ScimError(400, "members must be a list of {\"value\": <user id>}",
                        "invalidValue")
    return tuple(dict.fromkeys(m["value"] for m in value))


def parse_group(body: Any) -> GroupInput:
    """POST and PUT bodies (RFC 7643 §4.2)."""
    if not isinstance(body, dict) or GROUP_SCHEMA not in (body.get("schemas") or []):
        raise ScimError(400, f"The body must be a {GROUP_SCHEMA} resource", "invalidSyntax")
    name = _string(body.get("displayName"), "displayName", required=True)
    external = _string(body.get("externalId"), "externalId", required=False)
    members = _member_ids(body["members"]) if "members" in body else None
    return GroupInput(str(name), external, members)


def to_resource(session: Session, group: ScimGroup, base_url: str) -> dict[str, Any]:
    location = f"{base_url}/Groups/{group.id}"
    members = session.execute(
        select(ScimUser.id, ScimUser.user_name).join(
            ScimGroupMember, ScimGroupMember.scim_user_id == ScimUser.id)
        .where(ScimGroupMember.group_id == group.id).order_by(ScimUser.user_name)).all()
    resource: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA], "id": group.id, "displayName": group.display_name,
        "members": [{"value": sid, "$ref": f"{base_url}/Users/{sid}", "display": name}
                    for sid, name in members],
        "meta": {"resourceType": "Group", "created": iso(group.created_at),
                 "lastModified": iso(group.updated_at), "location": location}}
    if group.external_id is not None:
        resource["externalId"] = group.external_id
    return resource


def create_group(session: Session, config: IdPConfig, data: GroupInput, *, now: int
                 ) -> ScimGroup:
    """SCIM-06: a new group; 409 uniqueness for a displayName the IdP already has."""
    _unique_name(session, config, data.display_name, None)
    group = ScimGroup(id=secrets.token_hex(16), idp=config.name,
                      display_name=data.display_name,
                      display_name_key=data.display_name.casefold(),
                      external_id=data.external_id, created_at=now, updated_at=now)
    session.add(group)
    session.flush()
    _add_members(session, config, group, data.members or ())
    return group


def get_group(session: Session, config: IdPConfig, group_id: str) -> ScimGroup:
    """404 for an id this IdP did not provision."""
    group = session.get(ScimGroup, group_id) if len(group_id) <= 64 else None
    if group is None or group.idp != config.name:
        raise ScimError(404, "No such group")
    return group


def list_groups(session: Session, config: IdPConfig, *, filter_: str | None,
                start_index: int, count: int) -> tuple[int, list[ScimGroup]]:
    """RFC 7644 §3.4.2: this IdP's groups, optionally `displayName eq` / `externalId eq`."""
    query = select(ScimGroup).where(ScimGroup.idp == config.name)
    if filter_ is not None:
        match = _FILTER.match(filter_)
        if match is None:
            raise ScimError(400, 'Only displayName eq "..." and externalId eq "..." are '
                            "supported", "invalidFilter")
        try:
            value = json.loads(f'"{match.group(2)}"')
        except ValueError as e:
            raise ScimError(400, "The filter value is not a valid string",
                            "invalidFilter") from e
        if match.group(1).lower() == "displayname":
            query = query.where(ScimGroup.display_name_key == value.casefold())
        else:
            query = query.where(ScimGroup.external_id == value)
    rows = list(session.scalars(query.order_by(ScimGroup.created_at, ScimGroup.id)))
    start = max(start_index, 1) - 1
    return len(rows), rows[start:start + max(0, min(count, MAX_PAGE))]


def replace_group(session: Session, config: IdPConfig, group: ScimGroup, data: GroupInput,
                  *, now: int) -> None:
    """PUT (RFC 7644 §3.5.1): name, externalId and the whole member list."""
    _rename(session, config, group, data.display_name)
    group.external_id, group.updated_at = data.external_id, now
    wanted = set(data.members or ())
    current = set(_members(session, group))
    _remove_members(session, group, current - wanted)
    _add_members(session, config, group, [m for m in data.members or () if m not in current])


def patch_group(session: Session, config: IdPConfig, group: ScimGroup, body: Any, *,
                now: int) -> None:
    """PATCH (RFC 7644 §3.5.2): add/remove/replace `members`, replace `displayName` and
    `externalId` (with a path, or a value object without one). Anything else: 400."""
    if not isinstance(body, dict) or PATCH_SCHEMA not in (body.get("schemas") or []):
        raise ScimError(400, f"The body must be a {PATCH_SCHEMA} message", "invalidSyntax")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not 0 < len(operations) <= MAX_OPERATIONS:
        raise ScimError(400, f"Operations must be a list of 1 to {MAX_OPERATIONS}",
                        "invalidSyntax")
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise ScimError(400, "Each operation needs an op", "invalidSyntax")
        kind, path, value = op["op"].lower(), op.get("path"), op.get("value")
        member = _MEMBER_PATH.match(path) if isinstance(path, str) else None
        if kind == "remove" and member is not None:
            _remove_members(session, group, {member.group(1)})
        elif isinstance(path, str) and path.lower() == "members" and kind in (
                "add", "remove", "replace"):
            ids = _member_ids(value) if kind != "remove" or value is not None else None
            current = set(_members(session, group))
            if kind == "add":
                _add_members(session, config, group, [m for m in ids or () if m not in current])
            elif kind == "remove":
                _remove_members(session, group, current if ids is None else set(ids))
            else:
                _remove_members(session, group, current - set(ids or ()))
                _add_members(session, config, group,
                             [m for m in ids or () if m not in current])
        elif kind in ("replace", "add") and path is None and isinstance(value, dict):
            for name, item in value.items():
                _set(session, config, group, name, item)
        elif kind in ("replace", "add") and isinstance(path, str):
            _set(session, config, group, path, value)
        else:
            raise ScimError(400, f"Unsupported operation {kind} {path!r:.64}", "invalidPath")
    group.updated_at = now
    session.flush()


def delete_group(session: Session, group: ScimGroup) -> None:
    """DELETE: the members lose the group's name; the group is gone."""
    _remove_members(session, group, set(_members(session, group)))
    session.delete(group)
    session.flush()


# --- internals ---------------------------------------------------------------------------------


def _set(session: Session, config: IdPConfig, group: ScimGroup, name: str, value: Any) -> None:
    if name.lower() == "displayname":
        _rename(session, config, group, str(_string(value, "displayName", required=True)))
    elif name.lower() == "externalid":
        group.external_id = _string(value, "externalId", required=False)
    else:
        raise ScimError(400, f"Unsupported path {name!r:.64}", "invalidPath")


def _unique_name(session: Session, config: IdPConfig, name: str, group_id: str | None) -> None:
    other = session.scalars(select(ScimGroup).where(
        ScimGroup.idp == config.name, ScimGroup.display_name_key == name.casefold())).first()
    if other is not None and other.id != group_id:
        raise ScimError(409, "A group with this displayName already exists", "uniqueness")


def _rename(session: Session, config: IdPConfig, group: ScimGroup, name: str) -> None:
    if name == group.display_name:
        return
    _unique_name(session, config, name, group.id)
    old = group.display_name
    for user in _member_users(session, _members(session, group)):
        user.groups = [*_without(user.groups, old), name]
    group.display_name, group.display_name_key = name, name.casefold()
    session.flush()


def _members(session: Session, group: ScimGroup) -> list[str]:
    return list(session.scalars(select(ScimGroupMember.scim_user_id).where(
        ScimGroupMember.group_id == group.id)))


def _member_users(session: Session, scim_ids: Iterable[str]) -> list[User]:
    ids = list(scim_ids)
    if not ids:
        return []
    return list(session.scalars(select(User).join(ScimUser, ScimUser.user_id == User.id)
                                .where(ScimUser.id.in_(ids))))


def _add_members(session: Session, config: IdPConfig, group: ScimGroup,
                 scim_ids: Iterable[str]) -> None:
    ids = list(dict.fromkeys(scim_ids))
    if not ids:
        return
    known = set(session.scalars(select(ScimUser.id).where(
        ScimUser.idp == config.name, ScimUser.id.in_(ids))))
    if len(known) != len(ids):
        raise ScimError(400, "A member is not a user this IdP provisioned", "invalidValue")
    if len(_members(session, group)) + len(ids) > MAX_MEMBERS:
        raise ScimError(400, f"A group has at most {MAX_MEMBERS} members", "invalidValue")
    for scim_id in ids:
        session.add(ScimGroupMember(group_id=group.id, scim_user_id=scim_id))
    for user in _member_users(session, ids):
        if group.display_name not in (user.groups or []):
            user.groups = [*(user.groups or []), group.display_name]
    session.flush()


def _remove_members(session: Session, group: ScimGroup, scim_ids: set[str]) -> None:
    if not scim_ids:
        return
    session.execute(delete(ScimGroupMember).where(
        ScimGroupMember.group_id == group.id, ScimGroupMember.scim_user_id.in_(scim_ids)))
    for user in _member_users(session, scim_ids):
        user.groups = _without(user.groups, group.display_name)
    session.flush()


def _without(groups: list[str] | None, name: str) -> list[str]:
    return [g for g in groups or [] if g != name]
