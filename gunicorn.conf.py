"""Gunicorn settings for authserver (`gunicorn -c gunicorn.conf.py wsgi:app`).

Every value can be overridden from the environment:

  AUTHSERVER_BIND             listen address (default 0.0.0.0:8000)
  AUTHSERVER_WORKERS          worker processes (default 2 * usable CPUs + 1, capped at 12)
  AUTHSERVER_THREADS          threads per worker (default 4)
  AUTHSERVER_TIMEOUT          seconds a worker may be silent before it is killed (default 30)
  AUTHSERVER_GRACEFUL_TIMEOUT seconds to finish in-flight requests on shutdown (default 30)
  AUTHSERVER_KEEPALIVE        keep-alive seconds (default 5; set above the LB's idle timeout)
  AUTHSERVER_ACCESS_LOG       "-" for gunicorn's JSON-ish access log on stdout; unset = off,
                              because the app already logs one JSON line per request
                              (logger authserver.access, with the correlation id)
  AUTHSERVER_LOG_LEVEL        gunicorn's own log level (default info)
  FORWARDED_ALLOW_IPS         read by gunicorn itself: the proxies whose X-Forwarded-Proto is
                              trusted (default AUTHSERVER_TRUSTED_PROXIES if set, else
                              127.0.0.1,::1). Set it to the load balancer's addresses. "*" is
                              safe only when nothing but the LB can reach us: otherwise any
                              client can claim https. The client address (X-Forwarded-For) is
                              the app's job (AUTHSERVER_TRUSTED_PROXIES, authserver/http/proxy.py),
                              not gunicorn's; deploy/ sets one list for both.
  PROMETHEUS_MULTIPROC_DIR    enables multiprocess metrics (see authserver/observability.py)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_DEFAULT_WORKERS = 12


def _usable_cpus() -> int:
    # sched_getaffinity honours cpusets (containers); os.cpu_count() reports the host.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def default_workers() -> int:
    return min(2 * _usable_cpus() + 1, MAX_DEFAULT_WORKERS)


bind = [os.environ.get("AUTHSERVER_BIND", "0.0.0.0:8000")]
workers = int(os.environ.get("AUTHSERVER_WORKERS", default_workers()))
# gthread, not sync: token exchange and the gateway wait on the network (IdP JWKS, platform
# refreshes, proxied platform calls). A sync worker blocks entirely on each such wait and on
# slow clients, so a few slow platforms or slowloris clients could take every worker. Threads
# keep a worker serving during I/O waits; the app keeps no per-request state in globals
# (Flask's g / contextvars, per-request DB sessions), and gevent's monkey-patching is avoided.
# gthread as gunicorn ships it, except that a worker accepts a connection only while one of its
# threads is free: a burst of kept-alive connections then spreads over the workers instead of
# landing on the first one awake (authserver/http/gunicorn_worker.py).
worker_class = "authserver.http.gunicorn_worker.BalancedThreadWorker"
threads = int(os.environ.get("AUTHSERVER_THREADS", "4"))
timeout = int(os.environ.get("AUTHSERVER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("AUTHSERVER_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("AUTHSERVER_KEEPALIVE", "5"))
# Each worker opens its own DB pool, Redis client and key ring after fork; nothing with a socket
# or a lock is shared across fork.
preload_app = False
# Heartbeat files on tmpfs: /tmp on an overlay filesystem can stall workers into timeouts
# (gunicorn docs). They hold only a timestamp, so a shared tmpfs is no exposure.
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if Path(_SHM).is_dir() else None

# One list of trusted proxies: gunicorn believes their X-Forwarded-Proto, the app their
# X-Forwarded-For (authserver/http/proxy.py).
if not os.environ.get("FORWARDED_ALLOW_IPS") and os.environ.get("AUTHSERVER_TRUSTED_PROXIES"):
    forwarded_allow_ips = os.environ["AUTHSERVER_TRUSTED_PROXIES"]

accesslog = os.environ.get("AUTHSERVER_ACCESS_LOG") or None
# %(U)s is the path without the query string: queries may carry authorization codes.
access_log_format = (
    '{"ts":"%(t)s","remote":"%(h)s","method":"%(m)s","path":"%(U)s","status":"%(s)s",'
    '"bytes":"%(B)s","duration_us":"%(D)s","request_id":"%({x-request-id}o)s"}'
)
errorlog = "-"
loglevel = os.environ.get("AUTHSERVER_LOG_LEVEL", "info").lower()


def _multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def on_starting(server: Any) -> None:
    """Master, before forking: start multiprocess metrics from an empty directory.

    Files left by a previous run would be summed into the new one's counters.
    """
    directory = _multiproc_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """Master, after a worker exits: drop its live-gauge files (prometheus_client docs)."""
    if _multiproc_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

# gunicorn 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), so two
# servers on one host collide; we do not use it. AUTHSERVER_CONTROL_SOCKET=<path> turns it on.
control_socket_disable = not os.environ.get("AUTHSERVER_CONTROL_SOCKET")
if os.environ.get("AUTHSERVER_CONTROL_SOCKET"):
    control_socket = os.environ["AUTHSERVER_CONTROL_SOCKET"]
