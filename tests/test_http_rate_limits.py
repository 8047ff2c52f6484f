"""Rate limits and revocation epochs across instances (docs/standards.md A3: 429
`rate_limited` + Retry-After; 503 when the shared store is down).

Two app instances in this process share Redis and PostgreSQL; a real second process (gunicorn,
two workers) does too. The budget is one budget, and a deprovisioning done on one instance
kills an assertion on every other on its next use. Windows are a day long, so a test never
straddles one (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from authserver.demo.stack import to_toml
from authserver.testing.server import free_port
from tests.conftest import REDIS_URL, fresh_postgres_database
from tests.http_helpers import assert_refusal
from tests.stack import Stack, correlation, make_stack

USER = "alice"
#: The refusal of a user assertion whose user was deprovisioned.
REVOKED = "subject_token is invalid, expired or revoked"
WINDOW = 86_400
READ_LIMIT = 3
RATE_LIMITS = {"read": {"limit": READ_LIMIT, "window": WINDOW}}
GUNICORN_START_TIMEOUT = 60


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (the services are required: never skipped)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def shared_stack(tmp_path: Path, postgres_url: str) -> Iterator[Stack]:
    s = make_stack(tmp_path, database_url=postgres_url, redis_url=REDIS_URL,
                   extra_settings={"rate_limits": RATE_LIMITS})
    s.signed_in_and_connected(USER, ("crm",))
    yield s
    s.close()


def test_rate_limited_with_retry_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack(tmp_path, extra_settings={"rate_limits": RATE_LIMITS})
    try:
        # Tomorrow 06:30:00 UTC, whatever the wall clock says: Retry-After depends on the time
        # of day (windows are aligned to UTC days), so the test fixes it.
        stack.freeze_clock(monkeypatch, at=(int(time.time()) // WINDOW + 1) * WINDOW + 23_400)
        stack.signed_in_and_connected(USER, ("crm",))
        assertion, key = stack.edge_mint(USER)
        for _ in range(READ_LIMIT):
            assert stack.agent_exchange(assertion, key).status_code == 200
        cid = correlation()
        resp = stack.agent_exchange(assertion, key, headers={"X-Request-ID": cid})
        assert_refusal(resp, 429, "rate_limited", "Rate limit exceeded")
        # 4 counted of 3 a day: the rest of today (63,000 s) and half of tomorrow (43,200 s),
        # when 1 + 4 x 1/2 = 3 fits (tests/test_ratelimit.py covers other times of day).
        assert resp.headers["Retry-After"] == "106200"
        [record] = stack.audit_for(cid)
        assert record["outcome"] == "rate_limited"
        stack.shift_clock(monkeypatch, 106_200)
        assertion, key = stack.edge_mint(USER)
        assert stack.agent_exchange(assertion, key).status_code == 200
    finally:
        stack.close()


@pytest.mark.services
def test_rate_limit_shared_by_two_app_instances(shared_stack: Stack) -> None:
    stack = shared_stack
    other = stack.second_instance()
    assertion, key = stack.edge_mint(USER)
    bases = [stack.issuer, other, stack.issuer]
    for base in bases:
        assert stack.agent_exchange(assertion, key, base_url=base).status_code == 200
    resp = stack.agent_exchange(assertion, key, base_url=other)
    assert_refusal(resp, 429, "rate_limited", "Rate limit exceeded")
    assert int(resp.headers["Retry-After"]) > 0


@pytest.mark.services
def test_deprovisioning_on_one_instance_kills_assertion_on_another(shared_stack: Stack) -> None:
    stack = shared_stack
    other = stack.second_instance()
    assertion, key = stack.edge_mint(USER)
    assert stack.agent_exchange(assertion, key, base_url=other).status_code == 200
    assert stack.deprovision(stack.user_id(USER)).status_code == 200
    assert_refusal(stack.agent_exchange(assertion, key, base_url=other), 400, "invalid_request",
                   REVOKED)


@pytest.mark.services
def test_store_unavailable_is_temporarily_unavailable(shared_stack: Stack,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from authserver.store.redis import _INCR_WITH_TTL

    stack = shared_stack
    assertion, key = stack.edge_mint(USER)
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    store = stack.services.store
    monkeypatch.setattr(store, "_r", dead)
    monkeypatch.setattr(store, "_incr", dead.register_script(_INCR_WITH_TTL))
    from authserver.observability import UNAUTHENTICATED_REJECTIONS

    refused = UNAUTHENTICATED_REJECTIONS.labels(event="token_exchange",
                                                reason="temporarily_unavailable")
    before = refused._value.get()
    cid = correlation()
    resp = stack.agent_exchange(assertion, key, headers={"X-Request-ID": cid})
    assert_refusal(resp, 503, "temporarily_unavailable", None)
    assert int(resp.headers["Retry-After"]) > 0
    monkeypatch.undo()
    # The agent's client assertion could not be checked for replay, so no principal was
    # authenticated: counted, not audited (anonymous traffic never takes the chain's lock).
    assert refused._value.get() == before + 1
    assert stack.audit_for(cid) == []


# --- a real second process ----------------------------------------------------------------------


def _gunicorn(stack: Stack, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn -w 2 wsgi:app on the stack's configuration (AUTHSERVER_CONFIG)."""
    config = tmp_path / "authserver.toml"
    config.write_text(to_toml(stack.settings), encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env["AUTHSERVER_CONFIG"] = str(config)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
         "wsgi:app"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + GUNICORN_START_TIMEOUT
    while time.monotonic() < deadline:  # readiness, not timing: proceed as soon as it answers
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}")
        try:
            if requests.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:  # not listening or still booting
            pass
        time.sleep(0.1)
    proc.terminate()
    raise AssertionError("gunicorn did not become ready")


@pytest.fixture
def gunicorn(shared_stack: Stack, tmp_path: Path) -> Iterator[str]:
    proc, base = _gunicorn(shared_stack, tmp_path)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.services
def test_rate_limit_shared_with_gunicorn_process(shared_stack: Stack, gunicorn: str) -> None:
    stack = shared_stack
    assertion, key = stack.edge_mint(USER)
    # Several requests to gunicorn land on both workers; the budget is still one.
    for base in (gunicorn, gunicorn, stack.issuer):
        assert stack.agent_exchange(assertion, key, base_url=base).status_code == 200
    resp = stack.agent_exchange(assertion, key, base_url=gunicorn)
    assert_refusal(resp, 429, "rate_limited", "Rate limit exceeded")
    assert int(resp.headers["Retry-After"]) > 0


@pytest.mark.slow
@pytest.mark.services
def test_deprovisioning_in_process_kills_assertion_in_gunicorn(shared_stack: Stack,
                                                              gunicorn: str) -> None:
    stack = shared_stack
    assertion, key = stack.edge_mint(USER)
    assert stack.agent_exchange(assertion, key, base_url=gunicorn).status_code == 200
    resp = stack.deprovision(stack.user_id(USER), base_url=gunicorn)
    assert resp.status_code == 200, resp.text
    assert_refusal(stack.agent_exchange(assertion, key), 400, "invalid_request", REVOKED)
    assert_refusal(stack.agent_exchange(assertion, key, base_url=gunicorn), 400,
                   "invalid_request", REVOKED)
