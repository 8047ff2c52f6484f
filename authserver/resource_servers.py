"""Registered resource servers (issue 14): add, list, remove, and what a token for one must be.

A resource server is registered once (`authserver resources add`, `POST /admin/resources`) and
lives in the database, and takes effect on every instance at once: instances cache it only
while the shared generation every write renews holds (authserver.client_cache). Its URI
is stored in `authserver.urls.normalize_resource` form, the form tokens then carry in `aud`.

`token_types` is what the resource accepts: `dpop` (DPoP-bound tokens, RFC 9449), `bearer`
(unbound tokens, RFC 6750), or both. A token request naming a `dpop`-only resource must carry
a DPoP proof (`invalid_dpop_proof`, as for a client with `dpop_bound_access_tokens`, DPOP-23);
one naming a `bearer`-only resource must not, since that resource could not accept the bound
token it would get (`invalid_request`). `scopes`, when not empty, bounds the scope a token for
the resource may carry (`invalid_scope`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import (
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidScopeError,
)
from authserver.models import Client, ResourceServer
from authserver.urls import normalize_resource

if TYPE_CHECKING:
    from authserver.client_cache import ResourceSnapshot

TOKEN_TYPES = ("dpop", "bearer")
MAX_NAME_LENGTH = 255


class ResourceServerError(ValueError):
    """A registration that cannot be made; the message says why (shown to the admin)."""


class DuplicateResourceError(ResourceServerError):
    pass


@dataclass(frozen=True)
class Registration:
    resource: ResourceServer
    #: The introspection client's id and secret (the secret shown this once), if asked for.
    client_id: str | None = None
    client_secret: str | None = None


def as_dict(row: ResourceServer) -> dict[str, Any]:
    return {"uri": row.uri, "name": row.name, "scopes": list(row.scopes),
            "token_types": list(row.token_types),
            "introspection_client_id": row.introspection_client_id,
            "created_at": row.created_at}


def checked_uri(uri: Any, *, issuer: str) -> str:
    """`uri` in normalised form, or ResourceServerError: an absolute http(s) URI (https, or http
    on loopback), not this server itself nor its gateway (those are ours, not registrable)."""
    from authserver.urls import is_https_or_loopback_url

    normal = normalize_resource(uri) if isinstance(uri, str) else None
    if normal is None or not is_https_or_loopback_url(normal):
        raise ResourceServerError(
            "uri must be an absolute https URI (http only on loopback) without userinfo or "
            "fragment")
    ours = normalize_resource(issuer)
    if ours is not None and (normal == ours or normal.startswith(f"{ours.rstrip('/')}/gateway/")
                             or normal == f"{ours.rstrip('/')}/gateway"):
        raise ResourceServerError("uri is this server or its gateway, which are not registrable")
    return normal


def checked_token_types(values: Iterable[Any]) -> list[str]:
    kinds = list(dict.fromkeys(values))
    if not kinds or any(k not in TOKEN_TYPES for k in kinds):
        raise ResourceServerError("token_types must be one or both of dpop, bearer")
    return [k for k in TOKEN_TYPES if k in kinds]


def checked_scopes(values: Iterable[Any], *, supported: Sequence[str]) -> list[str]:
    scopes = list(dict.fromkeys(values))
    unknown = [s for s in scopes if not isinstance(s, str) or s not in supported]
    if unknown:
        raise ResourceServerError(
            f"scopes must be supported by this server ({', '.join(supported)}); "
            f"not {', '.join(map(str, unknown))}")
    return scopes


def add(session: Session, *, uri: Any, name: Any, scopes: Iterable[Any],
        token_types: Iterable[Any], introspection: bool, issuer: str,
        supported_scopes: Sequence[str], now: int | None = None) -> Registration:
    """Register a resource server (flushes; the caller's transaction commits). With
    `introspection`, also a confidential client whose `resources` attribute is this URI, as
    `authserver clients create --resource URI` makes: it may introspect the resource's tokens."""
    from authserver.clients import register_client, validate_client_metadata

    normal = checked_uri(uri, issuer=issuer)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH \
            or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ResourceServerError(
            f"name must be 1 to {MAX_NAME_LENGTH} printable characters")
    kinds = checked_token_types(token_types)
    scope_list = checked_scopes(scopes, supported=supported_scopes)
    if session.get(ResourceServer, normal) is not None:
        raise DuplicateResourceError(f"resource {normal} is already registered")
    now = int(time.time()) if now is None else now
    client_id = secret = None
    if introspection:
        metadata = validate_client_metadata(
            {"client_name": f"{name} (resource server)", "grant_types": ["client_credentials"]},
            scopes=tuple(supported_scopes))
        client, secret = register_client(session, metadata, now=now,
                                         attributes={"resources": [normal]})
        client_id = client.client_id
    row = ResourceServer(uri=normal, name=name.strip(), scopes=scope_list, token_types=kinds,
                         introspection_client_id=client_id, created_at=now)
    session.add(row)
    session.flush()
    return Registration(row, client_id, secret)


def list_all(session: Session) -> list[ResourceServer]:
    return list(session.scalars(select(ResourceServer).order_by(ResourceServer.uri)))


def remove(session: Session, uri: Any) -> ResourceServer:
    """Delete the resource (any spelling of its URI) and its introspection client: from the
    next token request on, the URI is `invalid_target` on every instance, and the client can
    no longer introspect. LookupError if it is not registered."""
    normal = normalize_resource(uri) if isinstance(uri, str) else None
    row = session.get(ResourceServer, normal) if normal else None
    if row is None:
        raise LookupError(uri)
    if row.introspection_client_id:
        client = session.get(Client, row.introspection_client_id)
        if client is not None:
            session.delete(client)
    session.delete(row)
    session.flush()
    return row


def check_token_request(registered: Iterable[ResourceServer | ResourceSnapshot], *, bound: bool,
                        scope: str | None) -> None:
    """What the registered resources a token is for require of it: `bound` is whether it will
    be DPoP-bound (the request carried a valid proof), `scope` the scope it will carry."""
    for row in registered:
        kinds = set(row.token_types)
        if not bound and "bearer" not in kinds:
            raise InvalidDpopProofError(
                f"DPoP proof required: the resource {row.uri} accepts only DPoP-bound tokens")
        if bound and "dpop" not in kinds:
            raise InvalidRequestError(
                f"The resource {row.uri} accepts only Bearer tokens: request it without a "
                "DPoP proof")
        if row.scopes and not set((scope or "").split()) <= set(row.scopes):
            raise InvalidScopeError(
                f"The requested scope is not served by the resource {row.uri}")
