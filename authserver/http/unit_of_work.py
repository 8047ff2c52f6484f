"""One unit of work per request, committed by the handler that wrote it.

The request's session (`g.db`, opened lazily by SQLAlchemy's autobegin: a request that runs no
statement costs no round trip) is never committed by a hook: a handler that writes calls
`commit()` once, before it builds its response, and teardown rolls back whatever was not
committed. So a refusal (an exception, any status) commits nothing of the request, and a
forgotten commit loses the write instead of persisting something half-checked. A refusal's
audit record goes through its own path (`AuditLog.append_refusal`).
"""

from __future__ import annotations

import logging

from flask import g
from sqlalchemy.orm import Session

from authserver.errors import TemporarilyUnavailableError

log = logging.getLogger("authserver")


def commit() -> None:
    """Commit what the request wrote, or raise TemporarilyUnavailableError (503 with
    Retry-After): a failed commit means nothing was done, so nothing may be answered as done
    (no token, no secret, no "saved")."""
    session = g.db
    if not _has_work(session):
        return  # nothing ran and nothing is pending: no COMMIT to send, nothing to lose
    try:
        session.commit()
    except Exception as e:
        session.rollback()
        from authserver.http.errors import dependency_failure

        if dependency_failure(e) is None:  # not an outage (that is one warning line): a bug
            log.error("commit failed: %s", type(e).__name__)
        raise TemporarilyUnavailableError(debug=f"commit: {type(e).__name__}") from e


def end_reads() -> None:
    """End the request's transaction before work that runs in transactions of its own
    (deprovisioning, the SSF receiver): what the request read is let go, with its connection
    and, on SQLite, the read lock those transactions would wait on. Only for a request that has
    written nothing: pending writes are a bug, refused loudly rather than dropped."""
    session = g.db
    if _pending(session):
        raise RuntimeError("end_reads() with unflushed writes: commit() them or drop them")
    session.rollback()


def _has_work(session: Session) -> bool:
    """Whether the session has begun a transaction or holds unflushed changes. A session that
    has neither has nothing a COMMIT or ROLLBACK could keep or undo; skipping it saves
    SQLAlchemy's autobegin-and-commit of an empty transaction (about 60 µs per request)."""
    return session.in_transaction() or _pending(session)


def _pending(session: Session) -> bool:
    """Whether the session holds changes not yet flushed."""
    return bool(session.new or session.dirty or session.deleted)


def close(session: Session) -> None:
    """End the request's session (teardown): roll back what the handler did not commit, then
    close. A rollback that fails (a dead connection) is logged; close() discards the
    connection either way."""
    try:
        if _has_work(session):
            session.rollback()  # what the handler did not commit (nothing, if it did)
    except Exception as e:
        log.warning("rollback failed: %s", type(e).__name__)
    finally:
        session.close()
