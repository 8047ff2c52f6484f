"""DPoP-bound client_credentials (RFC 6749 §4.4 + RFC 9449 §5) at /token under gunicorn.

Stand-alone script, not a test. Usage:

    python bench/bench_token_endpoint.py [--out result.json] [--duration 6] [--workers 5]

Two deployments, each started fresh and torn down afterwards:
  pg-redis   gunicorn -w WORKERS (gthread, gunicorn.conf.py), a new PostgreSQL database, Redis
             db 13 under a random key prefix (the DPoP replay cache and client-assertion cache)
  sqlite     gunicorn -w 1, SQLite file and the embedded (in-process) store

For each: a confidential client registered through DCR (client_secret_basic), then wrk drives
POST /token grant_type=client_credentials at concurrency 4 and 16, with and without a DPoP
proof. Proofs are signed beforehand (distinct jti, htu = the token endpoint, iat = signing
time) and fed to wrk one per request by a Lua script, so the load generator does no crypto.
Reported: requests/s (200s only), p50/p90/p99 latency, and the workers' CPU per request
(utime+stime from /proc, which includes the load's share of everything the worker does).

In-process, the CPU cost of authserver.dpop.validate_proof alone (µs/proof) on the embedded
store and on Redis.
"""

from __future__ import annotations

import argparse
import base64
import logging
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REDIS_URL,
    Gunicorn,
    ProofMaker,
    WrkResult,
    authserver_cli,
    free_port,
    fresh_postgres,
    machine,
    make_proofs,
    print_table,
    proof_budget,
    redis_prefix,
    run_wrk,
    workdir,
    write_result,
)

BODY = "grant_type=client_credentials"
CONCURRENCY = (4, 16)
CALIBRATION_SECONDS = 3
#: First guess at the rate, only to size the calibration run's proofs.
CALIBRATION_RPS_GUESS = 2500
VALIDATE_PROOFS = 3000
IN_PROCESS_REQUESTS = 500
IN_PROCESS_ROUNDS = 4


def register_client(base_url: str) -> tuple[str, str]:
    resp = requests.post(base_url + "/register", json={
        "client_name": "bench", "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
    }, timeout=10)
    resp.raise_for_status()
    body = resp.json()
    return body["client_id"], body["client_secret"]


def check_once(url: str, auth: tuple[str, str], maker: ProofMaker) -> None:
    """One request of each kind before timing: the set-up must be right."""
    with_dpop = requests.post(url, data=BODY, auth=auth, timeout=10, headers={
        "DPoP": make_proofs(maker, url, 1)[0],
        "Content-Type": "application/x-www-form-urlencoded"})
    assert with_dpop.status_code == 200, with_dpop.text
    assert with_dpop.json()["token_type"] == "DPoP", with_dpop.text
    bearer = requests.post(url, data=BODY, auth=auth, timeout=10, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert bearer.status_code == 200, bearer.text
    assert bearer.json()["token_type"] == "Bearer", bearer.text


def drive(server: Gunicorn, auth: tuple[str, str], duration: int, wd: Path
          ) -> list[dict[str, Any]]:
    url = server.base_url + "/token"
    maker = ProofMaker()
    check_once(url, auth, maker)
    import base64

    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}",
               "Content-Type": "application/x-www-form-urlencoded"}

    def lines(dpop: bool, rps: float, seconds: int) -> list[str]:
        count = proof_budget(rps, seconds)
        if not dpop:
            return ["\t" + BODY] * count
        return [f"{p}\t{BODY}" for p in make_proofs(maker, url, count)]

    # Calibration (also the warm-up): sizes the proof batches of the timed runs.
    warm = run_wrk(url, lines(True, CALIBRATION_RPS_GUESS, CALIBRATION_SECONDS),
                   concurrency=max(CONCURRENCY), duration=CALIBRATION_SECONDS, headers=headers,
                   workdir=wd)
    rows = []
    expected = max(warm.rps, 200.0)
    for dpop in (True, False):
        for c in CONCURRENCY:
            # Regenerated per run: every proof is signed just before its run (60 s window).
            result = run_wrk(url, lines(dpop, expected * 1.5, duration),
                             concurrency=c, duration=duration, headers=headers, workdir=wd,
                             server=server)
            expected = max(expected, result.rps)
            rows.append({"dpop": dpop, **_row(result, dpop)})
    return rows


def _row(result: WrkResult, dpop: bool) -> dict[str, Any]:
    row = vars(result).copy()
    if result.bad or (dpop and result.exhausted):
        print(f"  warning: {result.bad} non-200 ({result.exhausted} after running out of "
              f"proofs); first: {result.first_bad}", file=sys.stderr)
    return row


