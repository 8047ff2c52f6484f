"""OpenID Connect Core 1.0 §5.7 (claim stability): just-in-time users and deprovisioning.

https://openid.net/specs/openid-connect-core-1_0.html#ClaimStability
Only (`iss`, `sub`) identifies a person; e-mail, name, groups, roles and tenant are attributes,
refreshed from the IdP's claims at every sign-in. Deprovisioning marks a revocation epoch both in
the database (the source of truth) and in the shared store (read on every token use), so every
token issued before it fails on its next use.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from authserver.identity.federation import IdentityError, IdPConfig
from authserver.models import User
from authserver.store import Store
from authserver.store import keys as store_keys

USER_ID_PREFIX = "usr_"
#: 26 base32 characters = 130 bits of SHA-256: collisions are not a practical concern.
USER_ID_HASH_CHARS = 26
#: The store family of revocation epochs (authserver.store.keys.user_epoch: the id hashed).
EPOCH_KEY_PREFIX = "user-epoch:"
#: Column sizes of `User` (authserver.models.oauth); longer claims are refused, not truncated.
MAX_EMAIL = 320
MAX_NAME = 255
MAX_TENANT = 255
MAX_LIST_ITEMS = 256
MAX_LIST_ITEM = 255


def user_id_for(config: IdPConfig, claims: Mapping[str, Any]) -> str:
    """Our stable id for the person: a hash of (`iss`, `sub`), never the e-mail.

    OIDC Core §5.7: `iss` + `sub` is the only stable identifier. The issuer names the IdP
    tenant, so the id is tenant-qualified; JSON encoding keeps the pair unambiguous.
    """
    iss, sub = _issuer_subject(config, claims)
    digest = hashlib.sha256(json.dumps([iss, sub]).encode("utf-8")).digest()
    encoded = base64.b32encode(digest).decode("ascii").lower()
    return USER_ID_PREFIX + encoded[:USER_ID_HASH_CHARS]


def provision_user(
    session: Session, config: IdPConfig, claims: Mapping[str, Any], *, now: int
) -> User:
    """Create the user on first sign-in, or refresh its attributes from verified `claims`.

    `claims` must already be verified (federation). Raises IdentityError for a deprovisioned
    user or a malformed mapped claim (fail closed: nothing is written then).
    """
    iss, sub = _issuer_subject(config, claims)
    attrs = mapped_attributes(config, claims)
    user_id = user_id_for(config, claims)
    user = session.get(User, user_id)
    if user is None:
        user = User(id=user_id, idp_issuer=iss, idp_subject=sub, active=True,
                    tokens_valid_after=0, created_at=now, **{"groups": [], **attrs})
        session.add(user)
        session.flush()
        return user
    # The id is a hash; make sure the row really is this (iss, sub) before touching it.
    if user.idp_issuer != iss or user.idp_subject != sub:
        raise IdentityError("user id collision: stored iss/sub differ")
    if not user.active:
        raise IdentityError(f"user {user_id} is deprovisioned")
    for name, value in attrs.items():
        setattr(user, name, value)
    session.flush()
    return user


def mapped_attributes(config: IdPConfig, claims: Mapping[str, Any]) -> dict[str, Any]:
    """Our attributes from the IdP's claims through `config.claim_map`. Raises IdentityError."""
    cmap = config.claim_map
    tenant = _optional_str(claims, cmap["tenant"], MAX_TENANT) or config.default_tenant
    if tenant not in config.tenants:
        # An IdP speaks only for the tenants configured for it (`[idps.x] tenants`).
        raise IdentityError(f"tenant {tenant[:64]!r} is not bound to idp {config.name}")
    attributes: dict[str, Any] = {
        "email": _optional_str(claims, cmap["email"], MAX_EMAIL),
        "name": _optional_str(claims, cmap["name"], MAX_NAME),
        "groups": _str_list(claims, cmap["groups"]),
        "roles": _str_list(claims, cmap["roles"]),
        "tenant": tenant,
    }
    if config.groups_source == "scim":
        # SCIM Groups membership is this IdP's word on groups; a token does not undo it.
        del attributes["groups"]
    return attributes


def deprovision_user(session: Session, store: Store, user_id: str, *, now: int) -> User:
    """Deactivate the user and kill every token issued up to `now`. LookupError if unknown.

    The database row is updated first, then the store epoch; if the store write fails the
    caller's transaction rolls back and nothing changes. If the commit fails after the store
    write, tokens are already rejected: the failure mode is closed.
    """
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    user.active = False
    _set_epoch(session, store, user, now)
    return user


def _set_epoch(session: Session, store: Store, user: User, now: int) -> None:
    user.tokens_valid_after = max(user.tokens_valid_after or 0, now)
    session.flush()
    store.set(store_keys.user_epoch(user.id), str(user.tokens_valid_after))


