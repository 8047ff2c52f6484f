"""Shared plumbing for the HTTP benchmarks (stand-alone scripts; not tests).

- `fresh_postgres()`: a throw-away PostgreSQL database, dropped on exit.
- `redis_prefix()`: a random Redis key prefix whose keys are deleted on exit.
- `Gunicorn`: authserver under gunicorn (the repository's gunicorn.conf.py), stopped by its pid.
- `make_proofs()`: DPoP proofs (RFC 9449 §4.2) signed beforehand with joserfc, distinct `jti`s.
- `run_wrk()`: drives wrk with a Lua script that sends one pre-generated line (DPoP proof and
  form body) per request, so the load generator does no signing while it is timed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from joserfc import jws
from joserfc.jwk import ECKey

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL_TEMPLATE = "postgresql://postgres@127.0.0.1:5432/{name}"
REDIS_URL = "redis://127.0.0.1:6379/13"
READY_TIMEOUT = 60
STOP_TIMEOUT = 30
WRK_THREADS = 2
#: Every proof must still be inside the server's 60 s window when it is sent (DPOP_PROOF_WINDOW).
PROOF_WINDOW = 60


# --- small helpers -------------------------------------------------------------------------------


def cpu_timed(fn: Callable[..., Any], label: str, spent: MutableMapping[str, int]
              ) -> Callable[..., Any]:
    """`fn`, adding the calling thread's CPU nanoseconds in each call to `spent[label]`
    (`time.thread_time_ns`: waits on PostgreSQL and Redis drop out, their syscalls stay)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0) + time.thread_time_ns() - started
    return call


@contextlib.contextmanager
def timed_stages(targets: Sequence[tuple[Any, str, str]], spent: MutableMapping[str, int],
                 app: Any = None) -> Iterator[None]:
    """Inside: each (namespace, attribute, label) of `targets` (a module's name where its
    caller looks it up, or a class's method) runs under `cpu_timed`, and so does each of
    `app`'s before/after/teardown request hooks (labelled "<kind>_request: <name>"); all put
    back on exit."""
    originals = []
    for owner, name, label in targets:
        originals.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, cpu_timed(getattr(owner, name), label, spent))
    hooks = []
    if app is not None:
        for kind, table in (("before", app.before_request_funcs),
                            ("after", app.after_request_funcs),
                            ("teardown", app.teardown_request_funcs)):
            for key, funcs in table.items():
                hooks.append((table, key, list(funcs)))
                table[key] = [cpu_timed(f, f"{kind}_request: {f.__name__}", spent)
                              for f in funcs]
    try:
        yield
    finally:
        for owner, name, original in originals:
            if original is None:  # inherited: the base class's own is back in view
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        for table, key, funcs in hooks:
            table[key] = funcs


@contextlib.contextmanager
def in_process_app(config_path: Path) -> Iterator[Any]:
    """One app instance from `config_path` (AUTHSERVER_CONFIG's file), for Flask's test client.
    Its JSON access log is written as in production, to /dev/null instead of the terminal; on
    exit the database pool is closed and logging goes back to the terminal."""
    from authserver import create_app
    from authserver.observability import configure_logging

    app = create_app({"config_file": str(config_path)})
    level = app.extensions["authserver"].settings.log_level
    with open(os.devnull, "w") as devnull:
        configure_logging(level, stream=devnull)
        try:
            yield app
        finally:
            app.extensions["authserver"].db.engine.dispose()
            configure_logging(level)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def print_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    print(f"\n{title}")
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row.get(c)).rjust(widths[c]) for c in columns))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value is None else str(value)