#: The benchmark measures the endpoint, not its throttle: one client from one address sends
#: far more than the default /token budgets (authserver/ratelimit.py) allow.
UNLIMITED = {"limit": 100_000_000, "window": 60}
NO_TOKEN_LIMITS = {"token": UNLIMITED, "token_address": UNLIMITED}


def _no_token_limits(wd: Path) -> str:
    path = wd / "authserver.toml"
    path.write_text("[rate_limits]\n" + "".join(
        f"{name} = {{ limit = {v['limit']}, window = {v['window']} }}\n"
        for name, v in NO_TOKEN_LIMITS.items()), encoding="utf-8")
    return str(path)


def pg_redis_env(wd: Path, port: int, db_url: str, prefix: str) -> dict[str, str]:
    """The environment of the pg-redis deployment (also bench/ab.py's authserver)."""
    return {
        "AUTHSERVER_DATA_DIR": str(wd / "data"),
        "AUTHSERVER_ISSUER": f"http://127.0.0.1:{port}",
        "AUTHSERVER_REDIS_URL": REDIS_URL,
        "AUTHSERVER_REDIS_KEY_PREFIX": prefix,
        "AUTHSERVER_DATABASE_URL": db_url,
        "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(32),
        "AUTHSERVER_CONFIG": _no_token_limits(wd),
    }


def scenario_pg_redis(duration: int, workers: int) -> dict[str, Any]:
    with fresh_postgres() as db_url, redis_prefix() as prefix, workdir() as wd:
        port = free_port()
        env = pg_redis_env(wd, port, db_url, prefix)
        # Migrate once, before the workers race to (`clients list` is read-only now).
        authserver_cli(["db", "upgrade"], env)
        with Gunicorn(port=port, workers=workers, env=env, log_path=wd / "gunicorn.log") as srv:
            auth = register_client(srv.base_url)
            rows = drive(srv, auth, duration, wd)
    return {"name": "pg-redis", "workers": workers, "database": "postgresql", "store": "redis",
            "runs": rows}


def scenario_sqlite(duration: int) -> dict[str, Any]:
    with workdir() as wd:
        port = free_port()
        env = {
            "AUTHSERVER_DATA_DIR": str(wd / "data"),
            "AUTHSERVER_ISSUER": f"http://127.0.0.1:{port}",
            "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(32),
            "AUTHSERVER_CONFIG": _no_token_limits(wd),
        }
        authserver_cli(["db", "upgrade"], env)
        # -w 1: the embedded store is per process (the replay cache must be shared).
        with Gunicorn(port=port, workers=1, env=env, log_path=wd / "gunicorn.log") as srv:
            auth = register_client(srv.base_url)
            rows = drive(srv, auth, duration, wd)
    return {"name": "sqlite-embedded", "workers": 1, "database": "sqlite", "store": "memory",
            "runs": rows}


def validate_proof_cost() -> list[dict[str, Any]]:
    """µs of CPU per authserver.dpop.validate_proof call, proofs signed beforehand."""
    from authserver.dpop import validate_proof
    from authserver.store.memory import MemoryStore
    from authserver.store.redis import RedisStore

    logging.getLogger("authserver.store.memory").setLevel(logging.ERROR)
    url = "http://127.0.0.1:8000/token"
    rows = []
    with redis_prefix() as prefix:
        for name, store in (("memory", MemoryStore()),
                            ("redis", RedisStore.from_url(REDIS_URL, prefix))):
            maker = ProofMaker()
            proofs = make_proofs(maker, url, VALIDATE_PROOFS)
            now = int(time.time())
            for proof in proofs[:100]:  # warm-up (imports, key cache, connection)
                validate_proof([proof], method="POST", url=url, now=now, store=store)
            samples = []
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for proof in proofs[100:]:
                t0 = time.perf_counter_ns()
                validate_proof([proof], method="POST", url=url, now=now, store=store)
                samples.append((time.perf_counter_ns() - t0) / 1000)
            cpu = time.process_time() - cpu_start
            wall = time.perf_counter() - wall_start
            samples.sort()
            n = len(samples)
            rows.append({"store": name, "n": n, "cpu us/proof": cpu / n * 1e6,
                         "wall us/proof": wall / n * 1e6,
                         "p50 us": statistics.median(samples),
                         "p99 us": samples[min(n - 1, round(0.99 * (n - 1)))]})
    return rows


