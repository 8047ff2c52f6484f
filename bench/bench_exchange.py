"""Agent token exchange (RFC 8693 + RFC 9449, Part A1/A4 intent → capability) under gunicorn.

Stand-alone script, not a test. Usage:

    python bench/bench_exchange.py [--out result.json] [--duration 8] [--workers 5]
                                   [--profile-n 300] [--profile-only] [--pstats FILE]
                                   [--profile-clock wall|cpu]
                                   [--database direct|no-prepare|pgbouncer]
                                   [--pgbouncer-pool 10]

Set-up, only through the product's interfaces: the test IdP and Acme CRM
(authserver.testing) on loopback in this process; authserver under gunicorn (gthread,
gunicorn.conf.py) with a TOML config (AUTHSERVER_CONFIG) on a fresh PostgreSQL database and
Redis db 13 under a random key prefix; the edge and the agent created with
`authserver clients create` (--trusted-edge; --allowed-platform crm --allowed-action read);
alice signs in at the IdP and connects the CRM through /connections/crm/connect (login_hint, no
browser); the edge mints her user assertion (5 min) bound to the agent's DPoP key.

Timed: the agent's exchange (private_key_jwt + DPoP proof + `intent` read deal:acme-123,
audience=crm → 200 capability token), with every DPoP proof and client assertion signed
beforehand and fed to wrk one per request, at concurrency 4 and 16. The per-user and per-agent
rate limits are raised in the config so they count (Redis INCRs still run) but do not refuse.

Profiled: one app instance in-process (create_app + Flask test client, same config, database
and Redis) for --profile-n sequential exchanges: unprofiled latency and CPU per exchange
(process_time over the loop, and each request's thread_time, whose median a garbage collection
or a preemption hardly moves), then CPU µs per stage (thread_time around each, no profiler),
then under cProfile (wall clock, or --profile-clock cpu: waits left out) as time per exchange
by stage and self time by component. --profile-only skips the wrk runs.

`--database`: how the server reaches the fresh database. `direct` (the default) connects to
PostgreSQL; `no-prepare` too, with `?prepare_threshold=none` (psycopg prepares nothing
server-side, as PgBouncer's transaction mode needs: that setting's own cost); `pgbouncer`
goes through a PgBouncer of its own in transaction mode (tests/pgbouncer_helpers.py) with
`--pgbouncer-pool` server connections, and `?prepare_threshold=none` (docs/operating.md,
"Scaling out"). pg_stat_activity is sampled on PostgreSQL itself either way.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import pstats
import secrets
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import ECKey

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from common import (  # noqa: E402
    REDIS_URL,
    Gunicorn,
    ProofMaker,
    authserver_cli,
    free_port,
    fresh_postgres,
    in_process_app,
    machine,
    make_proofs,
    print_table,
    proof_budget,
    redis_prefix,
    run_wrk,
    timed_stages,
    workdir,
    write_result,
)

from tests.stack import (  # noqa: E402
    AUTHSERVER_AT_IDP,
    AUTHSERVER_AT_PLATFORMS,
    EDGE_AT_IDP,
    GRANT_TOKEN_EXCHANGE,
    IDP_NAME,
    TT_ACCESS_TOKEN,
    TT_ID_TOKEN,
    TT_JWT,
    compact,
    intent,
    mandate,
    platform_settings,
)

USERNAME = "alice"
CONCURRENCY = (4, 16)
CALIBRATION_SECONDS = 3
CALIBRATION_RPS_GUESS = 600
ASSERTION_LIFETIME = 120
UNLIMITED = {"limit": 100_000_000, "window": 60}
HTTP_TIMEOUT = 30
QUIESCE_SECONDS = 2
LOCK_SAMPLE_INTERVAL = 0.05
FORM = "application/x-www-form-urlencoded"


# --- set-up ---------------------------------------------------------------------------------------


def toml(value: Mapping[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for the config (strings, numbers, bools, string lists, tables)."""
    scalars, tables = [], []
    for key, item in value.items():
        name = json.dumps(key)
        if isinstance(item, Mapping):
            tables.append(toml(item, f"{prefix}{name}."))
        elif isinstance(item, bool):
            scalars.append(f"{name} = {'true' if item else 'false'}")
        else:  # str, int, list of str: JSON spelling is valid TOML for these
            scalars.append(f"{name} = {json.dumps(item)}")
    head = f"[{prefix[:-1]}]\n" if prefix else ""
    return head + "".join(s + "\n" for s in scalars) + "\n" + "".join(tables)


