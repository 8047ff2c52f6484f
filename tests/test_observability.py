"""authserver.observability: correlation ids, JSON logs with redaction, HTTP request metrics."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from flask import Flask, Response, g, jsonify
from prometheus_client import REGISTRY

from authserver.http import observability
from authserver.http.ops import ops
from authserver.observability import (
    GATEWAY_CALLS,
    GATEWAY_LATENCY,
    PLATFORM_REFRESHES,
    POLICY_DECISIONS,
    REDACTED,
    REQUEST_LATENCY,
    REQUESTS,
    TOKEN_REJECTIONS,
    TOKENS_ISSUED,
    RedactingFilter,
    configure_logging,
    correlation_id,
    redact,
    trace_id_from_traceparent,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
# A syntactically real compact JWS (header {"alg":"ES256","typ":"JWT"}); never a live token.
JWT = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJ1c2VyLTEiLCJleHAiOjE4MDAwMDAwMDB9"
    ".MEUCIQDx3Yx0nTqkq2Jm0b9yUpFVh3o8aXk0tZmR1uWq9Pq7fg"
)
OPAQUE = "Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA"

log = logging.getLogger("tests.observability")


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    observability.init_app(app)
    app.register_blueprint(ops)
    app.extensions["authserver.ready_checks"] = {}

    @app.get("/hello")
    def hello() -> Response:
        log.info("hello from the view", extra={"user_ref": "u-1"})
        return jsonify(cid=correlation_id(), g_cid=g.correlation_id)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Response:
        return jsonify(id=item_id)

    @app.get("/boom")
    def boom() -> Response:
        raise RuntimeError("unexpected")

    return app


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("INFO", stream=stream)
    yield stream
    for handler in list(root.handlers):
        if getattr(handler, "_authserver_json_handler", False):
            root.removeHandler(handler)
    root.setLevel(level)


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def _requests(endpoint: str, method: str, status: str) -> float:
    labels = {"endpoint": endpoint, "method": method, "status": status}
    return REGISTRY.get_sample_value("authserver_http_requests_total", labels) or 0.0


# --- correlation id ---------------------------------------------------------------------------
def test_correlation_id_generated_when_none_supplied(app: Flask) -> None:
    response = app.test_client().get("/hello")
    cid = response.headers["X-Request-ID"]
    assert len(cid) == 32 and int(cid, 16) >= 0
    assert response.json == {"cid": cid, "g_cid": cid}


def test_correlation_ids_differ_between_requests(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/hello").headers["X-Request-ID"] != client.get("/hello").headers[
        "X-Request-ID"
    ]


def test_sane_incoming_request_id_kept(app: Flask) -> None:
    response = app.test_client().get("/hello", headers={"X-Request-ID": "edge-1234:abc.DEF_9"})
    assert response.headers["X-Request-ID"] == "edge-1234:abc.DEF_9"
    assert response.json == {"cid": "edge-1234:abc.DEF_9", "g_cid": "edge-1234:abc.DEF_9"}


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param("short", id="too_short"),
        pytest.param("a" * 129, id="too_long"),
        pytest.param("abc def ghi jkl", id="space"),
        pytest.param('req"<script>1234', id="quote_and_markup"),
        pytest.param("req%0d%0aforged-log-line", id="percent_encoded_crlf"),
    ],
)
def test_insane_incoming_request_id_replaced(app: Flask, incoming: str) -> None:
    response = app.test_client().get("/hello", headers={"X-Request-ID": incoming})
    cid = response.headers["X-Request-ID"]
    assert cid != incoming
    assert len(cid) == 32 and int(cid, 16) >= 0


def test_traceparent_trace_id_used_when_no_request_id(app: Flask) -> None:
    response = app.test_client().get("/hello", headers={"traceparent": TRACEPARENT})
    assert response.headers["X-Request-ID"] == TRACE_ID


def test_sane_request_id_wins_over_traceparent(app: Flask) -> None:
    response = app.test_client().get(
        "/hello", headers={"X-Request-ID": "edge-12345678", "traceparent": TRACEPARENT}
    )
    assert response.headers["X-Request-ID"] == "edge-12345678"


def test_traceparent_used_when_request_id_insane(app: Flask) -> None:
    response = app.test_client().get(
        "/hello", headers={"X-Request-ID": "bad id", "traceparent": TRACEPARENT}
    )
    assert response.headers["X-Request-ID"] == TRACE_ID


def test_invalid_traceparent_ignored(app: Flask) -> None:
    response = app.test_client().get(
        "/hello", headers={"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}
    )
    cid = response.headers["X-Request-ID"]
    assert cid != "0" * 32 and len(cid) == 32


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"00-{'0' * 32}-00f067aa0ba902b7-01", id="all_zero_trace_id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="all_zero_parent_id"),
        pytest.param(f"ff-{TRACE_ID}-00f067aa0ba902b7-01", id="version_ff"),
        pytest.param(f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", id="uppercase_hex"),
        pytest.param(f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", id="version_00_extra_field"),
        pytest.param(f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01", id="short_trace_id"),
        pytest.param(f"00_{TRACE_ID}_00f067aa0ba902b7_01", id="wrong_separator"),
        pytest.param("00-" + "a" * 600, id="oversized"),
        pytest.param("", id="empty"),
    ],
)
def test_trace_id_from_invalid_traceparent_is_none(value: str) -> None:
    assert trace_id_from_traceparent(value) is None


def test_trace_id_from_future_version_with_extra_field() -> None:
    assert trace_id_from_traceparent(f"01-{TRACE_ID}-00f067aa0ba902b7-01-future") == TRACE_ID


def test_correlation_id_none_outside_and_after_request(app: Flask) -> None:
    assert correlation_id() is None
    app.test_client().get("/hello", headers={"X-Request-ID": "edge-12345678"})
    assert correlation_id() is None


def test_unhandled_error_response_still_carries_request_id(app: Flask) -> None:
    before = _requests("/boom", "GET", "500")
    response = app.test_client().get("/boom", headers={"X-Request-ID": "edge-12345678"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "edge-12345678"
    assert _requests("/boom", "GET", "500") == before + 1


def test_importing_observability_does_not_import_flask() -> None:
    code = "import sys, authserver.observability; sys.exit('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- JSON logs --------------------------------------------------------------------------------
def test_json_log_lines_carry_correlation_id_and_extras(
    app: Flask, log_stream: io.StringIO
) -> None:
    app.test_client().get("/hello", headers={"X-Request-ID": "edge-12345678"})
    lines = _json_lines(log_stream)
    view_line = next(line for line in lines if line["message"] == "hello from the view")
    assert view_line["correlation_id"] == "edge-12345678"
    assert view_line["level"] == "INFO"
    assert view_line["logger"] == "tests.observability"
    assert view_line["user_ref"] == "u-1"
    assert isinstance(view_line["ts"], str) and view_line["ts"].endswith("+00:00")
    access_line = next(line for line in lines if line["logger"] == "authserver.access")
    assert access_line["correlation_id"] == "edge-12345678"
    assert access_line["endpoint"] == "/hello"
    assert access_line["status"] == 200


def test_access_log_omits_query_string(app: Flask, log_stream: io.StringIO) -> None:
    app.test_client().get("/hello?code=SplxlOBeZQQYbYS6WxSbIA")
    assert "SplxlOBeZQQYbYS6WxSbIA" not in log_stream.getvalue()


def test_log_line_outside_request_has_null_correlation_id(log_stream: io.StringIO) -> None:
    log.warning("no request here")
    (line,) = [line for line in _json_lines(log_stream) if line["message"] == "no request here"]
    assert line["correlation_id"] is None


def test_configure_logging_is_idempotent(log_stream: io.StringIO) -> None:
    configure_logging("DEBUG", stream=log_stream)
    configure_logging("INFO", stream=log_stream)
    ours = [
        h for h in logging.getLogger().handlers if getattr(h, "_authserver_json_handler", False)
    ]
    assert len(ours) == 1
    log.info("once")
    assert [line["message"] for line in _json_lines(log_stream)].count("once") == 1


# --- redaction --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param(f"subject token {JWT} rejected", JWT, id="jwt"),
        pytest.param(f"Authorization: Bearer {OPAQUE}", OPAQUE, id="bearer"),
        pytest.param(f"Authorization: DPoP {JWT}", JWT, id="dpop"),
        pytest.param("Authorization: Basic Y2xpZW50OnMzY3JldA==", "Y2xpZW50OnMz", id="basic"),
        pytest.param("grant_type=x&client_secret=s3cret-val&scope=a", "s3cret-val", id="secret"),
        pytest.param("refresh_token=rt-abc123&x=1", "rt-abc123", id="refresh_token_param"),
        pytest.param("access_token=at-xyz789 done", "at-xyz789", id="access_token_param"),
        pytest.param('{"access_token": "at-xyz789", "x": 1}', "at-xyz789", id="json_member"),
        pytest.param(
            "connect postgresql://svc:hunter2@db:5432/app failed", "hunter2", id="url_password"
        ),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "DPoP proof rejected: htm mismatch",
        "Bearer token missing",
        "logger authserver.http.ops ready",
        "client_id=agent-1 grant_type=refresh_token",
    ],
)
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


def _filtered(record: logging.LogRecord) -> logging.LogRecord:
    assert RedactingFilter().filter(record) is True
    return record


def test_filter_redacts_message_arguments() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "token %s from %s", (JWT, "a"), None)
    assert _filtered(record).getMessage() == f"token {REDACTED} from a"


def test_filter_redacts_sensitive_extra_keys_and_values() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    record.__dict__.update(
        client_secret="plain-looking",
        headers={"Authorization": f"Bearer {OPAQUE}", "Accept": "application/json"},
        note=f"saw {JWT}",
    )
    fields = vars(_filtered(record))
    assert fields["client_secret"] == REDACTED
    assert fields["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert fields["note"] == f"saw {REDACTED}"


def test_filter_redacts_exception_text(log_stream: io.StringIO) -> None:
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        log.exception("exchange failed")
    assert JWT not in log_stream.getvalue()
    (line,) = [line for line in _json_lines(log_stream) if line["message"] == "exchange failed"]
    assert REDACTED in str(line["exc"])


def test_handler_redacts_child_logger_records(log_stream: io.StringIO) -> None:
    logging.getLogger("authserver.some.child").warning("got Bearer %s", OPAQUE)
    assert OPAQUE not in log_stream.getvalue()
    assert f"Bearer {REDACTED}" in log_stream.getvalue()


# --- metrics ----------------------------------------------------------------------------------
def test_request_counted_by_url_rule_not_raw_path(app: Flask) -> None:
    before = _requests("/items/<int:item_id>", "GET", "200")
    count_before = (
        REGISTRY.get_sample_value(
            "authserver_http_request_duration_seconds_count", {"endpoint": "/items/<int:item_id>"}
        )
        or 0.0
    )
    client = app.test_client()
    client.get("/items/42")
    assert _requests("/items/<int:item_id>", "GET", "200") == before + 1
    count_after = REGISTRY.get_sample_value(
        "authserver_http_request_duration_seconds_count", {"endpoint": "/items/<int:item_id>"}
    )
    assert count_after == count_before + 1
    body = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/items/<int:item_id>",method="GET",status="200"' in body
    assert "/items/42" not in body


def test_unmatched_path_counted_under_one_label(app: Flask) -> None:
    before = _requests("<unmatched>", "GET", "404")
    client = app.test_client()
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    assert _requests("<unmatched>", "GET", "404") == before + 2
    assert "/no/such/path" not in client.get("/metrics").get_data(as_text=True)


def test_unknown_method_counted_as_other(app: Flask) -> None:
    # A 405 matched no rule, so its endpoint is <unmatched> too.
    before = _requests("<unmatched>", "OTHER", "405")
    app.test_client().open("/hello", method="PROPFIND")
    assert _requests("<unmatched>", "OTHER", "405") == before + 1


@pytest.mark.parametrize(
    ("metric", "labels", "name"),
    [
        (REQUESTS, {"endpoint": "e", "method": "GET", "status": "200"}, "http_requests"),
        (TOKENS_ISSUED, {"grant_type": "g", "token_type": "t"}, "tokens_issued"),
        (TOKEN_REJECTIONS, {"grant_type": "g", "error": "e"}, "token_rejections"),
        (POLICY_DECISIONS, {"outcome": "o", "reason": "r"}, "policy_decisions"),
        (PLATFORM_REFRESHES, {"platform": "p", "outcome": "o"}, "platform_refreshes"),
        (GATEWAY_CALLS, {"platform": "p", "method": "GET", "status": "200"}, "gateway_calls"),
    ],
)
def test_counter_names_and_labels(metric: object, labels: dict[str, str], name: str) -> None:
    exposed_name = f"authserver_{name}_total"
    before = REGISTRY.get_sample_value(exposed_name, labels) or 0.0
    metric.labels(**labels).inc()  # type: ignore[attr-defined]
    assert REGISTRY.get_sample_value(exposed_name, labels) == before + 1


@pytest.mark.parametrize(
    ("metric", "labels", "exposed_name"),
    [
        (REQUEST_LATENCY, {"endpoint": "e"}, "authserver_http_request_duration_seconds_count"),
        (GATEWAY_LATENCY, {"platform": "p"}, "authserver_gateway_call_duration_seconds_count"),
    ],
)
def test_histogram_names_and_labels(
    metric: object, labels: dict[str, str], exposed_name: str
) -> None:
    before = REGISTRY.get_sample_value(exposed_name, labels) or 0.0
    metric.labels(**labels).observe(0.01)  # type: ignore[attr-defined]
    assert REGISTRY.get_sample_value(exposed_name, labels) == before + 1


def test_metric_with_wrong_label_names_rejected() -> None:
    with pytest.raises(ValueError):
        TOKENS_ISSUED.labels(grant_type="g", client_id="c")
