"""SCIM 2.0 provisioning, the subset IdPs push (RFC 7643 core User, RFC 7644 protocol).

docs/standards.md SCIM-01..05. An IdP authenticates with its own bearer token, configured as
`[idps.x] scim_token_sha256` (only the hash; compared in constant time against every IdP's),
and sees only the users it provisioned. Its SCIM users are our users: `iss` = the IdP's
issuer and `sub` = the attribute `scim_subject` names (externalId by default), hashed into our
id exactly as sign-in does, so a provisioned user who later signs in is the same person, and a
user who signed in first is linked, not duplicated.

`active=false` and DELETE deprovision through authserver.deprovisioning (the CLI's and the
admin API's path: epoch in the database and the shared store, sessions ended, downstream
grants revoked at each platform); `active=true` re-enables sign-in, and nothing issued before
comes back. No Flask here; every function takes the session and `now`. Groups are
authserver/scim_groups.py, the discovery documents authserver/scim_discovery.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.identity.federation import IdPConfig
from authserver.identity.users import MAX_EMAIL, MAX_NAME, user_id_for
from authserver.models import ScimUser, User

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
MEDIA_TYPE = "application/scim+json"
#: Largest page a list returns (RFC 7644 §3.4.2.4 lets the service provider cap `count`).
MAX_PAGE = 200
MAX_OPERATIONS = 32
MAX_ATTRIBUTE = 255

#: RFC 7644 §3.4.2.2, the only filters served: `userName eq "…"` or `externalId eq "…"`
#: (attribute names and the operator case-insensitive, a quoted JSON string value).
_FILTER = re.compile(r'^\s*(userName|externalId)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)
#: The email paths IdPs send in PATCH (Entra ID: `emails[type eq "work"].value`).
_EMAIL_PATH = re.compile(r'^emails(\[(type eq "work"|primary eq true)\])?(\.value)?$', re.I)


class ScimError(Exception):
    """A SCIM error response (RFC 7644 §3.12): `status`, optional `scimType`, `detail`."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status),
                                "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


# --- authentication ----------------------------------------------------------------------------


