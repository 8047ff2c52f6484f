"""The gateway's overhead (docs/standards.md A5, issue #18) over a direct call to the platform.

Stand-alone script, not a test. Usage:

    python bench/bench_gateway.py [--duration 5] [--rounds 3] [--workers 2] [--out result.json]

Set-up, as bench/bench_exchange.py's and only through the product's interfaces: the test IdP and
Acme CRM (authserver.testing) on loopback in this process; authserver under gunicorn (gthread,
gunicorn.conf.py) on a fresh PostgreSQL database and Redis (random key prefix); alice connects
the CRM through the user pages. Two clients are created with `authserver clients create`: the
agent (read on crm), which gets capability tokens for `read deal:acme-123`, and an executor
(Part A4), which gets alice's own CRM access token for the direct calls.

Timed with wrk on keep-alive connections, both sides in the same run on the same machine:

    direct   GET <crm>/api/v1/deals/acme-123        Authorization: Bearer <alice's CRM token>
    gateway  GET <issuer>/gateway/crm/deals/acme-123 Authorization: DPoP <capability token>,
             DPoP: one proof per request (with `ath`), all signed before wrk starts

The gateway sends the platform exactly the direct request (same CRM, token, path, Accept), so
"overhead" = gateway - direct is what the gateway adds: proof and token checks, the liveness
reads, the vault decrypt, its own HTTP hop and the audit commit. At each concurrency (1 and 4)
the two alternate for --rounds rounds (direct, gateway, direct, ...) so drift hits both; each
row is the median over the rounds. A fresh capability token (60 s) and proofs per gateway run.
The CRM is a werkzeug server in this process, so its share is the same in both columns.

`--platform gunicorn` runs the CRM under gunicorn instead (bench/crm_app.py, one worker), which
keeps connections alive: wrk's direct calls and the gateway's pool then reuse theirs, as with a
real platform.

`--floor` adds a third side to each round: bench/floor_app.py's bare gateway hop (Flask under
the same gunicorn settings, forwarding the same GET through one urllib3 pool, with alice's CRM
token passed through and no check, read or record), so "floor overhead" = floor - direct is what
one more HTTP hop costs on this stack before any of the gateway's work.

`--stages N` then runs N gateway calls in-process (one app instance, Flask's test client, the
same config, database and Redis; the CRM as above) with a timer of the calling thread's CPU
around each stage of the call (`common.cpu_timed`: waits on PostgreSQL, Redis and the CRM drop
out, their syscalls stay), after a warm-up of 50, and prints µs per call by stage. Stages nest.
`--stages-only` skips the wrk runs; `--pstats PATH` also writes a cProfile (thread CPU clock)
of another N calls there.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import common  # noqa: E402
from bench_exchange import (  # noqa: E402
    FORM,
    HTTP_TIMEOUT,
    Agent,
    configure,
    create_clients,
    crm_callback,
    edge_mint,
    sign_in_and_connect,
)
from common import (  # noqa: E402
    Gunicorn,
    ProofMaker,
    authserver_cli,
    b64url,
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

from authserver.testing.platforms import ADMIN_STATS_PATH  # noqa: E402
from tests.stack import (  # noqa: E402
    AUTHSERVER_AT_PLATFORMS,
    GRANT_TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    compact,
    intent,
)

CONCURRENCY = (1, 4)
PATH = "deals/acme-123"
INTENT = intent("read", "deal:acme-123")
#: wrk's calls per second the proofs are budgeted for (running out shows as non-200).
RPS_BUDGET = 800
#: The same for the floor hop (--floor), which checks no proof: copies of one.
FLOOR_RPS_BUDGET = 5000
#: In-process calls before the stages are timed (--stages).
WARM_UP = 50

# common.run_wrk's script POSTs; both sides here are GETs without a body.
_POST = 'wrk.format("POST", nil, headers, string.sub(line, tab + 1))'
assert _POST in common.WRK_SCRIPT
common.WRK_SCRIPT = common.WRK_SCRIPT.replace(_POST, 'wrk.format("GET", nil, headers)')


def gateway_proofs(maker: ProofMaker, htu: str, token: str, count: int) -> list[str]:
    """DPoP proofs for GET `htu` bound to `token` (RFC 9449 §4.2 `ath`), distinct `jti`s."""
    ath = b64url(hashlib.sha256(token.encode()).digest())
    iat = int(time.time())
    proofs = []
    for serial in range(count):
        claims = {"jti": f"{maker.jkt[:8]}-{iat}-{serial:07d}", "htm": "GET", "htu": htu,
                  "iat": iat, "ath": ath}
        signing_input = f"{maker.header}.{b64url(json.dumps(claims).encode())}"
        proofs.append(
            f"{signing_input}.{b64url(maker.model.sign(signing_input.encode(), maker.key))}")
    return proofs


def exchange(issuer: str, idp: Any, edge: tuple[str, str], agent: Agent, **target: str) -> str:
    """The agent exchange for INTENT (a fresh user assertion each time): `audience=crm` gives a
    capability token, `resource=<CRM API base>` (executor) alice's CRM token."""
    user_assertion = edge_mint(issuer, idp, edge, agent)
    body = urlencode({
        "grant_type": GRANT_TOKEN_EXCHANGE, "client_id": agent.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": agent.assertion(issuer), "subject_token": user_assertion,
        "subject_token_type": TT_ACCESS_TOKEN, "intent": compact(INTENT), **target})
    proof = make_proofs(agent.dpop, issuer + "/token", 1)[0]
    resp = requests.post(issuer + "/token", data=body, timeout=HTTP_TIMEOUT,
                         headers={"DPoP": proof, "Content-Type": FORM})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def start_crm_process(wd: Path, issuer: str, exits: contextlib.ExitStack) -> tuple[str, str]:
    """The CRM under gunicorn (bench/crm_app.py: one worker, kept-alive connections), stopped
    when `exits` closes; returns its URL and authserver's client secret there."""
    import secrets

    port = free_port()
    url, secret = f"http://127.0.0.1:{port}", secrets.token_urlsafe(24)
    exits.enter_context(Gunicorn(
        port=port, workers=1, log_path=wd / "crm.log", app="bench.crm_app:build()",
        ready_path=ADMIN_STATS_PATH, env={
            "BENCH_CRM_URL": url, "BENCH_CRM_CLIENT_ID": AUTHSERVER_AT_PLATFORMS,
            "BENCH_CRM_SECRET": secret, "BENCH_CRM_REDIRECT": crm_callback(issuer)}))
    return url, secret


