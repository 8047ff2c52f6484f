"""Two instances on one host: does client_credentials + DPoP scale with processes, and what
limits it? (issue 18, "Beyond one machine").

Stand-alone script, not a test. Usage:

    .venv/bin/python bench/scale.py [--runs 2] [--duration 8] [--concurrency 8]

One PostgreSQL database and one Redis prefix (bench/common.py), shared as a deployment shares
them, and three layouts of authserver under gunicorn (gunicorn.conf.py, gthread), all started
at once and measured in turn, round-robin, `--runs` times:

  one instance, 1 worker      wrk at c=8 against it
  two instances, 1 worker     wrk at c/2 against each, both at the same time (two load
                              balancer targets on one host)
  one instance, 2 workers     wrk at c=8 (the layout bench/ab.py measures)

Every instance has the same issuer, secret key, database and Redis, so a proof or a token from
one is good at the other, as behind a load balancer. Per layout: the 200s per second (all
instances together), p50/p99, and where the CPU went per request: the gunicorn workers,
redis-server, the PostgreSQL processes, and wrk; then how busy the machine's cores were
(1 - idle, /proc/stat). The cores being full while the workers' CPU per request stays flat is
the answer to "scale as the cores allow".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
from ab import FORM, basic, cc_lines, uptime
from bench_token_endpoint import pg_redis_env, register_client
from common import (
    Gunicorn,
    ProofMaker,
    WrkResult,
    authserver_cli,
    free_port,
    fresh_postgres,
    make_proofs,
    proof_budget,
    redis_prefix,
    run_wrk,
    workdir,
)

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(names: Sequence[str]) -> float:
    """User + system CPU seconds of every process whose command name is in `names`."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            if name in names:
                fields = stat.rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
    return total / TICKS


def machine_busy() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


@contextlib.contextmanager
def instances(env: dict[str, str], wd: Path, layout: Sequence[int]) -> Iterator[list[Gunicorn]]:
    with contextlib.ExitStack() as stack:
        servers = []
        for i, workers in enumerate(layout):
            port = free_port()
            servers.append(stack.enter_context(Gunicorn(
                port=port, workers=workers, env=env, log_path=wd / f"gunicorn-{i}-{port}.log")))
        yield servers


def measure(servers: list[Gunicorn], maker: ProofMaker, htu: str, auth: str, *,
            concurrency: int, duration: int, wd: Path, rate_guess: float) -> dict[str, Any]:
    per = concurrency // len(servers)
    batches = [cc_lines(maker, htu)(proof_budget(rate_guess * 1.3 / len(servers), duration))
               for _ in servers]
    results: list[WrkResult | None] = [None] * len(servers)
    headers = {"Authorization": auth, "Content-Type": FORM}

    def drive(i: int) -> None:
        results[i] = run_wrk(servers[i].base_url + "/token", batches[i], concurrency=per,
                             duration=duration, headers=headers, workdir=wd)

    workers0 = sum(s.cpu_seconds() for s in servers)
    redis0, pg0, wrk0 = process_cpu(("redis-server",)), process_cpu(("postgres",)), \
        children_cpu()
    total0, idle0 = machine_busy()
    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total1, idle1 = machine_busy()
    done = [r for r in results if r is not None]
    requests = sum(r.requests for r in done)
    per_req = 1000 / max(1, requests)
    return {
        "req/s": sum(r.rps for r in done),
        "p50 ms": max(r.p50_ms for r in done), "p99 ms": max(r.p99_ms for r in done),
        "errors": sum(r.bad + r.socket_errors for r in done),
        "workers ms/req": (sum(s.cpu_seconds() for s in servers) - workers0) * per_req,
        "redis ms/req": (process_cpu(("redis-server",)) - redis0) * per_req,
        "postgres ms/req": (process_cpu(("postgres",)) - pg0) * per_req,
        "wrk ms/req": (children_cpu() - wrk0) * per_req,
        "cores busy": (1 - (idle1 - idle0) / max(1, total1 - total0)) * (os.cpu_count() or 1),
    }


LAYOUTS = {"one instance, 1 worker": (1,), "two instances, 1 worker each": (1, 1),
           "one instance, 2 workers": (2,)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(f"start: {uptime()}", flush=True)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in LAYOUTS}
    with fresh_postgres() as db_url, redis_prefix() as prefix, workdir() as wd:
        issuer_port = free_port()
        env = pg_redis_env(wd, issuer_port, db_url, prefix)
        authserver_cli(["db", "upgrade"], env)
        with contextlib.ExitStack() as stack:
            started = {name: stack.enter_context(instances(env, wd, layout))
                       for name, layout in LAYOUTS.items()}
            first = next(iter(started.values()))[0]
            client_id, secret = register_client(first.base_url)
            auth = basic(client_id, secret)
            maker = ProofMaker()
            htu = env["AUTHSERVER_ISSUER"] + "/token"  # the issuer's URL, whichever port
            for servers in started.values():
                for server in servers:  # each answers a proof made for the issuer's URL
                    resp = requests.post(server.base_url + "/token", timeout=10,
                                         data="grant_type=client_credentials", headers={
                                             "Authorization": auth, "Content-Type": FORM,
                                             "DPoP": make_proofs(maker, htu, 1)[0]})
                    assert resp.status_code == 200, resp.text
                    assert resp.json()["token_type"] == "DPoP", resp.text
            for run in range(args.runs + 1):  # the first round warms every instance up
                for name, servers in started.items():
                    row = measure(servers, maker, htu, auth, concurrency=args.concurrency,
                                  duration=args.duration if run else 3, wd=wd,
                                  rate_guess=1500)
                    if run:
                        rows[name].append(row)
                        print(f"  run {run}  {name:30} " + "  ".join(
                            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row.items()), flush=True)
    print(f"\nclient_credentials + DPoP, c={args.concurrency} in all, {args.duration} s per run, "
          f"median of {args.runs}; CPU per request by process; {os.cpu_count()} cores")
    keys = list(next(iter(rows.values()))[0])
    print(f"{'layout':32}" + "".join(f"{k:>16}" for k in keys))
    for name, runs in rows.items():
        print(f"{name:32}" + "".join(
            f"{statistics.median(r[k] for r in runs):16.2f}" for k in keys))
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()
