"""Ops endpoints (/healthz, /readyz, /metrics) and the gunicorn settings that serve them."""

from __future__ import annotations

import logging
import os
import runpy
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from authserver.http import observability
from authserver.http.ops import READY_CHECKS_KEY, ops

REPO = Path(__file__).resolve().parent.parent
LEAKY_TEXT = "password authentication failed for user svc at db.internal:5432"


def _ok() -> None:
    return None


def _fail() -> None:
    raise ConnectionError(LEAKY_TEXT)


def _make_app(checks: dict[str, Callable[[], None]] | None) -> Flask:
    app = Flask(__name__)
    observability.init_app(app)
    app.register_blueprint(ops)
    if checks is not None:
        app.extensions[READY_CHECKS_KEY] = checks

    @app.get("/hello")
    def hello() -> str:
        return "hi"

    return app


# --- /healthz ---------------------------------------------------------------------------------
def test_healthz_ok() -> None:
    response = _make_app({"db": _fail}).test_client().get("/healthz")
    # Liveness must not depend on the DB or store: a failing check does not affect it.
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert "X-Request-ID" in response.headers


# --- /readyz ----------------------------------------------------------------------------------
def test_readyz_all_checks_pass() -> None:
    response = _make_app({"db": _ok, "store": _ok}).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"db": "ok", "store": "ok"}}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_failing_check_is_503() -> None:
    response = _make_app({"db": _ok, "store": _fail}).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "checks": {"db": "ok", "store": "fail"}}


def test_readyz_does_not_leak_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        response = _make_app({"db": _fail}).test_client().get("/readyz")
    body = response.get_data(as_text=True)
    assert "password" not in body and "db.internal" not in body
    assert "ConnectionError" not in body
    (record,) = [r for r in caplog.records if r.getMessage() == "readiness check failed"]
    assert record.check == "db"  # type: ignore[attr-defined]
    assert record.error_type == "ConnectionError"  # type: ignore[attr-defined]
    assert LEAKY_TEXT not in caplog.text


def test_readyz_runs_every_check_after_a_failure() -> None:
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        raise RuntimeError("down")

    def second() -> None:
        calls.append("second")

    response = _make_app({"first": first, "second": second}).test_client().get("/readyz")
    assert response.status_code == 503
    assert calls == ["first", "second"]


def test_readyz_without_registered_checks_is_ready() -> None:
    response = _make_app(None).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {}}


# --- /metrics ---------------------------------------------------------------------------------
def test_metrics_exposes_request_counter_with_labels() -> None:
    client = _make_app({}).test_client()
    client.get("/hello")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    body = response.get_data(as_text=True)
    assert "# TYPE authserver_http_requests_total counter" in body
    assert 'authserver_http_requests_total{endpoint="/hello",method="GET",status="200"}' in body
    assert 'authserver_http_request_duration_seconds_bucket{endpoint="/hello",le=' in body
    for name in (
        "authserver_tokens_issued",
        "authserver_token_rejections",
        "authserver_policy_decisions",
        "authserver_platform_refreshes",
        "authserver_gateway_calls",
        "authserver_gateway_call_duration_seconds",
    ):
        assert f"# HELP {name}" in body


_MULTIPROC_SCRIPT = textwrap.dedent(
    """
    from flask import Flask
    from authserver.http import observability
    from authserver.http.ops import ops

    app = Flask("mp")
    observability.init_app(app)
    app.register_blueprint(ops)
    app.add_url_rule("/hello", "hello", lambda: "hi")
    client = app.test_client()
    client.get("/hello")
    client.get("/hello")
    print(client.get("/metrics").get_data(as_text=True))
    """
)


def test_metrics_multiprocess_mode_aggregates_from_directory(tmp_path: Path) -> None:
    # A fresh interpreter: prometheus_client picks its value store at first import.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.run(
        [sys.executable, "-c", _MULTIPROC_SCRIPT], env=env, capture_output=True, text=True,
        check=True,
    )
    assert 'authserver_http_requests_total{endpoint="/hello",method="GET",status="200"} 2.0' in (
        first.stdout
    )
    assert list(tmp_path.glob("counter_*.db"))
    # A second "worker" sees the first one's values through the shared directory.
    second = subprocess.run(
        [sys.executable, "-c", _MULTIPROC_SCRIPT], env=env, capture_output=True, text=True,
        check=True,
    )
    assert 'authserver_http_requests_total{endpoint="/hello",method="GET",status="200"} 4.0' in (
        second.stdout
    )


# --- gunicorn.conf.py -------------------------------------------------------------------------
_GUNICORN_ENV = (
    "AUTHSERVER_BIND", "AUTHSERVER_WORKERS", "AUTHSERVER_ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR"
)


def _load_gunicorn_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in _GUNICORN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(REPO / "gunicorn.conf.py"))


def test_gunicorn_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _load_gunicorn_conf(monkeypatch)
    assert conf["bind"] == ["0.0.0.0:8000"]
    assert conf["worker_class"] == "authserver.http.gunicorn_worker.BalancedThreadWorker"
    assert conf["preload_app"] is False
    assert conf["accesslog"] is None
    assert 1 <= conf["workers"] <= conf["MAX_DEFAULT_WORKERS"]
    assert conf["timeout"] > 0 and conf["graceful_timeout"] > 0


def test_gunicorn_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _load_gunicorn_conf(
        monkeypatch, AUTHSERVER_BIND="127.0.0.1:9001", AUTHSERVER_WORKERS="3",
        AUTHSERVER_ACCESS_LOG="-",
    )
    assert conf["bind"] == ["127.0.0.1:9001"]
    assert conf["workers"] == 3
    assert conf["accesslog"] == "-"


def test_gunicorn_access_log_format_omits_query_string(monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = _load_gunicorn_conf(monkeypatch)["access_log_format"]
    assert "%(U)s" in fmt
    assert "%(r)s" not in fmt and "%(q)s" not in fmt


def test_gunicorn_on_starting_empties_multiproc_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")
    conf = _load_gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(directory))
    conf["on_starting"](SimpleNamespace())
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


def test_gunicorn_on_starting_creates_multiproc_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = tmp_path / "missing" / "prom"
    conf = _load_gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(directory))
    conf["on_starting"](SimpleNamespace())
    assert directory.is_dir()


def test_gunicorn_child_exit_marks_worker_dead(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "gauge_livesum_4242.db").write_bytes(b"")
    (tmp_path / "gauge_livesum_4343.db").write_bytes(b"")
    conf = _load_gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    conf["child_exit"](SimpleNamespace(), SimpleNamespace(pid=4242))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gauge_livesum_4343.db"]