def stage_targets() -> list[tuple[Any, str, str]]:
    """(namespace, attribute, label) of the gateway call's stages: a module's name where the
    caller looks it up, or a class's method."""
    import authserver.broker.refresh as refresh
    import authserver.gateway as gateway
    import authserver.http.gateway as view
    from authserver.audit import AuditLog
    from authserver.broker.http_session import PlatformCalls
    from authserver.resource import ResourceVerifier

    return [
        (gateway, "handle", "  gateway.handle"),
        (gateway, "verify_capability", "    verify_capability"),
        (ResourceVerifier, "_token_claims", "      capability token: JWS verify + claims"),
        (ResourceVerifier, "_proof", "      DPoP proof (incl. replay SET NX + epoch GET)"),
        (gateway, "_load_rows", "      liveness + client + connection (1 SQL)"),
        (gateway, "check_token_live", "      check_token_live (no SQL)"),
        (gateway, "check_fits_intent", "    check_fits_intent"),
        (gateway, "forward", "    forward"),
        (gateway, "get_access_token", "      get_access_token (vault decrypt)"),
        (refresh, "open_token", "        open_token"),
        (PlatformCalls, "send", "      the platform call (urllib3)"),
        (gateway, "_relay", "      _relay"),
        (AuditLog, "append", "    audit append"),
        (AuditLog, "_lock_head", "      take a shard (1 SQL)"),
        (AuditLog, "_write", "      insert + move head (1 SQL)"),
        (view, "commit", "  commit"),
    ]


