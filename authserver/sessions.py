"""Server-side browser sessions, kept in the shared store so every instance sees them: the
store operations (no Flask here; the Flask `SessionInterface` that calls them is
authserver/http/sessions.py).

The cookie carries only a random session id (256 bits); the store holds, under a hash of the
id, the session's data and when it was created and last used. So:

- signing out deletes the record, and a copy of the cookie taken before is worthless;
- `end_all_sessions(store, user_id)` (sign out everywhere, deprovisioning) ends every session
  of a user at once: each record carries the user's session generation from when it was
  made, and a record whose generation is no longer the user's current one is dead;
- a session dies `SESSION_IDLE_TTL` after its last use and `SESSION_TTL` after it was
  created, whatever its use (both checked against the app's clock; the store's own expiry
  only reclaims the space);
- `rotate_session()` (authserver.http.sessions, at sign-in) moves the data to a fresh id and
  deletes the old record: an id planted before sign-in is never signed in (session fixation).

With Redis these hold across processes and hosts; the embedded store is one process only,
like everything else it keeps. A store failure is a 503 (`StoreUnavailableError`): no store,
no session, never "signed in by default".
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from authserver.config import SESSION_IDLE_TTL, SESSION_TTL
from authserver.store import Store
from authserver.store import keys as store_keys

_ID = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class SessionRecord:
    """What the store keeps for one session id."""

    data: dict[str, Any]
    created: int
    seen: int
    generation: str


def is_session_id(sid: str) -> bool:
    """True if `sid` has the form of the ids `new_session_id` makes."""
    return _ID.fullmatch(sid) is not None


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def end_all_sessions(store: Store, user_id: str) -> None:
    """End every browser session of `user_id` on every instance (sign out everywhere,
    deprovisioning). A new generation makes each existing record stale; the key has no
    expiry, since a record made under the old generation may live up to `SESSION_TTL`."""
    store.set(store_keys.session_generation(user_id), secrets.token_urlsafe(16))


def current_generation(store: Store, user_id: Any) -> str:
    """The session generation a new session of `user_id` (the session's `uid`) records: ""
    for no user, or a user never signed out everywhere."""
    if not isinstance(user_id, str):
        return ""
    return store.get(store_keys.session_generation(user_id)) or ""


def load_record(store: Store, sid: str, *, now: int) -> SessionRecord | None:
    """The live record of session `sid`, or None: no record, a malformed one, or a dead one
    (past either lifetime, or of a generation its user has ended), which is deleted. Store
    failures raise `StoreUnavailableError`."""
    record = _parse(store.get(store_keys.session(sid)))
    if record is None:
        return None
    created, seen = record["created"], record["seen"]
    generation = record["generation"]
    alive = now < created + SESSION_TTL and now < seen + SESSION_IDLE_TTL
    uid = record["data"].get("uid")
    if alive and isinstance(uid, str):
        alive = generation == current_generation(store, uid)
    if not alive:
        delete_record(store, sid)
        return None
    return SessionRecord(record["data"], created, seen, generation)


def store_record(store: Store, sid: str, record: SessionRecord, *, now: int) -> bool:
    """Keep `record` under `sid` for what is left of its lifetimes; False (nothing stored)
    when nothing is left."""
    remaining = min(SESSION_IDLE_TTL, record.created + SESSION_TTL - now)
    if remaining <= 0:
        return False
    store.set(store_keys.session(sid), json.dumps({
        "data": record.data, "created": record.created, "seen": record.seen,
        "generation": record.generation}), ttl=remaining)
    return True


def delete_record(store: Store, sid: str) -> None:
    store.delete(store_keys.session(sid))


def _parse(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict) or \
            not all(isinstance(record.get(k), int) for k in ("created", "seen")) or \
            not isinstance(record.get("generation"), str):
        return None
    return record