class Agent:
    """The agent: a registered private_key_jwt key and a separate DPoP key."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"})
        self.kid = self.key.thumbprint()
        self.client_id = ""
        self.dpop = ProofMaker()
        self._serial = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "kid": self.kid}]}

    def assertion(self, issuer: str, lifetime: int = ASSERTION_LIFETIME) -> str:
        self._serial += 1
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": issuer, "iat": now,
                  "exp": now + lifetime, "jti": f"{secrets.token_hex(6)}-{self._serial}"}
        return jwt.encode({"alg": "ES256", "kid": self.kid}, claims, self.key)


def exchange_body(agent: Agent, issuer: str, user_assertion: str) -> str:
    return urlencode({
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "client_id": agent.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": agent.assertion(issuer),
        "subject_token": user_assertion,
        "subject_token_type": TT_ACCESS_TOKEN,
        "audience": "crm",
        "intent": compact(intent()),
    })


def exchange_lines(agent: Agent, issuer: str, user_assertion: str, count: int) -> list[str]:
    proofs = make_proofs(agent.dpop, issuer + "/token", count)
    return [f"{p}\t{exchange_body(agent, issuer, user_assertion)}" for p in proofs]


def csrf(page: str) -> str:
    from authserver.demo.browser import csrf_from

    return csrf_from(page)


def sign_in_and_connect(issuer: str) -> None:
    """alice signs in at the IdP and connects the CRM (test IdP/CRM honour login_hint)."""
    browser = requests.Session()
    page = browser.get(issuer + "/login", timeout=HTTP_TIMEOUT)
    resp = browser.post(issuer + f"/login/{IDP_NAME}", data={
        "csrf_token": csrf(page.text), "next": "/connections", "login_hint": USERNAME,
    }, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200 and urlsplit(resp.url).path == "/connections", resp.url
    resp = browser.post(issuer + "/connections/crm/connect", data={
        "csrf_token": csrf(resp.text), "login_hint": USERNAME}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200 and urlsplit(resp.url).path == "/connections", resp.url


def edge_mint(issuer: str, idp: Any, edge: tuple[str, str], agent: Agent) -> str:
    id_token = idp.mint_id_token(USERNAME, aud=EDGE_AT_IDP)
    resp = requests.post(issuer + "/token", auth=edge, timeout=HTTP_TIMEOUT, data={
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": id_token,
        "subject_token_type": TT_ID_TOKEN,
        "actor_token": agent.assertion(issuer),
        "actor_token_type": TT_JWT,
        "dpop_jkt": agent.dpop.jkt,
        "authorization_details": compact(mandate()),
    })
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def configure(wd: Path, issuer: str, db_url: str, prefix: str,
              crm_at: tuple[str, str] | None = None
              ) -> tuple[Path, dict[str, Any], list[Any], Any]:
    """The IdP (and the CRM, unless `crm_at` gives a running one's URL and authserver's client
    secret there) in this process, and the server's config file."""
    from authserver.testing.crm import start_crm
    from authserver.testing.idp import start_idp

    idp, idp_url, idp_server = start_idp()
    servers = [idp_server]
    idp_secret, edge_idp_secret = (secrets.token_urlsafe(24) for _ in range(2))
    idp.register_client(AUTHSERVER_AT_IDP, idp_secret, [f"{issuer}/login/{IDP_NAME}/callback"])
    idp.register_client(EDGE_AT_IDP, edge_idp_secret, ["http://127.0.0.1/edge/oidc/callback"])
    if crm_at is None:
        crm, crm_url, crm_server = start_crm()
        servers.append(crm_server)
        crm_secret = secrets.token_urlsafe(24)
        crm.register_client(AUTHSERVER_AT_PLATFORMS, crm_secret, [crm_callback(issuer)])
    else:
        crm_url, crm_secret = crm_at
    settings: dict[str, Any] = {
        "issuer": issuer,
        "data_dir": str(wd / "data"),
        "database_url": db_url,
        "redis_url": REDIS_URL,
        "redis_key_prefix": prefix,
        "secret_key": secrets.token_urlsafe(32),
        "admin_token": secrets.token_urlsafe(32),
        "idps": {IDP_NAME: {
            "issuer": idp_url, "client_id": AUTHSERVER_AT_IDP, "client_secret": idp_secret,
            "scopes": ["openid", "email", "profile"], "trusted_audiences": [EDGE_AT_IDP],
            "default_tenant": "acme",
        }},
        "platforms": {"crm": platform_settings(crm_url, crm_secret, "http://127.0.0.1:9",
                                               "unused")["crm"]},
        "rate_limits": {"read": UNLIMITED, "agent": UNLIMITED, "token": UNLIMITED,
                        "token_address": UNLIMITED},
    }
    path = wd / "authserver.toml"
    path.write_text(toml(settings))
    return path, settings, servers, idp


