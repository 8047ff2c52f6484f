"""Single-flight refresh across processes (RFC 6749 §6 with rotating refresh tokens) seen from
the gateway: 50 concurrent calls arriving as the platform token expires, split over TWO
authserver processes (this test process and a gunicorn master with 2 workers) sharing one
PostgreSQL database, one Redis and one key-encryption key, give exactly one refresh at the
platform and 50 successes, and the grant is still good afterwards. Then: a dump of every
database table and every Redis key holds none of the platform's tokens in plaintext.

Each process has its own issuer URL (DPoP `htu` and token `iss`/`aud` name the server that is
called), so the agent gets a user assertion and a capability token from each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from authserver.demo.stack import to_toml
from authserver.models.broker import Connection
from authserver.testing.server import free_port
from tests.conftest import REDIS_URL
from tests.gateway_helpers import (
    PlatformRecorder,
    assert_no_secret_in,
    capability,
    exchange_at,
    mint_at,
    raw_proof,
)
from tests.stack import Stack, intent, make_stack

REPO = Path(__file__).resolve().parent.parent
CALLS = 50
GUNICORN_START_DEADLINE = 60.0  # seconds; a readiness deadline, not a timing assertion
HTTP_TIMEOUT = 60


@pytest.fixture
def two_processes(tmp_path: Path, database_url: str) -> Iterator[tuple[Stack, str]]:
    """The in-process stack (PostgreSQL + Redis) and a gunicorn process over the same state."""
    stack = make_stack(tmp_path, database_url=database_url, redis_url=REDIS_URL)
    process: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        issuer_b = f"http://127.0.0.1:{port}"
        # Same settings (database, Redis, data_dir and so the KEK file, secret_key), own issuer.
        config = {**stack.settings, "issuer": issuer_b}
        config_file = tmp_path / "instance-b.toml"
        config_file.write_text(to_toml(config), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
        env["AUTHSERVER_CONFIG"] = str(config_file)
        log = (tmp_path / "gunicorn.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
             "wsgi:app"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(issuer_b, process, tmp_path / "gunicorn.log")
        yield stack, issuer_b
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        stack.close()


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + GUNICORN_START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # still starting
        threading.Event().wait(0.2)  # readiness polling, not a timing assertion
    raise AssertionError(f"gunicorn not ready: {log.read_text(errors='replace')[-3000:]}")


def _stats(stack: Stack) -> dict[str, int]:
    return requests.get(stack.crm.base_url + "/_admin/stats", timeout=HTTP_TIMEOUT).json()


def _request(issuer: str, token: str, key: Any) -> tuple[str, dict[str, str]]:
    url = issuer + "/gateway/crm/deals/acme-123"
    return url, {"Authorization": f"DPoP {token}", "DPoP": raw_proof(key, "GET", url, token=token)}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_fifty_calls_over_two_processes_refresh_once(two_processes):
    stack, issuer_b = two_processes
    recorder = PlatformRecorder.install(stack.crm)
    stack.signed_in_and_connected("alice", ("crm",))
    # Our copy of the grant's first token counts as expired in both processes (whatever their
    # clocks say: the gunicorn process reads the wall clock)...
    with stack.services.db.session() as session:
        session.execute(sa.update(Connection).values(
            access_obtained_at=Connection.access_obtained_at - 3600,
            access_expires_at=Connection.access_obtained_at - 3600))

    token_a, key_a = capability(stack, "alice", intent("read", "deal:acme-123"))
    key_b = stack.dpop_key()
    token_b = exchange_at(stack, issuer_b, mint_at(stack, issuer_b, "alice", key_b), key_b)
    # ...and at the CRM it is already dead: whoever uses it gets a 401.
    assert requests.post(stack.crm.base_url + "/_admin/expire",
                         timeout=HTTP_TIMEOUT).status_code == 200
    before = _stats(stack)
    assert before["refresh"] == 0

    # Proofs are made up front; the barrier releases all 50 requests together.
    calls = [_request(stack.issuer, token_a, key_a) if i % 2 == 0 else
             _request(issuer_b, token_b, key_b) for i in range(CALLS)]
    barrier = threading.Barrier(CALLS)

    def fire(call: tuple[str, dict[str, str]]) -> tuple[int, Any]:
        url, headers = call
        barrier.wait()
        resp = requests.get(url, headers=headers, timeout=HTTP_TIMEOUT)
        return resp.status_code, resp.json()

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        results = list(pool.map(fire, calls))

    assert [status for status, _ in results] == [200] * CALLS, results
    assert {body["id"] for _, body in results} == {"acme-123"}
    after = _stats(stack)
    assert after["refresh"] - before["refresh"] == 1
    assert after["refresh_reuse"] == 0
    assert after["active_grants"] == 1
    # Both processes served calls (the split was real).
    hosts = {url.split("/gateway")[0] for url, _ in calls}
    assert hosts == {stack.issuer, issuer_b}

    # The grant is still valid afterwards, from either process.
    for issuer, token, key in ((stack.issuer, token_a, key_a), (issuer_b, token_b, key_b)):
        url, headers = _request(issuer, token, key)
        assert requests.get(url, headers=headers, timeout=HTTP_TIMEOUT).status_code == 200
    assert _stats(stack)["refresh"] == after["refresh"]

    # No platform token in plaintext anywhere at rest: every table, every Redis key.
    secrets_ = recorder.secrets()
    assert len(secrets_) >= 4  # two access tokens, two refresh tokens at least
    assert_no_secret_in(_dump_database(stack.settings["database_url"]), secrets_)
    assert_no_secret_in(_dump_redis(REDIS_URL), secrets_)


def _dump_database(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        assert "connections" in meta.tables or any("connection" in t for t in meta.tables)
        lines: list[str] = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    lines.append(f"{table.name}: {tuple(row)!r}")
        assert lines
        return lines
    finally:
        engine.dispose()


def _dump_redis(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    lines: list[str] = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        if kind == b"string":
            value: Any = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        lines.append(f"{key!r}: {value!r}")
    return lines
