"""Observability: correlation ids (W3C Trace Context §3.2 traceparent), JSON logs, metrics.

Correlation id, per request (`init_app`): a sane incoming `X-Request-ID` is kept, else the
trace-id of a valid `traceparent`, else a fresh uuid4 hex. It is stored in `flask.g.correlation_id`
and in a contextvar (`correlation_id()`, readable from core code), and echoed in the
`X-Request-ID` response header. The incoming value is client-controlled: it correlates log lines,
it proves nothing and must never be used as a unique key or a security input.

Logs (`configure_logging`): one JSON object per line on stderr with `ts`, `level`, `logger`,
`message`, `correlation_id` and any `extra=` fields. `RedactingFilter` on that handler scrubs
anything that looks like a credential (defence in depth: we never log tokens in the first place).

Metrics: module-level Prometheus objects below; the HTTP ones are recorded here, the rest by the
components that own the event. The endpoint label is the Flask URL rule (`/gateway/<platform>/...`),
never the raw path, and the method label is from a closed set, so a client cannot grow cardinality.

Gunicorn multiprocess mode: when `PROMETHEUS_MULTIPROC_DIR` is set *before* prometheus_client is
first imported, each worker writes its values to files in that directory and `/metrics` (see
`authserver.http.ops`) aggregates them with `MultiProcessCollector`. The directory must exist and be
emptied before workers start, and `mark_process_dead` must run when a worker exits: gunicorn.conf.py
does both (`on_starting`, `child_exit`).

This module imports Flask only inside `init_app`, so core modules may import it for the metrics
and `correlation_id()` without pulling in the HTTP layer.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from flask import Flask, Response

REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"
# Accepted incoming ids: long enough not to collide by accident, short and plain enough to be
# safe in a log line and a response header (no spaces, quotes, CR/LF).
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# W3C Trace Context §3.2: version-traceid-parentid-flags, lowercase hex. Version ff is invalid;
# a higher version may append fields, which we ignore (§3.2.4, forward compatibility).
_TRACEPARENT_RE = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-[\x21-\x7e]*)?"
)
_TRACEPARENT_MAX_LEN = 512
_INVALID_TRACE_ID = "0" * 32
_INVALID_PARENT_ID = "0" * 16

# Methods outside this set are labelled OTHER so that junk methods cannot mint new series.
_METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED_ENDPOINT = "<unmatched>"

_CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "authserver_correlation_id", default=None
)

_access_log = logging.getLogger("authserver.access")

# --- metrics ----------------------------------------------------------------------------------
# Latency buckets (seconds): token endpoint work is ms-scale; gateway calls wait on platforms.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_GATEWAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "authserver_http_requests",
    "HTTP requests handled, by URL rule, method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    "authserver_http_request_duration_seconds",
    "HTTP request handling time, by URL rule.",
    ["endpoint"],
    buckets=_HTTP_BUCKETS,
)
TOKENS_ISSUED = Counter(
    "authserver_tokens_issued",
    "Tokens issued, by grant type and token type.",
    ["grant_type", "token_type"],
)
TOKEN_REJECTIONS = Counter(
    "authserver_token_rejections",
    "Token requests rejected, by grant type and OAuth error code.",
    ["grant_type", "error"],
)
POLICY_DECISIONS = Counter(
    "authserver_policy_decisions",
    "Policy decisions, by outcome (allow/deny/step_up) and reason.",
    ["outcome", "reason"],
)
PLATFORM_REFRESHES = Counter(
    "authserver_platform_refreshes",
    "Downstream platform token refreshes, by platform and outcome.",
    ["platform", "outcome"],
)
#: A rotated refresh token presented again: `retried` (the same client within the reuse
#: interval got the same successor back) or `revoked` (reuse: the family was revoked).
REFRESH_TOKEN_REUSE = Counter(
    "authserver_refresh_token_reuse",
    "Rotated refresh tokens presented again, by outcome (retried within the reuse interval, "
    "or revoked as reuse).",
    ["outcome"],
)
#: Refusals before any principal was authenticated (no verified gateway token, a failed client
#: authentication): counted here and logged rate-limited instead of audited, so that anonymous
#: traffic never takes the audit chain's lock (authserver.audit.refused_unauthenticated).
UNAUTHENTICATED_REJECTIONS = Counter(
    "authserver_unauthenticated_rejections",
    "Requests refused before any principal was authenticated (not audited), by event and "
    "OAuth error code.",
    ["event", "reason"],
)
GATEWAY_CALLS = Counter(
    "authserver_gateway_calls",
    "Gateway calls to downstream platforms, by platform, method and status.",
    ["platform", "method", "status"],
)
GATEWAY_LATENCY = Histogram(
    "authserver_gateway_call_duration_seconds",
    "Gateway call time to downstream platforms, by platform.",
    ["platform"],
    buckets=_GATEWAY_BUCKETS,
)


# --- correlation id ---------------------------------------------------------------------------
def correlation_id() -> str | None:
    """The current request's correlation id, or None outside a request."""
    return _CORRELATION_ID.get()


def is_sane_request_id(value: str | None) -> bool:
    """True if an incoming X-Request-ID may be reused as our correlation id."""
    return value is not None and _REQUEST_ID_RE.fullmatch(value) is not None


def trace_id_from_traceparent(value: str | None) -> str | None:
    """The trace-id of a valid W3C `traceparent` header value, else None (never raises)."""
    if value is None or len(value) > _TRACEPARENT_MAX_LEN:
        return None
    match = _TRACEPARENT_RE.fullmatch(value.strip())
    if match is None:
        return None
    version = match["version"]
    if version == "ff":
        return None
    # Version 00 has exactly four fields; only later versions may carry more.
    if version == "00" and match["rest"] is not None:
        return None
    if match["trace_id"] == _INVALID_TRACE_ID or match["parent_id"] == _INVALID_PARENT_ID:
        return None
    return match["trace_id"]


