"""Server-side browser sessions, kept in the shared store so every instance sees them.

The cookie carries only a random session id (256 bits); the store holds, under a hash of the
id, the session's data and when it was created and last used. So:

- signing out deletes the record, and a copy of the cookie taken before is worthless;
- `end_all_sessions(store, user_id)` (sign out everywhere, deprovisioning) ends every session
  of a user at once: each record carries the user's session generation from when it was
  made, and a record whose generation is no longer the user's current one is dead;
- a session dies `SESSION_IDLE_TTL` after its last use and `SESSION_TTL` after it was
  created, whatever its use (both checked against the app's clock; the store's own expiry
  only reclaims the space);
- `rotate_session()` (at sign-in) moves the data to a fresh id and deletes the old record:
  an id planted before sign-in is never signed in (session fixation).

With Redis these hold across processes and hosts; the embedded store is one process only,
like everything else it keeps. A store failure is a 503 (`StoreUnavailableError`): no store,
no session, never "signed in by default".
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from authserver.config import SESSION_IDLE_TTL, SESSION_TOUCH_INTERVAL, SESSION_TTL
from authserver.store import Store, StoreUnavailableError
from authserver.store import keys as store_keys

_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def end_all_sessions(store: Store, user_id: str) -> None:
    """End every browser session of `user_id` on every instance (sign out everywhere,
    deprovisioning). A new generation makes each existing record stale; the key has no
    expiry, since a record made under the old generation may live up to `SESSION_TTL`."""
    store.set(store_keys.session_generation(user_id), secrets.token_urlsafe(16))


class ServerSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, data: dict[str, Any] | None = None, *, sid: str | None = None,
                 created: int = 0, seen: int = 0, generation: str = "",
                 presented: bool = False) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.sid = sid
        self.created = created
        self.seen = seen
        self.generation = generation
        self.presented = presented  # the request carried a session cookie
        self.modified = False
        self.rotate = False
        self.ended = False
        self.unavailable = False  # the store could not be read


class StoreSessionInterface(SessionInterface):
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if not sid:
            return ServerSession()
        if not _ID.fullmatch(sid):
            return ServerSession(presented=True)
        try:
            return self._load(sid)
        except StoreUnavailableError:
            # Raised from before_request (see `init_app`), where the error handlers answer.
            session = ServerSession(presented=True)
            session.unavailable = True
            return session

    def _load(self, sid: str) -> ServerSession:
        now = int(self.clock())
        raw = self.store.get(store_keys.session(sid))
        record = _parse(raw)
        if record is None:
            return ServerSession(presented=True)
        created, seen = record["created"], record["seen"]
        generation = record["generation"]
        alive = now < created + SESSION_TTL and now < seen + SESSION_IDLE_TTL
        uid = record["data"].get("uid")
        if alive and isinstance(uid, str):
            alive = generation == (self.store.get(store_keys.session_generation(uid)) or "")
        if not alive:
            self.store.delete(store_keys.session(sid))
            return ServerSession(presented=True)
        return ServerSession(record["data"], sid=sid, created=created, seen=seen,
                             generation=generation, presented=True)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        name = self.get_cookie_name(app)
        if session.unavailable:
            return
        if session.ended or (session.sid is not None and not session):
            if session.sid is not None:
                self.store.delete(store_keys.session(session.sid))
            self._drop_cookie(app, response, name)
            return
        if not session:
            if session.presented:  # a stale or forged id: forget it
                self._drop_cookie(app, response, name)
            return
        now = int(self.clock())
        if session.sid is not None and session.rotate:
            self.store.delete(store_keys.session(session.sid))
            session.sid = None
        fresh = session.sid is None
        if fresh:
            session.sid = secrets.token_urlsafe(32)
            session.created = now
            uid = session.get("uid")
            session.generation = (self.store.get(store_keys.session_generation(uid)) or "") \
                if isinstance(uid, str) else ""
        elif not session.modified and now - session.seen < SESSION_TOUCH_INTERVAL:
            return  # nothing new to store; last-use precision is SESSION_TOUCH_INTERVAL
        session.seen = now
        remaining = min(SESSION_IDLE_TTL, session.created + SESSION_TTL - now)
        if remaining <= 0:
            return
        assert session.sid is not None
        self.store.set(store_keys.session(session.sid), json.dumps({
            "data": dict(session), "created": session.created, "seen": session.seen,
            "generation": session.generation}), ttl=remaining)
        response.vary.add("Cookie")
        if fresh:
            # No Expires/Max-Age: the idle and absolute lifetimes are enforced here, on the
            # server's clock. A persistent cookie would also be judged by the browser's clock
            # (a skewed one drops a live session early or keeps a dead one), and it survives
            # the browser being closed.
            response.set_cookie(
                name, session.sid,
                path="/", httponly=True, secure=self.get_cookie_secure(app),
                samesite=self.get_cookie_samesite(app))

    def _drop_cookie(self, app: Flask, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.get_cookie_secure(app),
                               httponly=True, samesite=self.get_cookie_samesite(app))
        response.vary.add("Cookie")


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


def init_app(app: Flask, store: Store, clock: Callable[[], float]) -> None:
    app.session_interface = StoreSessionInterface(store, clock)

    @app.before_request
    def session_store_answered() -> None:
        if _current().unavailable:
            raise StoreUnavailableError(debug="session store unreadable")


def _current() -> ServerSession:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, ServerSession):
        raise RuntimeError("server-side sessions are not installed")
    return session


def rotate_session() -> None:
    """Start over under a fresh id at the end of this request; the old record is deleted."""
    session = _current()
    session.clear()
    session.rotate = True


def end_session() -> None:
    """Sign out: delete this session's record and the cookie."""
    session = _current()
    session.clear()
    session.ended = True