def authenticate(configs: Sequence[IdPConfig], authorization: str | None) -> IdPConfig | None:
    """The IdP whose SCIM token this `Authorization: Bearer` header carries, or None.

    SCIM-01: every configured hash is compared (constant time, no early exit), so timing
    tells nothing about which IdP, or whether any, matched."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    presented = hashlib.sha256(token.strip().encode("utf-8")).hexdigest().encode()
    found: IdPConfig | None = None
    for config in configs:
        expected = (config.scim_token_sha256 or "").encode()
        if expected and hmac.compare_digest(presented, expected) and found is None:
            found = config
    return found


# --- the User resource -------------------------------------------------------------------------


@dataclass
class UserInput:
    """What a POST or PUT body says (RFC 7643 §4.1), checked."""

    user_name: str
    external_id: str | None
    display_name: str | None
    formatted_name: str | None
    email: str | None
    active: bool


def parse_user(body: Any) -> UserInput:
    if not isinstance(body, dict):
        raise ScimError(400, "The body must be a JSON object", "invalidSyntax")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or USER_SCHEMA not in schemas:
        raise ScimError(400, f"schemas must include {USER_SCHEMA}", "invalidSyntax")
    name = body.get("name")
    if name is not None and not isinstance(name, dict):
        raise ScimError(400, "name must be an object", "invalidValue")
    return UserInput(
        user_name=_required_str(body.get("userName"), "userName"),
        external_id=_optional_str(body.get("externalId"), "externalId", MAX_ATTRIBUTE),
        display_name=_optional_str(body.get("displayName"), "displayName", MAX_NAME),
        formatted_name=_optional_str((name or {}).get("formatted"), "name.formatted",
                                     MAX_NAME),
        email=_primary_email(body.get("emails")),
        active=_boolean(body.get("active", True), "active"),
    )


def to_resource(row: ScimUser, user: User, base_url: str) -> dict[str, Any]:
    """RFC 7643 §4.1 representation (with `meta`, §3.1)."""
    resource: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": row.id,
        "userName": row.user_name,
        "active": bool(user.active),
        "meta": {"resourceType": "User", "created": _iso(row.created_at),
                 "lastModified": _iso(row.updated_at),
                 "location": f"{base_url}/Users/{row.id}"},
    }
    if row.external_id is not None:
        resource["externalId"] = row.external_id
    if user.name:
        resource["name"] = {"formatted": user.name}
    if row.display_name:
        resource["displayName"] = row.display_name
    if user.email:
        resource["emails"] = [{"value": user.email, "type": "work", "primary": True}]
    return resource


def subject_of(config: IdPConfig, data: UserInput) -> str:
    subject = data.external_id if config.scim_subject == "externalId" else data.user_name
    if not subject:
        raise ScimError(400, f"{config.scim_subject} is required (it is the user's sub at "
                        "the IdP)", "invalidValue")
    return subject


def create_user(session: Session, config: IdPConfig, data: UserInput, *, now: int
                ) -> tuple[ScimUser, User]:
    """SCIM-02: a new SCIM user, linked to our user for (iss, sub), which is created if it
    does not exist yet. 409 uniqueness if the IdP already provisioned that userName or
    person. The caller deprovisions if `data.active` is false."""
    subject = subject_of(config, data)
    claims = {"iss": config.issuer, "sub": subject}
    user_id = user_id_for(config, claims)
    if _by_user_name(session, config, data.user_name) is not None or session.scalars(
            select(ScimUser).where(ScimUser.idp == config.name,
                                   ScimUser.user_id == user_id)).first() is not None:
        raise ScimError(409, "A user with this userName or identity already exists",
                        "uniqueness")
    user = session.get(User, user_id)
    if user is None:
        user = User(id=user_id, idp_issuer=config.issuer, idp_subject=subject, active=True,
                    tokens_valid_after=0, created_at=now, tenant=config.default_tenant,
                    groups=[], roles=[])
        session.add(user)
    elif user.idp_issuer != config.issuer or user.idp_subject != subject:
        raise ScimError(409, "User id collision", "uniqueness")
    row = ScimUser(id=secrets.token_hex(16), idp=config.name, user_id=user_id,
                   user_name=data.user_name, user_name_key=data.user_name.casefold(),
                   external_id=data.external_id, display_name=data.display_name,
                   created_at=now, updated_at=now)
    session.add(row)
    _apply_profile(user, data)
    session.flush()
    return row, user


def get_user(session: Session, config: IdPConfig, scim_id: str) -> tuple[ScimUser, User]:
    """404 for an id this IdP did not provision (another IdP's users do not exist for it)."""
    row = session.get(ScimUser, scim_id) if len(scim_id) <= 64 else None
    if row is None or row.idp != config.name:
        raise ScimError(404, "No such user")
    user = session.get(User, row.user_id)
    if user is None:
        raise ScimError(404, "No such user")
    return row, user


def list_users(session: Session, config: IdPConfig, *, filter_: str | None,
               start_index: int, count: int) -> tuple[int, list[ScimUser]]:
    """SCIM-03: RFC 7644 §3.4.2: this IdP's users, optionally `userName eq` / `externalId
    eq` (400 invalidFilter for anything else); 1-based `start_index`."""
    query = select(ScimUser).where(ScimUser.idp == config.name)
    if filter_ is not None:
        match = _FILTER.match(filter_)
        if match is None:
            raise ScimError(400, 'Only userName eq "..." and externalId eq "..." are supported',
                            "invalidFilter")
        import json

        try:
            value = json.loads(f'"{match.group(2)}"')
        except ValueError as e:
            raise ScimError(400, "The filter value is not a valid string",
                            "invalidFilter") from e
        if match.group(1).lower() == "username":
            query = query.where(ScimUser.user_name_key == value.casefold())
        else:
            query = query.where(ScimUser.external_id == value)  # caseExact (RFC 7643 §3.1)
    rows = list(session.scalars(query.order_by(ScimUser.created_at, ScimUser.id)))
    start = max(start_index, 1) - 1
    return len(rows), rows[start:start + max(0, min(count, MAX_PAGE))]


def replace_user(session: Session, config: IdPConfig, row: ScimUser, user: User,
                 data: UserInput, *, now: int) -> None:
    """PUT (RFC 7644 §3.5.1). The attribute that is the user's `sub` cannot change (a new
    person is a new user): 400 mutability."""
    current = row.external_id if config.scim_subject == "externalId" else row.user_name
    if subject_of(config, data) != current:
        raise ScimError(400, f"{config.scim_subject} cannot change", "mutability")
    _set_user_name(session, config, row, data.user_name)
    row.external_id, row.display_name = data.external_id, data.display_name
    row.updated_at = now
    _apply_profile(user, data)
    session.flush()


def patch_user(session: Session, config: IdPConfig, row: ScimUser, user: User, body: Any,
               *, now: int) -> bool | None:
    """PATCH (RFC 7644 §3.5.2): add/replace of active, userName, displayName, name.formatted
    and the work email; remove of displayName and name.formatted. Returns the new `active`
    if an operation set it, else None (the caller acts on it)."""
    if not isinstance(body, dict) or PATCH_SCHEMA not in (body.get("schemas") or []):
        raise ScimError(400, f"schemas must include {PATCH_SCHEMA}", "invalidSyntax")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not operations or len(operations) > MAX_OPERATIONS:
        raise ScimError(400, "Operations must be a non-empty array", "invalidSyntax")
    active: bool | None = None
    for operation in operations:
        if not isinstance(operation, dict):
            raise ScimError(400, "Each operation must be an object", "invalidSyntax")
        op = str(operation.get("op", "")).lower()
        path = operation.get("path")
        if path is not None and not isinstance(path, str):
            raise ScimError(400, "path must be a string", "invalidPath")
        if op == "remove":
            if path in ("displayName", "name.formatted"):
                _set(session, config, row, user, path, None)
                continue
            raise ScimError(400, "This attribute cannot be removed", "invalidPath")
        if op not in ("add", "replace"):
            raise ScimError(400, "op must be add, replace or remove", "invalidSyntax")
        value = operation.get("value")
        if path is None:
            if not isinstance(value, dict) or not value:
                raise ScimError(400, "Without a path the value must be an object",
                                "invalidValue")
            changes = _flatten(value)
        else:
            changes = [(path, value)]
        for attribute, new in changes:
            result = _set(session, config, row, user, attribute, new)
            if result is not None:
                active = result
    row.updated_at = now
    session.flush()
    return active


# --- helpers -------------------------------------------------------------------------------------


def _flatten(value: Mapping[str, Any]) -> list[tuple[str, Any]]:
    changes: list[tuple[str, Any]] = []
    for key, new in value.items():
        if key == "name" and isinstance(new, dict):
            changes.extend((f"name.{k}", v) for k, v in new.items())
        else:
            changes.append((key, new))
    return changes


def _set(session: Session, config: IdPConfig, row: ScimUser, user: User, path: str,
         value: Any) -> bool | None:
    """One attribute change; returns the new `active` for that attribute, else None."""
    if path.lower() == "active":
        return _boolean(value, "active")
    if path == "userName":
        if config.scim_subject == "userName" and value != row.user_name:
            raise ScimError(400, "userName cannot change", "mutability")
        _set_user_name(session, config, row, _required_str(value, "userName"))
    elif path == "externalId":
        if config.scim_subject == "externalId" and value != row.external_id:
            raise ScimError(400, "externalId cannot change", "mutability")
        row.external_id = _optional_str(value, "externalId", MAX_ATTRIBUTE)
    elif path == "displayName":
        row.display_name = _optional_str(value, "displayName", MAX_NAME)
    elif path == "name.formatted":
        user.name = _optional_str(value, "name.formatted", MAX_NAME)
    elif _EMAIL_PATH.match(path):
        if isinstance(value, list):
            user.email = _primary_email(value)
        elif _EMAIL_PATH.match(path).group(3):  # type: ignore[union-attr]
            user.email = _optional_str(value, "emails.value", MAX_EMAIL)
        else:
            raise ScimError(400, "emails must be an array", "invalidValue")
    else:
        raise ScimError(400, f"{path[:64]!r} is not an attribute this server stores",
                        "invalidPath")
    return None


def _set_user_name(session: Session, config: IdPConfig, row: ScimUser, user_name: str) -> None:
    other = _by_user_name(session, config, user_name)
    if other is not None and other.id != row.id:
        raise ScimError(409, "Another user has this userName", "uniqueness")
    row.user_name, row.user_name_key = user_name, user_name.casefold()


def _by_user_name(session: Session, config: IdPConfig, user_name: str) -> ScimUser | None:
    return session.scalars(select(ScimUser).where(
        ScimUser.idp == config.name, ScimUser.user_name_key == user_name.casefold())).first()


def _apply_profile(user: User, data: UserInput) -> None:
    user.name = data.formatted_name or data.display_name
    user.email = data.email


def _required_str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ATTRIBUTE:
        raise ScimError(400, f"{name} is required (a string of at most {MAX_ATTRIBUTE})",
                        "invalidValue")
    return value


def _optional_str(value: Any, name: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ScimError(400, f"{name} must be a string of at most {limit} characters",
                        "invalidValue")
    return value


def _boolean(value: Any, name: str) -> bool:
    # Entra ID sends "True"/"False" strings in PATCH; RFC 7643 §2.3.2 says a JSON boolean.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimError(400, f"{name} must be a boolean", "invalidValue")


def _primary_email(emails: Any) -> str | None:
    if emails is None:
        return None
    if not isinstance(emails, list) or not all(isinstance(e, dict) for e in emails):
        raise ScimError(400, "emails must be an array of objects", "invalidValue")
    if not emails:
        return None
    chosen = next((e for e in emails if e.get("primary") is True), emails[0])
    return _optional_str(chosen.get("value"), "emails.value", MAX_EMAIL)


def _iso(ts: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
