"""The one error handler: `OAuthError` → JSON body + headers; anything else → `server_error`.

RFC 6749 §5.2 body shape; RFC 6750 §3 / RFC 9449 §7.1 challenges come from the error itself.
Internals never reach the client: an unexpected exception is logged with the correlation id
and answered with a generic `server_error`. A dependency failure that escaped as a driver
exception (the database went away under a per-request session) is `temporarily_unavailable`
(503) instead, logged as one line without a traceback, and every 503 carries `Retry-After`.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, json
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from authserver.errors import (
    RETRY_AFTER_SECONDS,
    OAuthError,
    ServerError,
    TemporarilyUnavailableError,
)
from authserver.http.browser import is_page_request, render_error_page
from authserver.observability import correlation_id

log = logging.getLogger("authserver.errors")


def render(error: OAuthError) -> Response:
    response = Response(json.dumps(error.body()), status=error.status_code,
                        mimetype="application/json")
    for name, value in error.headers().items():
        response.headers[name] = value
    return response


#: Driver exceptions that mean "the database is unreachable or gave up", not "our bug".
_DATABASE_FAILURES: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # connection refused or lost, server shutting down, lock timeout
    sa_exc.InterfaceError,  # the connection was already closed
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection became free in time
)


def _store_failures() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return ()
    return (RedisConnectionError, RedisTimeoutError)


_DEPENDENCY_FAILURES = (*_DATABASE_FAILURES, *_store_failures())


def dependency_failure(error: BaseException) -> BaseException | None:
    """The driver exception in `error`'s chain that means a dependency failed, or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _DEPENDENCY_FAILURES) or (
            isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def _answer(error: OAuthError) -> Response:
    """JSON on the API routes; an HTML page (same status and headers) on the user routes."""
    if is_page_request():
        return render_error_page(error.status_code, error.error, error.description,
                                 error.headers())
    return render(error)


def init_app(app: Flask) -> None:
    @app.errorhandler(OAuthError)
    def handle_oauth_error(error: OAuthError) -> Response:
        g.oauth_error = error
        if isinstance(error, TemporarilyUnavailableError):
            # An outage answers every request this way: one line each, no traceback.
            log.warning("dependency unavailable: %s", error.debug or error.error)
        elif error.status_code >= 500:
            log.error("request failed: %s (%s)", error.error, error.debug or "")
        else:
            log.info("request rejected: %s (%s)", error.error, error.reason,
                     extra={"error": error.error, "reason": error.reason,
                            "debug": error.debug or "", "correlation_id": correlation_id()})
        return _answer(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        if is_page_request():  # a person at a browser: a page, with a way back
            response = render_error_page(error.code or 500, error.name or "error",
                                         error.description)
            if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
                response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
            return response
        # Routing errors (404, 405, 413): plain JSON, no OAuth code to invent; never cached,
        # like every other error an API route sends.
        response = Response(json.dumps({"error": (error.name or "error").lower()
                                        .replace(" ", "_")}),
                            status=error.code or 500, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        failed = dependency_failure(error)
        if failed is not None:
            # The type only: a driver message can hold SQL, hosts or connection strings.
            return handle_oauth_error(TemporarilyUnavailableError(
                debug=f"database: {type(failed).__name__}"
                if isinstance(failed, sa_exc.SQLAlchemyError) else
                f"store: {type(failed).__name__}"))
        log.exception("unexpected error")
        server_error = ServerError()
        g.oauth_error = server_error
        return _answer(server_error)

    @app.after_request
    def retry_after_on_503(response: Response) -> Response:
        # Every 503 (readiness, a route's own answer, an error) tells clients when to retry.
        if response.status_code == 503 and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
