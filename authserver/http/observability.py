"""The request hooks of authserver.observability: a correlation id per request (kept in
`flask.g.correlation_id` and echoed in `X-Request-ID`), the HTTP metrics by URL rule, and one
access-log line per request. The rules themselves (which incoming id is kept, the labels, the
log line) are authserver/observability.py's; these hooks only read the request."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from authserver import observability
from authserver.observability import REQUEST_ID_HEADER, TRACEPARENT_HEADER


def init_app(app: Flask) -> None:
    """Register the correlation-id, metrics and access-log hooks on `app`.

    Call it before other `before_request` hooks are registered, so that the id exists for
    everything that logs during the request.
    """

    @app.before_request
    def _start_request() -> None:
        cid = observability.choose_correlation_id(
            request.headers.get(REQUEST_ID_HEADER), request.headers.get(TRACEPARENT_HEADER)
        )
        g.correlation_id = cid
        g.observability_started = time.perf_counter()
        observability.set_correlation_id(cid)

    @app.after_request
    def _finish_request(response: Response) -> Response:
        cid = g.get("correlation_id")
        if cid is not None:
            response.headers[REQUEST_ID_HEADER] = cid
        rule = request.url_rule
        started = g.get("observability_started")
        observability.record_request(
            rule=rule.rule if rule is not None else None, method=request.method,
            path=request.path, status=response.status_code,
            duration=time.perf_counter() - started if started is not None else None,
            remote_addr=request.remote_addr)
        return response

    @app.teardown_request
    def _end_request(_exc: BaseException | None) -> None:
        # Threads are reused by gthread workers: never let one request's id leak into the next.
        observability.set_correlation_id(None)
