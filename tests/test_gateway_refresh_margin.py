"""Issue 16: short-lived platform tokens are not refreshed on every call. Through the gateway,
over two app instances sharing PostgreSQL and Redis, with the time injected (one frozen test
clock read by both instances, the IdP and the CRM): for access tokens of 5 s, 12 s and 3600 s,
50 parallel calls just before the refresh margin cause no refresh, and 50 parallel calls at it
cause exactly one, every call answers 200, and the CRM never sees a refresh token reused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from authserver.broker.profiles import DEFAULT_REFRESH_MARGIN
from tests.conftest import REDIS_URL
from tests.gateway_helpers import capability, raw_proof
from tests.stack import Stack, intent, make_stack

CALLS = 50
EXPIRIES = 2
HTTP_TIMEOUT = 60


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    s = make_stack(tmp_path, database_url=database_url, redis_url=REDIS_URL)
    yield s
    s.close()


def _fire(stack: Stack, bases: list[str], at: int, monkeypatch: pytest.MonkeyPatch
          ) -> list[tuple[int, Any]]:
    """CALLS gateway reads at instant `at`, alternating between the instances in `bases`."""
    stack.freeze_clock(monkeypatch, at=at)
    token, key = capability(stack, "alice", intent("read", "deal:acme-123"))
    url = stack.issuer + "/gateway/crm/deals/acme-123"
    # Proofs are made up front; the barrier releases all the requests together.
    calls = [(bases[i % len(bases)] + "/gateway/crm/deals/acme-123",
              {"Authorization": f"DPoP {token}",
               "DPoP": raw_proof(key, "GET", url, token=token)}) for i in range(CALLS)]
    barrier = threading.Barrier(CALLS)

    def fire(call: tuple[str, dict[str, str]]) -> tuple[int, Any]:
        target, headers = call
        barrier.wait()
        resp = requests.get(target, headers=headers, timeout=HTTP_TIMEOUT)
        return resp.status_code, resp.json()

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        return list(pool.map(fire, calls))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("ttl", [5, 12, 3600])
def test_fifty_calls_one_refresh_per_expiry(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                            ttl: int) -> None:
    t0 = int(stack.clock.time())
    stack.freeze_clock(monkeypatch, at=t0)
    monkeypatch.setattr(stack.crm, "_clock", stack.clock.time)  # the CRM reads the test clock
    monkeypatch.setattr(stack.crm, "access_token_ttl", ttl)
    stack.signed_in_and_connected("alice", ("crm",))
    bases = [stack.issuer, stack.second_instance()]
    margin = min(DEFAULT_REFRESH_MARGIN, ttl // 2)
    assert stack.crm.stats["refresh"] == 0

    obtained = t0
    for expiry in range(1, EXPIRIES + 1):
        stale_at = obtained + ttl - margin  # the first second the token counts as stale
        fresh = _fire(stack, bases, stale_at - 1, monkeypatch)
        assert [status for status, _ in fresh] == [200] * CALLS, fresh
        assert stack.crm.stats["refresh"] == expiry - 1  # still fresh: no refresh
        stale = _fire(stack, bases, stale_at, monkeypatch)
        assert [status for status, _ in stale] == [200] * CALLS, stale
        assert {body["id"] for _, body in stale} == {"acme-123"}
        assert stack.crm.stats["refresh"] == expiry  # exactly one refresh for this expiry
        obtained = stale_at

    stats = stack.crm.stats
    assert stats["refresh_reuse"] == 0 and stats["active_grants"] == 1
    assert stats["api_unauthorized"] == 0  # no call ever used an expired token
