"""Operations endpoints: liveness (/healthz), readiness (/readyz), Prometheus exposition (/metrics).

/healthz has no dependencies: it answers whenever the worker can serve a request, so an
orchestrator restarts only a wedged process. /readyz runs the checks the app factory registers in
`app.extensions[READY_CHECKS_KEY]` (name -> callable that raises on failure) and answers 503 if
any fails, so a load balancer stops routing to an instance that cannot reach its DB or store;
clients only ever see "ok"/"fail", never exception text.

/metrics is unauthenticated, like most scrape targets: expose it on the internal network only
(keep it off the public ingress). With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn), it aggregates
every worker's values via `MultiProcessCollector`; otherwise it serves this process's registry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

READY_CHECKS_KEY = "authserver.ready_checks"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger(__name__)

ops = Blueprint("ops", __name__)


def _no_store(response: Response) -> Response:
    # Probe and scrape answers describe this instant; no proxy may cache them.
    response.headers["Cache-Control"] = "no-store"
    return response


@ops.get("/healthz")
def healthz() -> Response:
    return _no_store(jsonify(status="ok"))


@ops.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks: Mapping[str, Callable[[], None]] = current_app.extensions.get(READY_CHECKS_KEY, {})
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:
            # Type only: driver messages can hold hosts, SQL or connection-string fragments.
            log.warning(
                "readiness check failed",
                extra={"check": name, "error_type": type(exc).__name__},
            )
            results[name] = "fail"
        else:
            results[name] = "ok"
    if all(result == "ok" for result in results.values()):
        return _no_store(jsonify(status="ready", checks=results)), 200
    return _no_store(jsonify(status="unavailable", checks=results)), 503


@ops.get("/metrics")
def metrics() -> Response:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return _no_store(Response(body, status=200, mimetype=None, content_type=CONTENT_TYPE_LATEST))