def cpu_stages(config_path: Path, gateway_url: str, agent: Agent, token_for: Any,
               n: int, pstats_path: str | None = None) -> list[dict[str, Any]]:
    """CPU µs per in-process gateway call, by stage (see the module docstring)."""
    path = gateway_url.split("://", 1)[1].partition("/")[2]
    base_url = gateway_url[: -len(path)]
    spent: dict[str, int] = {}
    token = token_for()  # one capability token (60 s) serves every call: reads have no count
    # One batch (distinct jtis), signed before the warm-up.
    batch = gateway_proofs(agent.dpop, gateway_url, token, WARM_UP + 2 * n)
    with common.in_process_app(config_path) as app:
        client = app.test_client()

        def calls(proofs: list[str]) -> int:
            started = time.thread_time_ns()
            for proof in proofs:
                resp = client.get("/" + path, base_url=base_url, headers={
                    "Authorization": f"DPoP {token}", "DPoP": proof,
                    "Accept": "application/json"})
                assert resp.status_code == 200, resp.get_data(as_text=True)
            return time.thread_time_ns() - started

        calls(batch[:WARM_UP])  # imports, pools, key ring, caches
        with common.timed_stages(stage_targets(), spent, app):
            total = calls(batch[WARM_UP:WARM_UP + n])
        if pstats_path:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            calls(batch[WARM_UP + n:])
            profiler.disable()
            profiler.dump_stats(pstats_path)
    rows = [{"stage": "everything (test client + request)", "cpu_us": total / n / 1000}]
    labels = [label for _o, _n, label in stage_targets()]
    labels += sorted(k for k in spent if k not in labels)
    rows += [{"stage": label, "cpu_us": spent.get(label, 0) / n / 1000} for label in labels]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="direct/gateway pairs per row")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--platform", choices=("werkzeug", "gunicorn"), default="werkzeug",
                        help="the CRM in this process (closes every connection) or under "
                             "gunicorn (keeps them alive)")
    parser.add_argument("--floor", action="store_true",
                        help="also time bench/floor_app.py's bare gateway hop in each round")
    parser.add_argument("--stages", type=int, default=0, metavar="N",
                        help="then N in-process calls with CPU per stage")
    parser.add_argument("--stages-only", action="store_true", help="skip the wrk runs")
    parser.add_argument("--pstats", help="with --stages: a cProfile of N more calls, here")
    args = parser.parse_args()
    stages: list[dict[str, Any]] = []
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the in-process IdP and CRM
    rows: list[dict[str, Any]] = []
    servers: list[Any] = []
    with fresh_postgres() as db_url, redis_prefix() as prefix, workdir() as wd, \
            contextlib.ExitStack() as exits:
        try:
            port = free_port()
            issuer = f"http://127.0.0.1:{port}"
            crm_at = None
            if args.platform == "gunicorn":
                crm_at = start_crm_process(wd, issuer, exits)
            config_path, settings, servers, idp = configure(wd, issuer, db_url, prefix,
                                                            crm_at=crm_at)
            env = {"AUTHSERVER_CONFIG": str(config_path)}
            agent, executor = Agent(), Agent()
            edge = create_clients(env, agent)  # also migrates and creates the signing key
            executor.client_id = authserver_cli([
                "clients", "create", "--executor", "--allowed-platform", "crm",
                "--allowed-action", "read", "--metadata", json.dumps({
                    "client_name": "bench executor", "token_endpoint_auth_method":
                        "private_key_jwt", "grant_types": [GRANT_TOKEN_EXCHANGE],
                    "jwks": executor.jwks()})], env)["client_id"]
            api_base = settings["platforms"]["crm"]["api_base_url"]
            direct_url, gateway_url = f"{api_base}/{PATH}", f"{issuer}/gateway/crm/{PATH}"
            with Gunicorn(port=port, workers=args.workers, env=env,
                          log_path=wd / "gunicorn.log") as srv:
                sign_in_and_connect(issuer)

                def direct(c: int) -> common.WrkResult:
                    token = exchange(issuer, idp, edge, executor, resource=api_base)
                    return run_wrk(direct_url, ["\t"] * c, concurrency=c, duration=args.duration,
                                   workdir=wd, headers={"Authorization": f"Bearer {token}",
                                                        "Accept": "application/json"})

                def via_gateway(c: int, duration: int) -> common.WrkResult:
                    token = exchange(issuer, idp, edge, agent, audience="crm")
                    proofs = gateway_proofs(agent.dpop, gateway_url, token,
                                            proof_budget(RPS_BUDGET, duration))
                    return run_wrk(gateway_url, [f"{p}\t" for p in proofs], concurrency=c,
                                   duration=duration, workdir=wd, server=srv,
                                   headers={"Authorization": f"DPoP {token}",
                                            "Accept": "application/json"})

                floor = exits.enter_context(Gunicorn(
                    port=free_port(), workers=args.workers, log_path=wd / "floor.log",
                    app="floor_app:app", env={"PYTHONPATH": str(BENCH),
                                              "BENCH_FLOOR_PLATFORM_URL": api_base},
                )) if args.floor else None

                def via_floor(c: int) -> common.WrkResult:
                    assert floor is not None
                    token = exchange(issuer, idp, edge, executor, resource=api_base)
                    # Read, not checked: one proof of the gateway's size serves every call.
                    proof = gateway_proofs(agent.dpop, gateway_url, token, 1)[0]
                    return run_wrk(f"{floor.base_url}/gateway/crm/{PATH}",
                                   [f"{proof}\t"] * proof_budget(FLOOR_RPS_BUDGET, args.duration),
                                   concurrency=c, duration=args.duration, workdir=wd,
                                   server=floor, headers={"Authorization": f"Bearer {token}",
                                                          "Accept": "application/json"})

                if args.stages:
                    stages = cpu_stages(config_path, gateway_url, agent, lambda: exchange(
                        issuer, idp, edge, agent, audience="crm"), args.stages, args.pstats)
                if not args.stages_only:
                    via_gateway(max(CONCURRENCY), 2)  # warm-up: pools and caches
                for c in ([] if args.stages_only else CONCURRENCY):
                    pairs, floors = [], []
                    for _ in range(args.rounds):
                        pairs.append((direct(c), via_gateway(c, args.duration)))
                        if floor is not None:
                            floors.append(via_floor(c))
                    for d, g in pairs:
                        if d.bad or g.bad:
                            print(f"  warning: c={c} non-200: direct {d.bad}, gateway {g.bad} "
                                  f"(first: {d.first_bad or g.first_bad})", file=sys.stderr)
                    for f in floors:
                        if f.bad:
                            print(f"  warning: c={c} non-200: floor {f.bad} "
                                  f"(first: {f.first_bad})", file=sys.stderr)

                    def med(values: list[float]) -> float:
                        return statistics.median(values)

                    row: dict[str, Any] = {
                        "c": c,
                        "direct p50": med([d.p50_ms for d, _ in pairs]),
                        "gateway p50": med([g.p50_ms for _, g in pairs]),
                        "direct p99": med([d.p99_ms for d, _ in pairs]),
                        "gateway p99": med([g.p99_ms for _, g in pairs]),
                        "direct req/s": med([d.rps for d, _ in pairs]),
                        "gateway req/s": med([g.rps for _, g in pairs]),
                        "gateway cpu ms/req": med([g.server_cpu_ms_per_req or 0.0
                                                   for _, g in pairs]),
                        "runs": [{"direct": vars(d), "gateway": vars(g)} for d, g in pairs],
                    }
                    row["overhead p50"] = row["gateway p50"] - row["direct p50"]
                    row["overhead p99"] = row["gateway p99"] - row["direct p99"]
                    if floors:
                        row["floor p50"] = med([f.p50_ms for f in floors])
                        row["floor overhead p50"] = row["floor p50"] - row["direct p50"]
                        row["floor p99"] = med([f.p99_ms for f in floors])
                        row["floor cpu ms/req"] = med([f.server_cpu_ms_per_req or 0.0
                                                       for f in floors])
                        row["runs"] = [{**run, "floor": vars(f)}
                                       for run, f in zip(row["runs"], floors, strict=True)]
                    rows.append(row)
        finally:
            for server in reversed(servers):
                server.stop()
    if rows:
        print_table(f"GET {PATH}: direct to the CRM vs through the gateway, gunicorn -w "
                    f"{args.workers} (gthread) + PostgreSQL + Redis, wrk {args.duration}s per "
                    f"run, "
                    f"median of {args.rounds} alternating rounds (ms)", rows,
                    ["c", "direct p50", "gateway p50", "overhead p50", "direct p99",
                     "gateway p99", "overhead p99", "direct req/s", "gateway req/s",
                     "gateway cpu ms/req",
                     *(["floor p50", "floor overhead p50", "floor p99", "floor cpu ms/req"]
                       if args.floor else [])])
    if stages:
        print(f"\nCPU µs per in-process gateway call, by stage ({args.stages} calls)")
        for stage in stages:
            print(f"{stage['cpu_us']:9.1f}  {stage['stage']}")
    print(f"load average (1, 5, 15 min) at the end: {machine()['loadavg_1_5_15min_at_end']}")
    write_result(args.out, {"benchmark": "gateway_overhead", "machine": machine(),
                            "workers": args.workers, "duration_per_run_s": args.duration,
                            "rounds": args.rounds, "floor": args.floor, "rows": rows,
                            "cpu_stages": stages})


if __name__ == "__main__":
    main()