def registered_client_headers(client: Any) -> dict[str, str]:
    """Register a client_credentials client (client_secret_basic) through `client`, a Flask
    test client, and return the headers of its token requests."""
    reg = client.post("/register", json={
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic"}).get_json()
    basic = base64.b64encode(f"{reg['client_id']}:{reg['client_secret']}".encode()).decode()
    return {"Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded"}


def in_process_cost(n: int = IN_PROCESS_REQUESTS) -> list[dict[str, Any]]:
    """CPU per client_credentials request inside one app instance (Flask test client, SQLite,
    embedded store), with and without a DPoP proof: the server-side cost of DPoP at /token
    without HTTP, other processes or the load generator in the measurement."""
    import os

    from authserver import create_app
    from authserver.observability import configure_logging

    rows = []
    with workdir() as wd, open(os.devnull, "w") as devnull:
        issuer = "http://127.0.0.1:8000"
        app = create_app({"issuer": issuer, "data_dir": str(wd / "data"),
                          "secret_key": secrets.token_urlsafe(32),
                          "rate_limits": NO_TOKEN_LIMITS})
        logging.getLogger("authserver.store.memory").setLevel(logging.ERROR)
        configure_logging("INFO", stream=devnull)
        client = app.test_client()
        headers = registered_client_headers(client)
        maker = ProofMaker()
        samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        # Interleaved rounds, the first pair a warm-up; the minimum is the least disturbed.
        for round_ in range(IN_PROCESS_ROUNDS + 1):
            for dpop in (False, True):
                proofs = make_proofs(maker, issuer + "/token", n) if dpop else [None] * n
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for proof in proofs:
                    h = {**headers, "DPoP": proof} if proof else headers
                    resp = client.post("/token", data=BODY, headers=h)
                    assert resp.status_code == 200, resp.get_data(as_text=True)
                if round_:
                    samples[dpop].append(((time.process_time() - cpu0) / n * 1e6,
                                          (time.perf_counter() - wall0) / n * 1e6))
        for dpop, values in samples.items():
            cpus = sorted(v[0] for v in values)
            rows.append({"dpop": dpop, "n": n * len(values), "cpu us/request min": cpus[0],
                         "cpu us/request median": statistics.median(cpus),
                         "wall us/request min": min(v[1] for v in values)})
        configure_logging("INFO")
        app.extensions["authserver"].db.engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=5,
                        help="gunicorn workers for the PostgreSQL + Redis run")
    args = parser.parse_args()
    started = time.monotonic()

    validation = validate_proof_cost()
    print_table("validate_proof alone (in-process, ES256, proofs pre-signed)", validation,
                ["store", "n", "cpu us/proof", "wall us/proof", "p50 us", "p99 us"])

    in_process = in_process_cost()
    print_table("POST /token client_credentials in-process (Flask test client, SQLite, "
                "embedded store)", in_process, ["dpop", "n", "cpu us/request min",
                                                "cpu us/request median",
                                                "wall us/request min"])

    scenarios = [scenario_pg_redis(args.duration, args.workers), scenario_sqlite(args.duration)]
    columns = ["dpop", "concurrency", "rps", "p50_ms", "p90_ms", "p99_ms", "ok", "bad",
               "server_cpu_ms_per_req"]
    for s in scenarios:
        print_table(f"POST /token client_credentials, {s['name']}, gunicorn -w {s['workers']} "
                    f"(gthread), wrk {args.duration}s per row", s["runs"], columns)
    summary = _summary(scenarios)
    for line in summary["notes"]:
        print(line)
    write_result(args.out, {
        "benchmark": "token_endpoint_client_credentials_dpop",
        "machine": machine(),
        "duration_per_run_s": args.duration,
        "validate_proof": validation,
        "in_process_token_endpoint": in_process,
        "scenarios": scenarios,
        "summary": summary,
        "elapsed_s": round(time.monotonic() - started, 1),
    })


def _summary(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    notes = []
    for s in scenarios:
        by = {(r["dpop"], r["concurrency"]): r for r in s["runs"]}
        for c in CONCURRENCY:
            d, b = by[(True, c)], by[(False, c)]
            if d["server_cpu_ms_per_req"] and b["server_cpu_ms_per_req"]:
                extra = d["server_cpu_ms_per_req"] - b["server_cpu_ms_per_req"]
                notes.append(
                    f"{s['name']} c={c}: DPoP {d['rps']:.0f} req/s vs Bearer {b['rps']:.0f} "
                    f"req/s ({(1 - d['rps'] / b['rps']) * 100:.0f}% fewer); worker CPU "
                    f"+{extra:.2f} ms/request with DPoP")
    return {"notes": notes}


if __name__ == "__main__":
    main()