def write_result(path: str | None, result: Mapping[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"\nresult written to {path}")


def machine() -> dict[str, Any]:
    return {"cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
            "platform": sys.platform, "loadavg_1_5_15min_at_end": list(os.getloadavg())}


# --- PostgreSQL and Redis ---------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new empty database on the local PostgreSQL; yields its URL, drops it afterwards."""
    import psycopg

    name = "bench_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL_TEMPLATE.format(name=name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A random key prefix in Redis db 13; every key under it is deleted afterwards."""
    import redis

    prefix = f"bench:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
        client.close()


def free_port() -> int:
    from authserver.testing.server import free_port as _free_port

    return _free_port()


# --- gunicorn -----------------------------------------------------------------------------------


class Gunicorn:
    """authserver under gunicorn with the repository's gunicorn.conf.py (gthread workers)."""

    def __init__(self, *, port: int, workers: int, env: Mapping[str, str], log_path: Path,
                 extra_args: Sequence[str] = (), app: str = "wsgi:app",
                 ready_path: str = "/readyz") -> None:
        self.port = port
        self.app = app
        self.ready_path = ready_path
        self.extra_args = list(extra_args)
        self.workers = workers
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-w", str(self.workers),
             "-b", f"127.0.0.1:{self.port}",
             # The default control socket is one path per user: concurrent gunicorns share it.
             "--no-control-socket", *self.extra_args, self.app],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self._log_tail())
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base_url + self.ready_path, timeout=2).status_code == 200 and \
                        len(self.worker_pids()) >= self.workers:
                    # Every worker answers once it has booted; warm each one a little.
                    for _ in range(4 * self.workers):
                        requests.get(self.base_url + self.ready_path, timeout=5)
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn not ready in {READY_TIMEOUT}s:\n" + self._log_tail())

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Only the master we started (and, through it, its workers).
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                pids.append(int(entry.name))
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU of the workers so far (the load's server-side cost)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks


def authserver_cli(args: Sequence[str], env: Mapping[str, str]) -> Any:
    """Run `authserver …` (the operator's CLI) and parse its JSON output."""
    out = subprocess.run([str(VENV_BIN / "authserver"), *args], cwd=REPO,
                         env={**os.environ, **env}, check=True, capture_output=True, text=True)
    text = out.stdout.strip()
    return json.loads(text) if text.startswith(("{", "[")) else text


# --- DPoP proofs --------------------------------------------------------------------------------


class ProofMaker:
    """Signs DPoP proofs for one ES256 key: the header is encoded once, each proof is one
    joserfc signature over a fresh claim set."""

    def __init__(self, key: ECKey | None = None) -> None:
        self.key = key or ECKey.generate_key("P-256")
        self.header = b64url(json.dumps({"typ": "dpop+jwt", "alg": "ES256",
                                         "jwk": self.key.as_dict(private=False)}).encode())
        self.model = jws.JWSRegistry.algorithms["ES256"]
        self.jkt = self.key.thumbprint()
        self._serial = 0
        self._run = secrets.token_hex(4)

    def proof(self, htu: str, iat: int, htm: str = "POST") -> str:
        self._serial += 1
        claims = {"jti": f"{self._run}-{self._serial:09d}", "htm": htm, "htu": htu, "iat": iat}
        signing_input = f"{self.header}.{b64url(json.dumps(claims).encode())}"
        return f"{signing_input}.{b64url(self.model.sign(signing_input.encode(), self.key))}"


def make_proofs(maker: ProofMaker, htu: str, count: int) -> list[str]:
    iat = int(time.time())
    return [maker.proof(htu, iat) for _ in range(count)]


# --- wrk ------------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- One pre-generated line per request: "<DPoP proof or empty>\t<form body>".
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  lines = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == tid then lines[#lines + 1] = line end
    i = i + 1
  end
  idx = 0
  ok = 0
  bad = 0
  exhausted = 0
  firstbad = ""
end

function request()
  idx = idx + 1
  local line = lines[idx]
  if line == nil then
    -- Out of proofs: resend the last one; the server refuses the replay (counted as bad).
    exhausted = exhausted + 1
    line = lines[#lines]
  end
  local tab = string.find(line, "\t", 1, true)
  local proof = string.sub(line, 1, tab - 1)
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  if #proof > 0 then headers["DPoP"] = proof end
  return wrk.format("POST", nil, headers, string.sub(line, tab + 1))
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
    if firstbad == "" then firstbad = status .. " " .. string.sub(body, 1, 200) end
  end
end

function done(summary, latency, requests)
  local t_ok, t_bad, t_exh, first = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    t_ok = t_ok + thread:get("ok")
    t_bad = t_bad + thread:get("bad")
    t_exh = t_exh + thread:get("exhausted")
    local fb = thread:get("firstbad")
    if first == "" and fb ~= "" then first = fb end
  end
  first = string.gsub(first, '[%c"\\]', " ")
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"ok":%d,"bad":%d,"exhausted":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"first_bad":"%s"}\n',
    summary.requests, summary.duration, t_ok, t_bad, t_exh,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, first))
end
"""


@dataclass
class WrkResult:
    concurrency: int
    requests: int
    ok: int
    bad: int
    exhausted: int
    socket_errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_bad: str
    server_cpu_ms_per_req: float | None = None

    def as_row(self) -> dict[str, Any]:
        return {"c": self.concurrency, "req/s": self.rps, "p50 ms": self.p50_ms,
                "p90 ms": self.p90_ms, "p99 ms": self.p99_ms, "ok": self.ok,
                "non-200": self.bad,
                "cpu ms/req": self.server_cpu_ms_per_req}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, lines: Sequence[str], *, concurrency: int, duration: int,
            headers: Mapping[str, str], workdir: Path, server: Gunicorn | None = None
            ) -> WrkResult:
    """POST `url` for `duration` s on `concurrency` keep-alive connections, one line per
    request. `server` (if given) is sampled for the workers' CPU time over the run."""
    script = workdir / "lines.lua"
    script.write_text(WRK_SCRIPT)
    data = workdir / f"lines-{secrets.token_hex(4)}.txt"
    data.write_text("\n".join(lines) + "\n")
    threads = min(WRK_THREADS, concurrency)
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s",
           "--timeout", "10s", "-s", str(script)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += [url, "--", str(data), str(threads)]
    cpu_before = server.cpu_seconds() if server else 0.0
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    cpu_after = server.cpu_seconds() if server else 0.0
    data.unlink()
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON "):])
    seconds = raw["duration_us"] / 1e6
    return WrkResult(
        concurrency=concurrency, requests=raw["requests"], ok=raw["ok"], bad=raw["bad"],
        exhausted=raw["exhausted"], socket_errors=raw["socket_errors"],
        rps=raw["ok"] / seconds, p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000, max_ms=raw["max_us"] / 1000, first_bad=raw["first_bad"],
        server_cpu_ms_per_req=((cpu_after - cpu_before) * 1000 / raw["requests"])
        if server and raw["requests"] else None,
    )


def proof_budget(expected_rps: float, duration: int) -> int:
    """How many proofs to sign for one run: generous, since running out means replays."""
    if duration + 10 > PROOF_WINDOW:
        raise ValueError("a run must end well inside the proof window")
    return int(expected_rps * duration * 1.5) + 500


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="authserver-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
