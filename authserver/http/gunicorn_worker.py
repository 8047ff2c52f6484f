"""gunicorn's gthread worker, accepting a connection only while one of its threads is free
(issue 18: the run-to-run spread).

gunicorn's workers share one listening socket, and a gthread worker accepts every connection
it sees. After a burst of connects the first worker to wake takes them all, and kept-alive
clients (wrk, a load balancer's pool of upstream connections) stay where they landed for the
life of the connection. Measured: 8 connections on 2 workers landed 0/8 in one run of the
agent exchange, which then ran at 166 req/s against 245-300 in runs that landed 5/3 and 3/5.

`BalancedThreadWorker` counts the requests it has handed to its threads and not yet finished
(`in_flight`: both happen on the worker's main thread, where gunicorn enqueues a request and
runs its completion) and stops accepting while that count reaches its thread count. New
connections then wait in the kernel's backlog for a worker with a free thread; connections it
already holds are served as before, kept alive or not. Everything else is gthread's.

It balances by free threads, not by connections: when requests finish faster than a burst of
connects arrives (bench/floor_app.py's bare answer, 0.26 ms), a worker frees its threads in
time to take more of the burst (7/1 was seen there), and then it also keeps up with them.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class BalancedThreadWorker(ThreadWorker):
    in_flight = 0

    def enqueue_req(self, conn: Any) -> None:
        self.in_flight += 1
        if self.in_flight >= self.cfg.threads:
            self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        # gunicorn's run loop enables accepting again on its next turn (set_accept_enabled).
        self.in_flight -= 1
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.in_flight < self.cfg.threads)
