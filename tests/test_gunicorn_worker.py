"""authserver.http.gunicorn_worker: a gthread worker accepts a connection only while one of
its threads is free, so a burst of kept-alive connections spreads over the workers instead of
landing on the first one awake (issue 18: the run-to-run spread).

Real gunicorn, two workers of two threads each, serving `tests/gunicorn_pid_app.py` (answers
its worker's pid after `?sleep=` seconds). Connections are raw sockets speaking HTTP/1.1, so
each one stays on the worker that accepted it.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authserver.testing.server import free_port
from tests.process_helpers import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
THREADS = 2
#: Long enough that every connection of a burst is accepted before any request finishes.
SLOW = 1.0
STARTUP_DEADLINE = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [str(gunicorn_bin), "-k", "authserver.http.gunicorn_worker.BalancedThreadWorker",
         "-w", str(WORKERS), "--threads", str(THREADS), "-b", f"127.0.0.1:{port}",
         "--no-control-socket", "tests.gunicorn_pid_app:app"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        _wait_for_every_worker(proc, port)
        yield port
    finally:
        stop_process(proc)
        log.close()


def _get(sock: socket.socket, sleep: float = 0.0) -> int:
    """One request on `sock` (kept alive); the answering worker's pid."""
    sock.sendall(f"GET /?sleep={sleep} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return int(body)


def _wait_for_every_worker(proc: subprocess.Popen[bytes], port: int) -> None:
    """Until each worker has answered once (a worker still importing accepts nothing)."""
    seen: set[int] = set()
    deadline = time.monotonic() + STARTUP_DEADLINE
    while len(seen) < WORKERS:
        assert proc.poll() is None, "gunicorn exited"
        assert time.monotonic() < deadline, f"only {len(seen)} workers answered"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                seen.add(_get(sock))
        except OSError:
            time.sleep(0.1)


def _burst(port: int, connections: int) -> tuple[list[socket.socket], list[int]]:
    """`connections` connections opened at once, each sending one slow request at once."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10)
             for _ in range(connections)]
    pids: list[int] = [0] * connections

    def call(i: int) -> None:
        pids[i] = _get(socks[i], SLOW)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return socks, pids


def test_a_burst_of_connections_spreads_over_the_workers(server: int) -> None:
    socks, pids = _burst(server, WORKERS * THREADS)
    try:
        assert sorted(collections.Counter(pids).values()) == [THREADS] * WORKERS
        # Each connection stays with its worker: the next request on it answers there.
        assert [_get(s) for s in socks] == pids
    finally:
        for s in socks:
            s.close()


def test_connections_beyond_the_threads_wait_and_are_served(server: int) -> None:
    socks, pids = _burst(server, WORKERS * THREADS + 2)
    try:
        assert all(pids) and len(set(pids)) == WORKERS
        assert min(collections.Counter(pids).values()) >= THREADS
    finally:
        for s in socks:
            s.close()
