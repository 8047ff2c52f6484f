"""Observability: correlation ids (W3C Trace Context §3.2 traceparent), JSON logs, metrics.

Correlation id, per request (the hooks of `authserver.http.observability.init_app`): a sane
incoming `X-Request-ID` is kept, else the trace-id of a valid `traceparent`, else a fresh uuid4
hex. It is stored in `flask.g.correlation_id` and in a contextvar (`correlation_id()`, readable
from core code), and echoed in the `X-Request-ID` response header. The incoming value is
client-controlled: it correlates log lines, it proves nothing and must never be used as a unique
key or a security input.

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

No Flask here: the request hooks are authserver/http/observability.py, which passes each
request's values to `set_correlation_id` and `record_request`. Core modules import this one for
the metrics and `correlation_id()` without pulling in the HTTP layer.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, TextIO

from prometheus_client import Counter, Histogram

from authserver.redaction import REDACTED as REDACTED  # re-exported: one marker
from authserver.redaction import redact_credentials, redact_log_value

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


def method_label(method: str) -> str:
    """The metrics' method label: `method` if it is in a closed set, else OTHER."""
    return method if method in _METHOD_LABELS else "OTHER"


# --- the request hooks' core (the hooks: authserver/http/observability.py) ---------------------
def set_correlation_id(cid: str | None) -> None:
    """Make `cid` the current request's correlation id (None at the end of a request: threads
    are reused by gthread workers, and one request's id must never leak into the next)."""
    _CORRELATION_ID.set(cid)


#: The metric children of each (URL rule, method label, status) seen, bound once: `labels()`
#: validates and looks its arguments up on every call. As bounded as the series themselves
#: (rules are the app's, methods a closed set, statuses the codes we answer with).
_BOUND_REQUEST_METRICS: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _request_metrics(endpoint: str, method: str, status: int) -> tuple[Any, Any]:
    key = (endpoint, method, status)
    bound = _BOUND_REQUEST_METRICS.get(key)
    if bound is None:  # a race binds the same children twice, which is harmless
        bound = (REQUESTS.labels(endpoint=endpoint, method=method, status=str(status)),
                 REQUEST_LATENCY.labels(endpoint=endpoint))
        _BOUND_REQUEST_METRICS[key] = bound
    return bound


def record_request(*, rule: str | None, method: str, path: str, status: int,
                   duration: float | None, remote_addr: str | None) -> None:
    """Count one answered request (REQUESTS, REQUEST_LATENCY by URL rule, `rule` None when no
    route matched) and write its access-log line: the path only, as query strings may carry
    codes or tokens."""
    endpoint = rule if rule is not None else _UNMATCHED_ENDPOINT
    method = method_label(method)
    counter, latency = _request_metrics(endpoint, method, status)
    counter.inc()
    if duration is not None:
        latency.observe(duration)
    if not _access_log.isEnabledFor(logging.INFO):
        return
    _access_log.info(
        "%s %s %s",
        method,
        path,
        status,
        extra={
            "http_method": method,
            "path": path,
            "endpoint": endpoint,
            "status": status,
            "duration_ms": round(duration * 1000, 3) if duration is not None else None,
            "remote_addr": remote_addr,
        },
    )


# --- JSON logging -----------------------------------------------------------------------------
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "correlation_id"}

#: `redact` is the log-line strength of authserver.redaction (one set of patterns, one marker).
redact = redact_credentials


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
        fields = record.__dict__
        for key in [key for key in fields if key not in _RECORD_ATTRS]:
            value = fields[key]
            redacted = redact_log_value(key, value)
            if redacted is not value:  # most fields are plain values that need no copy
                fields[key] = redacted
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_LAST_SECOND: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds, as datetime.isoformat(timespec="milliseconds") writes it;
    the date-time part is formatted once per second (a tuple swap: safe across threads)."""
    global _LAST_SECOND
    fraction, whole = math.modf(created)
    micros, second = round(fraction * 1e6), int(whole)  # datetime.fromtimestamp's rounding
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    millis = micros // 1000
    cached_second, text = _LAST_SECOND
    if cached_second != second:
        text = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _LAST_SECOND = (second, text)
    return f"{text}.{millis:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, correlation_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        cid = getattr(record, "correlation_id", None) or correlation_id()
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
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
    "is_sane_request_id",
    "method_label",
    "record_request",
    "redact",
    "set_correlation_id",
    "trace_id_from_traceparent",
]