def choose_correlation_id(request_id: str | None, traceparent: str | None) -> str:
    """Incoming X-Request-ID if sane, else the traceparent trace-id, else a new uuid4 hex."""
    if request_id is not None and is_sane_request_id(request_id):
        return request_id
    trace_id = trace_id_from_traceparent(traceparent)
    if trace_id is not None:
        return trace_id
    return uuid.uuid4().hex


def _method_label(method: str) -> str:
    return method if method in _METHOD_LABELS else "OTHER"


def init_app(app: Flask) -> None:
    """Register the correlation-id, metrics and access-log hooks on `app`.

    Call it before other `before_request` hooks are registered, so that the id exists for
    everything that logs during the request.
    """
    from flask import g, request

    @app.before_request
    def _start_request() -> None:
        cid = choose_correlation_id(
            request.headers.get(REQUEST_ID_HEADER), request.headers.get(TRACEPARENT_HEADER)
        )
        g.correlation_id = cid
        g.observability_started = time.perf_counter()
        _CORRELATION_ID.set(cid)

    @app.after_request
    def _finish_request(response: Response) -> Response:
        cid = g.get("correlation_id")
        if cid is not None:
            response.headers[REQUEST_ID_HEADER] = cid
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else _UNMATCHED_ENDPOINT
        method = _method_label(request.method)
        status = str(response.status_code)
        REQUESTS.labels(endpoint=endpoint, method=method, status=status).inc()
        started = g.get("observability_started")
        duration = time.perf_counter() - started if started is not None else None
        if duration is not None:
            REQUEST_LATENCY.labels(endpoint=endpoint).observe(duration)
        # The path only: query strings may carry codes or tokens.
        _access_log.info(
            "%s %s %s",
            method,
            request.path,
            status,
            extra={
                "http_method": method,
                "path": request.path,
                "endpoint": endpoint,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 3) if duration is not None else None,
                "remote_addr": request.remote_addr,
            },
        )
        return response

    @app.teardown_request
    def _end_request(_exc: BaseException | None) -> None:
        # Threads are reused by gthread workers: never let one request's id leak into the next.
        _CORRELATION_ID.set(None)


# --- JSON logging -----------------------------------------------------------------------------
REDACTED = "[REDACTED]"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "correlation_id"}

# Extra keys whose values are credentials whatever they look like.
_SENSITIVE_KEYS = frozenset(
    {
        "access_token", "refresh_token", "id_token", "subject_token", "actor_token",
        "client_secret", "client_assertion", "assertion", "code_verifier", "password",
        "authorization", "dpop", "cookie", "set-cookie", "secret", "token", "private_key",
    }
)
_PARAM_NAMES = (
    r"client_secret|refresh_token|access_token|id_token|subject_token|actor_token"
    r"|client_assertion|assertion|code_verifier|password"
)
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values (RFC 6750 Bearer, RFC 9449 DPoP, RFC 7617 Basic). The length
    # floor keeps prose such as "DPoP proof" or "Bearer token" readable.
    (re.compile(r"\b(Bearer|DPoP)\s+[A-Za-z0-9._~+/-]{16,}=*", re.IGNORECASE), r"\1 " + REDACTED),
    (re.compile(r"\b(Basic)\s+[A-Za-z0-9+/]{8,}=*", re.IGNORECASE), r"\1 " + REDACTED),
    # Form/query parameters and JSON members that carry credentials.
    (re.compile(rf"\b({_PARAM_NAMES})=[^&\s\"',;]+", re.IGNORECASE), r"\1=" + REDACTED),
    (
        re.compile(rf"\"({_PARAM_NAMES})\"\s*:\s*\"[^\"]*\"", re.IGNORECASE),
        r'"\1": "' + REDACTED + '"',
    ),
    # Compact JWS/JWE: a JOSE header starts with base64url('{"') = "eyJ"; 3 or 5 segments.
    (re.compile(r"\beyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2,4}"), REDACTED),
    # Any other three long base64url segments (e.g. a header with leading whitespace).
    (re.compile(r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"), REDACTED),
    # Passwords in connection URLs (scheme://user:password@host), e.g. in driver errors.
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
)


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced by [REDACTED]."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and key.lower() in _SENSITIVE_KEYS:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(None, v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Scrubs credentials from the message, its arguments, `extra` fields and exception text.

    Attach it to a *handler* (as `configure_logging` does): filters on a logger do not see
    records propagated from child loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record or leak args
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, _redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, correlation_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        cid = getattr(record, "correlation_id", None) or correlation_id()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": cid,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_HANDLER_MARK = "_authserver_json_handler"


def configure_logging(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Install the JSON handler (with RedactingFilter) on the root logger; idempotent.

    Calling it again replaces our handler (new level/stream) and leaves other handlers alone.
    `stream` defaults to stderr.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())


__all__ = [
    "GATEWAY_CALLS",
    "GATEWAY_LATENCY",
    "PLATFORM_REFRESHES",
    "POLICY_DECISIONS",
    "REQUESTS",
    "REQUEST_LATENCY",
    "TOKENS_ISSUED",
    "TOKEN_REJECTIONS",
    "JsonFormatter",
    "RedactingFilter",
    "choose_correlation_id",
    "configure_logging",
    "correlation_id",
    "init_app",
    "is_sane_request_id",
    "redact",
    "trace_id_from_traceparent",
]
