"""Where one client_credentials + DPoP request spends its CPU, stage by stage, in-process.

Stand-alone script, not a test. Usage:

    .venv/bin/python bench/token_stages.py [--requests 3000] [--rounds 2]

One app instance on a fresh PostgreSQL database and Redis (bench/common.py), driven through
Flask's test client (no HTTP server: bench/ab.py --mode floor measures gunicorn + Flask alone).
Each stage of the token endpoint (authserver/token_endpoint/pipeline.py's steps, the grant's
calls, the request hooks) is wrapped with a timer of the thread's CPU time
(`time.thread_time_ns`, so waits on Redis and PostgreSQL are not counted, their syscalls are),
and the table gives µs per request, after a warm-up round. Stages nest: `pipeline.handle`
contains the steps, `flask wsgi_app` everything. What is left of `flask wsgi_app` after the
named stages is Flask, Werkzeug and the view's response.
"""

from __future__ import annotations

import argparse
import collections
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_token_endpoint import BODY, NO_TOKEN_LIMITS, registered_client_headers
from common import (
    REDIS_URL,
    ProofMaker,
    cpu_timed,
    fresh_postgres,
    make_proofs,
    redis_prefix,
    timed_stages,
    workdir,
)

PIPELINE_STEPS = ("check_body_parameters", "select_grant", "restrict_parameters",
                  "throttle_address", "authenticate_client", "throttle_client",
                  "check_grant_type_allowed")
GRANT_CALLS = ("checked_scope", "requested_resources", "check_dpop", "check_resource_servers",
               "issue_access_token")

spent: collections.Counter[str] = collections.Counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="the first is a warm-up")
    args = parser.parse_args()

    import authserver.grants.client_credentials as grant
    import authserver.http.oauth as view
    import authserver.token_endpoint.pipeline as pipeline
    from authserver import create_app
    from authserver.observability import configure_logging

    targets = [(pipeline, name, name) for name in PIPELINE_STEPS]
    targets += [(grant, name, name) for name in GRANT_CALLS]
    targets += [(view, "token_request", "token_request"), (view, "commit", "commit"),
                (pipeline, "handle", "pipeline.handle (the steps and the grant)")]

    n = args.requests
    with fresh_postgres() as db_url, redis_prefix() as prefix, workdir() as wd, \
            open(os.devnull, "w") as devnull:
        issuer = "http://127.0.0.1:8000"
        app = create_app({"issuer": issuer, "data_dir": str(wd / "data"),
                          "secret_key": secrets.token_urlsafe(32), "rate_limits": NO_TOKEN_LIMITS,
                          "database_url": db_url, "redis_url": REDIS_URL,
                          "redis_key_prefix": prefix})
        configure_logging("INFO", stream=devnull)  # the access log is written, to /dev/null
        client = app.test_client()
        headers = registered_client_headers(client)
        app.wsgi_app = cpu_timed(  # type: ignore[method-assign]
            app.wsgi_app, "flask wsgi_app (the whole request)", spent)
        maker = ProofMaker()
        total = 0
        with timed_stages(targets, spent, app):
            for _ in range(args.rounds):
                proofs = make_proofs(maker, issuer + "/token", n)
                spent.clear()
                started = time.thread_time_ns()
                for proof in proofs:
                    resp = client.post("/token", data=BODY, headers={**headers, "DPoP": proof})
                    assert resp.status_code == 200, resp.get_data(as_text=True)
                total = time.thread_time_ns() - started
        app.extensions["authserver"].db.engine.dispose()
    print(f"client_credentials + DPoP, {n} requests in-process (PostgreSQL + Redis), CPU µs per "
          f"request by stage; load {os.getloadavg()[0]:.1f}")
    print(f"{total / n / 1000:9.1f}  test client + request (everything)")
    for label, ns in spent.most_common():
        print(f"{ns / n / 1000:9.1f}  {label}")


if __name__ == "__main__":
    main()
