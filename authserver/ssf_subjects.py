"""The subject of a Shared Signals SET, mapped to one of the sending IdP's users (docs/standards.md
SSF-08; RFC 9493 §3, SSF 1.0 §3). Split from authserver/ssf.py, which acts on the user found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.identity.federation import IdPConfig
from authserver.identity.users import AmbiguousUserError, resolve_user
from authserver.models import User

#: RFC 9493 §3 formats we map to a user; others are "not a subject we know".
USER_FORMATS = frozenset({"iss_sub", "email", "opaque", "aliases", "complex"})
#: At most this many identifiers in an `aliases` subject.
MAX_ALIASES = 16


def find_user(session: Session, config: IdPConfig, subject: Mapping[str, Any]
              ) -> tuple[str | None, str]:
    """SSF-08: our user for the SET's subject, among this IdP's users only; (None, why)
    when there is not exactly one. `iss_sub` is matched exactly (issuer: the IdP's or its
    transmitter's); `email`, `opaque` (its `id`) and each of `aliases` go through the
    deprovisioning lookup (our id, the IdP's `sub` or the e-mail); `complex` by its `user`."""
    fmt = subject.get("format")
    if fmt not in USER_FORMATS:
        return None, "unsupported_subject"
    if fmt == "complex":
        user = subject.get("user")
        if not isinstance(user, dict) or user.get("format") in ("complex", "aliases", None):
            return None, "unsupported_subject"
        return find_user(session, config, user)
    if fmt == "aliases":
        identifiers = subject.get("identifiers")
        if not isinstance(identifiers, list) or not 0 < len(identifiers) <= MAX_ALIASES:
            return None, "unsupported_subject"
        found = set()
        for identifier in identifiers:
            if isinstance(identifier, dict) and identifier.get("format") in (
                    "iss_sub", "email", "opaque"):
                user_id, why = find_user(session, config, identifier)
                if why == "ambiguous_subject":
                    return None, why
                if user_id is not None:
                    found.add(user_id)
        if len(found) > 1:
            return None, "ambiguous_subject"
        return (found.pop(), "found") if found else (None, "unknown_subject")
    if fmt == "iss_sub":
        iss, sub = subject.get("iss"), subject.get("sub")
        if not isinstance(sub, str) or iss not in (config.issuer, config.ssf_transmitter):
            return None, "unknown_subject"
        user_id = session.scalars(select(User.id).where(
            User.idp_issuer == config.issuer, User.idp_subject == sub)).first()
        return (user_id, "found") if user_id is not None else (None, "unknown_subject")
    ref = subject.get("email" if fmt == "email" else "id")
    if not isinstance(ref, str):
        return None, "unknown_subject"
    try:
        return resolve_user(session, ref, issuer=config.issuer), "found"
    except AmbiguousUserError:
        return None, "ambiguous_subject"
    except LookupError:
        return None, "unknown_subject"