def crm_callback(issuer: str) -> str:
    return f"{issuer}/connections/crm/callback"


def create_clients(env: Mapping[str, str], agent: Agent) -> tuple[str, str]:
    edge = authserver_cli(["clients", "create", "--trusted-edge", "--metadata", json.dumps({
        "client_name": "bench edge", "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": [GRANT_TOKEN_EXCHANGE]})], env)
    created = authserver_cli([
        "clients", "create", "--allowed-platform", "crm", "--allowed-action", "read",
        "--metadata", json.dumps({
            "client_name": "bench agent", "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": [GRANT_TOKEN_EXCHANGE], "jwks": agent.jwks()})], env)
    agent.client_id = created["client_id"]
    return edge["client_id"], edge["client_secret"]


class LockSampler:
    """Samples pg_stat_activity of the bench database while a run is under way: how many
    backends are busy and how many of those wait for a lock (the audit chain head row)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        name = self.db_url.rsplit("/", 1)[1]
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while not self._stop.wait(LOCK_SAMPLE_INTERVAL):
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE state <> 'idle'), "
                    "count(*) FILTER (WHERE wait_event_type = 'Lock') FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()
                assert row is not None
                self.samples.append((int(row[0]), int(row[1])))

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {"pg_busy_backends_mean": statistics.fmean(s[0] for s in self.samples),
                "pg_lock_waiters_mean": statistics.fmean(s[1] for s in self.samples),
                "pg_lock_waiters_max": max(s[1] for s in self.samples)}


# --- load -----------------------------------------------------------------------------------------


def load(srv: Gunicorn, agent: Agent, user_assertion: str, duration: int, wd: Path,
         db_url: str) -> list[dict[str, Any]]:
    issuer, url = srv.base_url, srv.base_url + "/token"
    first = requests.post(url, data=exchange_body(agent, issuer, user_assertion),
                          headers={"DPoP": make_proofs(agent.dpop, url, 1)[0],
                                   "Content-Type": FORM}, timeout=HTTP_TIMEOUT)
    assert first.status_code == 200, first.text
    assert first.json()["token_type"] == "DPoP", first.text
    headers = {"Content-Type": FORM}
    warm = run_wrk(url, exchange_lines(agent, issuer, user_assertion,
                                       proof_budget(CALIBRATION_RPS_GUESS, CALIBRATION_SECONDS)),
                   concurrency=max(CONCURRENCY), duration=CALIBRATION_SECONDS,
                   headers=headers, workdir=wd)
    expected = max(warm.rps, 50.0)
    rows = []
    for c in CONCURRENCY:
        lines = exchange_lines(agent, issuer, user_assertion,
                               proof_budget(expected * 1.5, duration))
        with LockSampler(db_url) as sampler:
            result = run_wrk(url, lines, concurrency=c, duration=duration, headers=headers,
                             workdir=wd, server=srv)
        expected = max(expected, result.rps)
        if result.bad:
            print(f"  warning: {result.bad} non-200 ({result.exhausted} after running out of "
                  f"proofs); first: {result.first_bad}", file=sys.stderr)
        rows.append({**vars(result), **sampler.summary()})
    return rows


def audit_check(issuer: str, admin_token: str) -> dict[str, Any]:
    # wrk returns while up to `concurrency` exchanges are still in flight (each appends to the
    # chain); verify once they are done.
    time.sleep(QUIESCE_SECONDS)
    resp = requests.get(issuer + "/admin/audit/verify", timeout=120,
                        headers={"Authorization": f"Bearer {admin_token}"})
    resp.raise_for_status()
    return dict(resp.json())


# --- profile --------------------------------------------------------------------------------------

#: Stages of one agent exchange, as (file suffix, function) → label; inclusive time.
STAGES = [
    (("app.py", "wsgi_app"), "whole request (Flask WSGI app)"),
    (("token_exchange/__init__.py", "issue"), "token exchange grant (incl. audit)"),
    (("client_auth.py", "_private_key_jwt"), "client auth: private_key_jwt (DB + verify + replay)"),
    (("dpop.py", "validate_proof"), "DPoP proof validation (incl. replay SET NX)"),
    (("token_exchange/agent.py", "check_subject_assertion"), "user assertion: verify + revocation"),
    (("token_exchange/agent.py", "check_intent"), "intent parse"),
    (("policy.py", "decide"), "Cedar policy decision"),
    (("token_exchange/agent.py", "check_rate_limit"), "rate limits (Redis INCR x2)"),
    (("token_exchange/agent.py", "check_connection"), "connection lookup (DB)"),
    (("tokens.py", "issue_access_token"), "capability token: build + ES256 sign"),
    (("token_exchange/outcome.py", "_audit"), "audit append (own transaction, chained)"),
    (("http/oauth.py", "_commit"), "request commit"),
]

COMPONENTS = {
    "sqlalchemy": "DB: SQLAlchemy",
    "psycopg": "DB: psycopg (incl. waits on PostgreSQL)",
    "psycopg_binary": "DB: psycopg (incl. waits on PostgreSQL)",
    "psycopg_pool": "DB: psycopg (incl. waits on PostgreSQL)",
    "redis": "Redis client (incl. waits)",
    "cedarpy": "Cedar (cedarpy)",
    "joserfc": "JOSE: joserfc (+ ECDSA in cryptography)",
    "cryptography": "JOSE: joserfc (+ ECDSA in cryptography)",
    "flask": "Flask / Werkzeug / Authlib",
    "werkzeug": "Flask / Werkzeug / Authlib",
    "authlib": "Flask / Werkzeug / Authlib",
    "authserver": "authserver's own code",
    "prometheus_client": "metrics (prometheus_client)",
}


def _component(filename: str) -> str | None:
    if filename == "~":
        return None
    if "site-packages/" in filename:
        pkg = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        return COMPONENTS.get(pkg, f"other: {pkg}")
    if "/authserver/" in filename and "/bench/" not in filename:
        return COMPONENTS["authserver"]
    if "/bench/" in filename:
        return "benchmark driver (test client)"
    return "stdlib: " + Path(filename).stem


def component_times(stats: pstats.Stats) -> dict[str, float]:
    """Self time by component; a builtin's time goes to its callers' components."""
    raw = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tt, _ct, callers) in raw.items():
        comp = _component(filename)
        if comp is not None:
            totals[comp] += tt
            continue
        shares = {c: v[2] for c, v in callers.items()}
        total_share = sum(shares.values())
        if not total_share:
            totals["builtins (no caller)"] += tt
            continue
        for (cfile, _cl, _cn), share in shares.items():
            totals[_component(cfile) or "builtins"] += tt * share / total_share
    return dict(totals)


def cpu_stage_targets() -> list[tuple[Any, str, str]]:
    """(namespace, attribute, label) of the exchange's stages, for CPU timing without a
    profiler: a module's name where the caller looks it up, or a class's method."""
    import authserver.client_auth as client_auth
    import authserver.grants.token_exchange as grant
    import authserver.grants.token_exchange.agent as agent
    import authserver.grants.token_exchange.exchange as exchange
    import authserver.http.oauth as view
    import authserver.token_endpoint.pipeline as pipeline
    from authserver.grants.token_exchange.agent import AgentExchange
    from authserver.grants.token_exchange.outcome import ExchangeAudit

    return [
        (view, "token_request", "view: token_request (form, TokenRequest)"),
        (pipeline, "handle", "pipeline.handle (steps + grant)"),
        (pipeline, "throttle_address", "  pipeline: throttle_address (Redis)"),
        (client_auth, "_private_key_jwt", "  client auth: private_key_jwt"),
        (client_auth, "_client_keys", "    client keys (JWKS import)"),
        (client_auth, "_verify_client_assertion", "    client assertion: JWS verify"),
        (pipeline, "throttle_client", "  pipeline: throttle_client (Redis)"),
        (grant.TokenExchangeGrant, "issue", "  grant.issue (incl. audit)"),
        (agent, "check_dpop", "    DPoP proof (incl. replay SET NX)"),
        (exchange, "verify_access_token", "    user assertion: verify_access_token"),
        (exchange, "check_token_live", "    user assertion: check_token_live (1 SQL)"),
        (AgentExchange, "check_delegation", "    check_delegation"),
        (AgentExchange, "check_intent", "    intent parse"),
        (AgentExchange, "subject_mandate", "    mandate parse"),
        (AgentExchange, "check_policy", "    Cedar policy decision"),
        (AgentExchange, "check_rate_limit", "    rate limits (Redis)"),
        (AgentExchange, "check_connection", "    connection lookup (SQL)"),
        (agent, "issue_access_token", "    capability token: build + sign"),
        (ExchangeAudit, "_audit", "    audit append (2 SQL)"),
        (view, "commit", "view: commit"),
    ]


def cpu_stages(client: Any, batch: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """CPU µs per exchange by stage (time.thread_time_ns around each, no profiler): waits on
    PostgreSQL and Redis drop out, their syscalls stay. Stages nest (indented)."""
    spent: dict[str, int] = defaultdict(int)
    with timed_stages(cpu_stage_targets(), spent):
        started = time.thread_time_ns()
        for proof, body in batch:
            resp = client.post("/token", data=body, headers={"DPoP": proof, "Content-Type": FORM})
            assert resp.status_code == 200
        total = time.thread_time_ns() - started
    n = len(batch)
    rows = [{"stage": "everything (test client + request)", "cpu_us": total / n / 1000}]
    rows += [{"stage": label, "cpu_us": spent[label] / n / 1000}
             for _o, _n, label in cpu_stage_targets()]
    return rows


def profile(config_path: Path, agent: Agent, user_assertion: str, n: int,
            pstats_path: str | None = None, cpu_clock: bool = False) -> dict[str, Any]:
    with in_process_app(config_path) as app:
        return _profile(app, agent, user_assertion, n, pstats_path, cpu_clock)


def _profile(app: Any, agent: Agent, user_assertion: str, n: int, pstats_path: str | None,
             cpu_clock: bool) -> dict[str, Any]:
    issuer = app.extensions["authserver"].settings.issuer
    client = app.test_client()

    def requests_for(count: int) -> list[tuple[str, str]]:
        proofs = make_proofs(agent.dpop, issuer + "/token", count)
        return [(p, exchange_body(agent, issuer, user_assertion)) for p in proofs]

    for proof, body in requests_for(30):  # warm-up: imports, pools, key ring, policy
        resp = client.post("/token", data=body, headers={"DPoP": proof, "Content-Type": FORM})
        assert resp.status_code == 200, resp.get_data(as_text=True)

    # Unprofiled latency first (cProfile inflates Python-heavy code). CPU time too: this
    # process's (time.process_time; PostgreSQL and Redis are other processes, the IdP and CRM
    # threads idle), which depends far less on the machine's load than the latency does.
    # Per request, this thread's CPU (thread_time) as well: its median shrugs off a garbage
    # collection or a preemption that lands in one request.
    plain, cpu_each = [], []
    batch = requests_for(n)
    cpu_start = time.process_time()
    for proof, body in batch:
        t0, c0 = time.perf_counter(), time.thread_time()
        resp = client.post("/token", data=body, headers={"DPoP": proof, "Content-Type": FORM})
        cpu_each.append((time.thread_time() - c0) * 1000)
        plain.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200
    cpu_ms = (time.process_time() - cpu_start) / n * 1000
    stage_cpu = cpu_stages(client, requests_for(n))
    batch = requests_for(n)
    # `cpu`: the profiler's clock is this thread's CPU time, so waits on PostgreSQL and Redis
    # drop out and what is left is what the worker spends.
    profiler = cProfile.Profile(time.thread_time) if cpu_clock else cProfile.Profile()
    profiler.enable()
    for proof, body in batch:
        resp = client.post("/token", data=body, headers={"DPoP": proof, "Content-Type": FORM})
        assert resp.status_code == 200
    profiler.disable()
    if pstats_path:
        profiler.dump_stats(pstats_path)

    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    stages = []
    for (suffix, name), label in STAGES:
        ct = sum(v[3] for (f, _l, fn), v in raw.items() if fn == name and f.endswith(suffix))
        stages.append({"stage": label, "ms/exchange": ct / n * 1000,
                       "% of total": ct / total * 100})
    components = sorted(component_times(stats).items(), key=lambda kv: -kv[1])
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:15]
    plain.sort()
    return {
        "n": n,
        "unprofiled_ms": {"p50": statistics.median(plain), "mean": statistics.fmean(plain),
                          "p99": plain[min(len(plain) - 1, round(0.99 * (len(plain) - 1)))]},
        "unprofiled_cpu_ms_per_exchange": cpu_ms,
        "unprofiled_thread_cpu_ms": {"p50": statistics.median(cpu_each),
                                     "min": min(cpu_each)},
        "cpu_stages": stage_cpu,
        "profiled_total_ms_per_exchange": total / n * 1000,
        "stages": stages,
        "components": [{"component": c, "ms/exchange": t / n * 1000,
                        "% of total": t / total * 100} for c, t in components],
        "top_self": [{"function": f"{Path(f).name}:{line}:{fn}"
                      if f != "~" else fn, "calls/exchange": v[1] / n,
                      "self ms/exchange": v[2] / n * 1000}
                     for (f, line, fn), v in top],
    }


# --- main -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def server_database_url(db_url: str, how: str, pool: int) -> Iterator[str]:
    """The URL the server is configured with for the fresh database `db_url` (`--database`)."""
    if how == "direct":
        yield db_url
        return
    if how == "no-prepare":
        yield db_url + "?prepare_threshold=none"
        return
    from tests.pgbouncer_helpers import running_pgbouncer

    name = urlsplit(db_url).path.lstrip("/")
    with running_pgbouncer(f"{name} = host=127.0.0.1 port=5432 dbname={name} pool_size={pool}",
                           default_pool_size=pool, max_client_conn=500) as port:
        yield f"postgresql://postgres@127.0.0.1:{port}/{name}?prepare_threshold=none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=5, help="gunicorn workers")
    parser.add_argument("--profile-n", type=int, default=300, help="exchanges to profile")
    parser.add_argument("--profile-only", action="store_true",
                        help="skip the wrk runs (gunicorn still serves the set-up)")
    parser.add_argument("--pstats", help="also write the cProfile stats to this file")
    parser.add_argument("--database", choices=("direct", "no-prepare", "pgbouncer"),
                        default="direct", help="how the server reaches PostgreSQL")
    parser.add_argument("--pgbouncer-pool", type=int, default=10,
                        help="PgBouncer's server connections (--database pgbouncer)")
    parser.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                        help="cProfile's clock: wall (waits included) or this thread's CPU")
    args = parser.parse_args()
    # The in-process IdP and CRM (werkzeug) would print one line per request.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    started = time.monotonic()
    servers: list[Any] = []
    with fresh_postgres() as db_url, redis_prefix() as prefix, workdir() as wd, \
            server_database_url(db_url, args.database, args.pgbouncer_pool) as app_db_url:
        try:
            port = free_port()
            issuer = f"http://127.0.0.1:{port}"
            config_path, settings, servers, idp = configure(wd, issuer, app_db_url, prefix)
            env = {"AUTHSERVER_CONFIG": str(config_path)}
            agent = Agent()
            edge = create_clients(env, agent)  # also migrates and creates the signing key
            with Gunicorn(port=port, workers=args.workers, env=env,
                          log_path=wd / "gunicorn.log") as srv:
                sign_in_and_connect(issuer)
                user_assertion = edge_mint(issuer, idp, edge, agent)
                runs: list[dict[str, Any]] = []
                audit: dict[str, Any] = {}
                if not args.profile_only:
                    runs = load(srv, agent, user_assertion, args.duration, wd, db_url)
                    audit = audit_check(issuer, settings["admin_token"])
            prof = profile(config_path, agent, user_assertion, args.profile_n, args.pstats,
                           cpu_clock=args.profile_clock == "cpu")
        finally:
            for server in reversed(servers):
                server.stop()

    if runs:
        print_table(f"Agent exchange (read intent → capability), gunicorn -w {args.workers} "
                    f"(gthread) + PostgreSQL ({args.database}) + Redis, wrk {args.duration}s "
                    f"per row", runs,
                    ["concurrency", "rps", "p50_ms", "p90_ms", "p99_ms", "ok", "bad",
                     "server_cpu_ms_per_req", "pg_busy_backends_mean", "pg_lock_waiters_mean"])
        print(f"audit chain after the runs: {audit}")
    print(f"\nIn-process, one app instance, {prof['n']} sequential exchanges: unprofiled p50 "
          f"{prof['unprofiled_ms']['p50']:.2f} ms, mean {prof['unprofiled_ms']['mean']:.2f} ms; "
          f"CPU {prof['unprofiled_cpu_ms_per_exchange']:.2f} ms/exchange (process_time, "
          f"test client included), per exchange p50 "
          f"{prof['unprofiled_thread_cpu_ms']['p50']:.2f} ms (thread_time); under cProfile "
          f"{prof['profiled_total_ms_per_exchange']:.2f} ms/exchange")
    print("\nCPU µs per exchange by stage (thread_time around each, no profiler; nested)")
    for row in prof["cpu_stages"]:
        print(f"{row['cpu_us']:9.1f}  {row['stage']}")
    print_table("Where the time goes: stages (inclusive, under cProfile)", prof["stages"],
                ["stage", "ms/exchange", "% of total"])
    print_table("Where the time goes: self time by component (builtins charged to caller)",
                prof["components"][:12], ["component", "ms/exchange", "% of total"])
    print_table("Top functions by self time", prof["top_self"][:12],
                ["function", "calls/exchange", "self ms/exchange"])
    write_result(args.out, {
        "benchmark": "agent_token_exchange",
        "machine": machine(),
        "database": args.database,
        "pgbouncer_pool": args.pgbouncer_pool if args.database == "pgbouncer" else None,
        "workers": args.workers,
        "duration_per_run_s": args.duration,
        "runs": runs,
        "audit_verify": audit,
        "profile": prof,
        "elapsed_s": round(time.monotonic() - started, 1),
    })


if __name__ == "__main__":
    main()
