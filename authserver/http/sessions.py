"""The Flask side of server-side browser sessions: a `SessionInterface` over the store
operations of authserver/sessions.py (which says what a session is and when it dies), and
the two things a view does to its session, `rotate_session()` and `end_session()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from authserver.config import SESSION_TOUCH_INTERVAL
from authserver.sessions import (
    SessionRecord,
    current_generation,
    delete_record,
    is_session_id,
    load_record,
    new_session_id,
    store_record,
)
from authserver.store import Store, StoreUnavailableError


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
        if not is_session_id(sid):
            return ServerSession(presented=True)
        try:
            record = load_record(self.store, sid, now=int(self.clock()))
        except StoreUnavailableError:
            # Raised from before_request (see `init_app`), where the error handlers answer.
            session = ServerSession(presented=True)
            session.unavailable = True
            return session
        if record is None:
            return ServerSession(presented=True)
        return ServerSession(record.data, sid=sid, created=record.created, seen=record.seen,
                             generation=record.generation, presented=True)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        name = self.get_cookie_name(app)
        if session.unavailable:
            return
        if session.ended or (session.sid is not None and not session):
            if session.sid is not None:
                delete_record(self.store, session.sid)
            self._drop_cookie(app, response, name)
            return
        if not session:
            if session.presented:  # a stale or forged id: forget it
                self._drop_cookie(app, response, name)
            return
        now = int(self.clock())
        if session.sid is not None and session.rotate:
            delete_record(self.store, session.sid)
            session.sid = None
        fresh = session.sid is None
        if fresh:
            session.sid = new_session_id()
            session.created = now
            session.generation = current_generation(self.store, session.get("uid"))
        elif not session.modified and now - session.seen < SESSION_TOUCH_INTERVAL:
            return  # nothing new to store; last-use precision is SESSION_TOUCH_INTERVAL
        session.seen = now
        assert session.sid is not None
        record = SessionRecord(dict(session), session.created, session.seen, session.generation)
        if not store_record(self.store, session.sid, record, now=now):
            return
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
