"""The one error handler: `OAuthError` → JSON body + headers; anything else → `server_error`.

RFC 6749 §5.2 body shape; RFC 6750 §3 / RFC 9449 §7.1 challenges come from the error itself.
Internals never reach the client: an unexpected exception is logged with the correlation id
and answered with a generic `server_error`.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, json
from werkzeug.exceptions import HTTPException

from authserver.errors import OAuthError, ServerError

log = logging.getLogger("authserver.errors")


def render(error: OAuthError) -> Response:
    response = Response(json.dumps(error.body()), status=error.status_code,
                        mimetype="application/json")
    for name, value in error.headers().items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(OAuthError)
    def handle_oauth_error(error: OAuthError) -> Response:
        g.oauth_error = error
        if error.status_code >= 500:
            log.error("request failed: %s (%s)", error.error, error.debug or "")
        else:
            log.info("request rejected: %s", error.error,
                     extra={"error": error.error, "debug": error.debug or ""})
        return render(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        # Routing errors (404, 405): plain JSON, no OAuth code to invent.
        response = Response(json.dumps({"error": (error.name or "error").lower()
                                        .replace(" ", "_")}),
                            status=error.code or 500, mimetype="application/json")
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        server_error = ServerError()
        g.oauth_error = server_error
        return render(server_error)