class AmbiguousUserError(LookupError):
    """A reference (sub or e-mail) that fits more than one user: refused, never guessed."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        super().__init__(f"{len(candidates)} users match {ref[:64]!r}")
        self.candidates = candidates


def resolve_user(session: Session, ref: str, *, issuer: str | None = None) -> str:
    """Our user id for `ref`: our id (`usr_…`), the IdP's `sub`, or the e-mail address
    (case-insensitive). LookupError if none; AmbiguousUserError if several (the same `sub`
    at two IdPs, or a shared e-mail): the caller must then name the internal id.

    With `issuer`, only that IdP's users are candidates (an IdP speaks for its own users
    only: Shared Signals)."""
    from sqlalchemy import func, or_, select

    if not ref or len(ref) > MAX_EMAIL:
        raise LookupError("no user matches")
    if ref.startswith(USER_ID_PREFIX):
        user = session.get(User, ref)
        if user is not None and (issuer is None or user.idp_issuer == issuer):
            return ref
    query = select(User.id).where(or_(User.idp_subject == ref,
                                      func.lower(User.email) == ref.lower()))
    if issuer is not None:
        query = query.where(User.idp_issuer == issuer)
    matches = sorted(set(session.scalars(query)))
    if not matches:
        raise LookupError(f"no user matches {ref[:64]!r}")
    if len(matches) > 1:
        raise AmbiguousUserError(ref, matches)
    return matches[0]


def revoke_user_tokens(session: Session, store: Store, user_id: str, *, now: int) -> User:
    """Kill every token and assertion issued to or for the user up to `now` (the same epoch
    deprovisioning sets, database first, then the store), but leave the user active: they
    may sign in again and the edge may mint new assertions (CAEP session-revoked).
    LookupError if unknown."""
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    _set_epoch(session, store, user, now)
    return user


def refresh_attributes(session: Session, config: IdPConfig, user_id: str,
                       claims: Mapping[str, Any]) -> list[str]:
    """Update the user's attributes from `claims` that the IdP says changed (CAEP
    token-claims-change), through `config.claim_map` and the sign-in checks; attributes
    whose claim is absent stay as they are. Returns the attributes changed. Raises
    IdentityError for a malformed claim (nothing is written then), LookupError if unknown."""
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    attrs = mapped_attributes(config, claims)
    changed = [name for name, claim in config.claim_map.items()
               if claim in claims and getattr(user, name) != attrs[name]]
    for name in changed:
        setattr(user, name, attrs[name])
    session.flush()
    return sorted(changed)


def reactivate_user(session: Session, user_id: str) -> User:
    """Let a deprovisioned user sign in again (SCIM `active=true`, RISC account-enabled).

    Only the flag changes: the revocation epoch stays, so nothing issued before the
    deprovisioning comes back to life. LookupError if unknown."""
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    user.active = True
    session.flush()
    return user


def user_epoch(session: Session, store: Store, user_id: str) -> int:
    """The user's revocation epoch: tokens with `iat` at or before it are dead (0: none).

    The store answers for deprovisioned users without a database query; otherwise the
    database does. LookupError if the user does not exist. Store and database failures
    propagate (503): they never read as "no epoch".
    """
    cached = store.get(store_keys.user_epoch(user_id))
    if cached is not None:
        return int(cached)
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    return int(user.tokens_valid_after or 0)


def is_token_current(session: Session, store: Store, user_id: str, iat: int) -> bool:
    """True if a token issued at `iat` for this user may still be used.

    False for an unknown or deprovisioned user, or `iat` at or before the epoch (a token
    minted in the same second as the deprovisioning counts as before it: fail closed). A token
    older than a stored epoch is refused from the store alone; anything else reads the row.
    Store and database failures are not answers: they propagate as 503 errors.
    """
    cached = store.get(store_keys.user_epoch(user_id))
    if cached is not None and iat <= int(cached):
        # The common revocation case is answered by the store alone.
        return False
    user = session.get(User, user_id)
    if user is None or not user.active:
        return False
    epoch = int(user.tokens_valid_after or 0)
    return epoch == 0 or iat > epoch


# --- claim parsing ---------------------------------------------------------------------------


def _issuer_subject(config: IdPConfig, claims: Mapping[str, Any]) -> tuple[str, str]:
    iss, sub = claims.get("iss"), claims.get("sub")
    # The claims were verified against this IdP; a different iss here is a caller bug.
    if iss != config.issuer:
        raise IdentityError("claims are not from this IdP")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise IdentityError("sub missing or invalid")
    return iss, sub


def _optional_str(claims: Mapping[str, Any], claim: str, limit: int) -> str | None:
    value = claims.get(claim)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise IdentityError(f"claim {claim!r} is not a string of at most {limit} characters")
    return value or None


def _str_list(claims: Mapping[str, Any], claim: str) -> list[str]:
    value = claims.get(claim)
    if value is None:
        return []
    if isinstance(value, str):
        # Some IdPs send a single group as a string; space-separated lists are not guessed.
        value = [value]
    if (not isinstance(value, list) or len(value) > MAX_LIST_ITEMS
            or not all(isinstance(v, str) and 0 < len(v) <= MAX_LIST_ITEM for v in value)):
        raise IdentityError(f"claim {claim!r} is not a list of strings")
    return sorted(set(value))
