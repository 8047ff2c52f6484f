"""authserver.ratelimit: per (user, action class) and per agent windows in the shared store."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from authserver.errors import RateLimitedError
from authserver.ratelimit import DEFAULT_LIMITS, RateLimit, RateLimiter
from authserver.store import Store, StoreUnavailableError
from authserver.store.memory import MemoryStore
from authserver.store.redis import RedisStore

REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SMALL = {"read": RateLimit(3, 60), "write": RateLimit(2, 60), "destructive": RateLimit(1, 60),
         "agent": RateLimit(100, 60)}
WINDOW_START = 1_800_000_000 - (1_800_000_000 % 60)


@pytest.fixture
def user() -> str:
    # Unique per test: the Redis database is shared with other test runs.
    return f"user:{uuid.uuid4().hex}"


def _exhaust(limiter: RateLimiter, user: str, action_class: str, n: int, now: int,
             agent: str = "agent-1") -> None:
    for _ in range(n):
        limiter.check(user_id=user, agent_id=agent, action_class=action_class, now=now)


def test_within_limit_is_allowed(store: Store, user: str) -> None:
    _exhaust(RateLimiter(store, SMALL), user, "read", 3, WINDOW_START)


def test_read_limit_exceeded_is_rate_limited(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "read", 3, WINDOW_START)
    with pytest.raises(RateLimitedError) as exc:
        limiter.check(user_id=user, agent_id="agent-1", action_class="read", now=WINDOW_START)
    assert (exc.value.error, exc.value.status_code) == ("rate_limited", 429)
    # 4 counted of 3 allowed: the window ends in 60 s; 30 s later a retry fits
    # (1 + 4 x 30/60 = 3).
    assert exc.value.headers()["Retry-After"] == "90"


def test_retry_after_covers_the_sliding_window(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "write", 2, WINDOW_START + 45)
    with pytest.raises(RateLimitedError) as exc:
        limiter.check(user_id=user, agent_id="a", action_class="write", now=WINDOW_START + 45)
    # 15 s to the window's end, then 40 s until a retry fits (1 + 3 x 20/60 = 2).
    assert exc.value.retry_after == 55


def test_burst_across_a_window_boundary_is_limited(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "read", 2, WINDOW_START + 59)
    _exhaust(limiter, user, "read", 1, WINDOW_START + 60)
    with pytest.raises(RateLimitedError) as exc:
        limiter.check(user_id=user, agent_id="a", action_class="read", now=WINDOW_START + 60)
    # 2 now + 2 from the window that just ended (full weight) > 3. Within this window a
    # retry never fits (3 + tail > 3); at the next boundary it does (1 + 2 x 60/60 = 3).
    assert exc.value.retry_after == 60


def test_classes_have_separate_budgets(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "write", 2, WINDOW_START)
    _exhaust(limiter, user, "read", 3, WINDOW_START)  # reads unaffected by spent writes


def test_users_have_separate_budgets(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "destructive", 1, WINDOW_START)
    _exhaust(limiter, user + "-other", "destructive", 1, WINDOW_START)


def test_destructive_limit_exceeded_is_rate_limited(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "destructive", 1, WINDOW_START)
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=user, agent_id="a", action_class="destructive", now=WINDOW_START)


def test_destructive_spends_write_budget(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "destructive", 1, WINDOW_START)
    _exhaust(limiter, user, "write", 1, WINDOW_START)
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=user, agent_id="a", action_class="write", now=WINDOW_START)


def test_spent_write_budget_blocks_destructive(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "write", 2, WINDOW_START)
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=user, agent_id="a", action_class="destructive", now=WINDOW_START)


def test_agent_limit_spans_users(store: Store, user: str) -> None:
    limits = {**SMALL, "agent": RateLimit(4, 30)}
    limiter = RateLimiter(store, limits)
    agent = f"agent-{uuid.uuid4().hex}"
    for i in range(4):
        limiter.check(user_id=f"{user}-{i}", agent_id=agent, action_class="read",
                      now=WINDOW_START + 10)
    with pytest.raises(RateLimitedError) as exc:
        limiter.check(user_id=f"{user}-9", agent_id=agent, action_class="read",
                      now=WINDOW_START + 10)
    # 5 counted of 4 in a 30 s window: 20 s to its end, then 12 s (1 + 5 x 18/30 = 4).
    assert exc.value.retry_after == 32


def test_budget_returns_as_the_window_slides(store: Store, user: str) -> None:
    limiter = RateLimiter(store, SMALL)
    _exhaust(limiter, user, "destructive", 1, WINDOW_START + 59)
    with pytest.raises(RateLimitedError) as exc:
        limiter.check(user_id=user, agent_id="a", action_class="destructive",
                      now=WINDOW_START + 59)
    # 1 s to the boundary, then a whole window: with a limit of 1, the retry fits only once
    # the refused window has slid out completely.
    assert exc.value.retry_after == 61
    # (A probe earlier would count too: refused requests spend the budget.)
    limiter.check(user_id=user, agent_id="a", action_class="destructive",
                  now=WINDOW_START + 59 + exc.value.retry_after)


DAY = 86_400
MIDNIGHT = 1_796_083_200  # 2026-12-01T00:00:00Z
NEW_YEARS_EVE = 1_798_675_200  # 2026-12-31T00:00:00Z


@pytest.mark.parametrize(("day", "time_of_day", "expected"), [
    # Limit 3 a day, 4 counted: nothing fits again today, so the retry waits for the rest of
    # today plus half of tomorrow (1 + 4 x 1/2 = 3). That is longer than one window whenever
    # today is less than half over: Retry-After is when the limiter will say yes, not a cap.
    (MIDNIGHT, 30, DAY - 30 + DAY // 2),
    (MIDNIGHT, 6 * 3600 + 30 * 60, 106_200),
    (MIDNIGHT, 11 * 3600 + 59 * 60 + 30, 86_430),
    (MIDNIGHT, 12 * 3600 + 60, 86_340),
    (MIDNIGHT, 23 * 3600 + 59 * 60 + 30, 43_230),
    (NEW_YEARS_EVE, 23 * 3600 + 59 * 60 + 30, 43_230),
])
def test_retry_after_is_the_first_instant_a_retry_fits_at_any_time_of_day(
        store: Store, day: int, time_of_day: int, expected: int) -> None:
    limiter = RateLimiter(store, {**SMALL, "read": RateLimit(3, DAY)})
    now = day + time_of_day
    early, on_time, agent = (f"{kind}:{uuid.uuid4().hex}" for kind in ("user", "user", "agent"))
    for user in (early, on_time):
        _exhaust(limiter, user, "read", 3, now, agent)
        with pytest.raises(RateLimitedError) as exc:
            limiter.check(user_id=user, agent_id=agent, action_class="read", now=now)
        assert exc.value.retry_after == expected
    # One second early is still refused; on time fits.
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=early, agent_id=agent, action_class="read",
                      now=now + expected - 1)
    limiter.check(user_id=on_time, agent_id=agent, action_class="read", now=now + expected)


def test_colon_in_ids_does_not_share_budget(store: Store) -> None:
    limiter = RateLimiter(store, SMALL)
    base = uuid.uuid4().hex
    _exhaust(limiter, f"{base}:x", "destructive", 1, WINDOW_START)
    _exhaust(limiter, base, "destructive", 1, WINDOW_START)


def test_unknown_action_class_is_rejected(store: Store, user: str) -> None:
    with pytest.raises(ValueError):
        RateLimiter(store).check(user_id=user, agent_id="a", action_class="delete",
                                 now=WINDOW_START)


# --- the store's one-step spend (Store.incr_with_previous) -----------------------------------


def test_incr_with_previous_counts_this_window_and_reads_the_last(store: Store) -> None:
    key = f"rl:test:{{{uuid.uuid4().hex}}}"
    assert store.incr_with_previous(f"{key}:7", f"{key}:6", ttl=120) == (1, 0)
    assert store.incr_with_previous(f"{key}:7", f"{key}:6", ttl=120) == (2, 0)
    # The next window: its own count from 1, the last one's as it was (not spent again).
    assert store.incr_with_previous(f"{key}:8", f"{key}:7", ttl=120) == (1, 2)
    assert store.incr_with_previous(f"{key}:8", f"{key}:7", ttl=120) == (2, 2)
    assert store.get(f"{key}:7") == "2" and store.get(f"{key}:8") == "2"


def test_incr_with_previous_expires_ttl_after_the_first_increment() -> None:
    t = [1000.0]
    store = MemoryStore(clock=lambda: t[0])
    assert store.incr_with_previous("rl:x:{s}:1", "rl:x:{s}:0", ttl=10) == (1, 0)
    t[0] += 9
    assert store.incr_with_previous("rl:x:{s}:1", "rl:x:{s}:0", ttl=10) == (2, 0)
    assert store.incr_with_previous("rl:x:{s}:2", "rl:x:{s}:1", ttl=10) == (1, 2)
    t[0] += 1  # 10 s after the first increment of window 1, not after its last
    assert store.incr_with_previous("rl:x:{s}:2", "rl:x:{s}:1", ttl=10) == (2, 0)


def test_redis_incr_with_previous_sets_the_expiry_once() -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(client, prefix=prefix)
    try:
        store.incr_with_previous("rl:x:{s}:1", "rl:x:{s}:0", ttl=100)
        client.expire(prefix + "rl:x:{s}:1", 50)
        store.incr_with_previous("rl:x:{s}:1", "rl:x:{s}:0", ttl=100)
        assert 0 < client.ttl(prefix + "rl:x:{s}:1") <= 50
        assert client.ttl(prefix + "rl:x:{s}:0") == -2  # the read creates nothing
    finally:
        client.delete(prefix + "rl:x:{s}:1")
        client.close()


def test_memory_incr_with_previous_is_thread_safe() -> None:
    store = MemoryStore()
    seen: list[int] = []

    def spend() -> None:
        for _ in range(500):
            seen.append(store.incr_with_previous("rl:x:{s}:1", "rl:x:{s}:0", ttl=60)[0])

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 8 * 500 + 1))


def test_incr_windows_spends_each_window_and_reads_in_one_call(store: Store) -> None:
    a, b = (f"rl:test:{{{uuid.uuid4().hex}}}" for _ in range(2))
    store.set(f"{b}:6", "5")
    store.set(f"{a}:gen", "g1")
    assert store.incr_windows([(f"{a}:7", f"{a}:6", 120), (f"{b}:7", f"{b}:6", 120)],
                              [f"{a}:gen", f"{a}:absent"]) == ([(1, 0), (1, 5)], ["g1", None])
    assert store.incr_windows([(f"{a}:7", f"{a}:6", 120)]) == ([(2, 0)], [])
    assert store.incr_windows([], [f"{a}:gen"]) == ([], ["g1"])
    assert store.get(f"{a}:7") == "2" and store.get(f"{b}:7") == "1"


def test_redis_incr_windows_sets_each_expiry_once() -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(client, prefix=prefix)
    try:
        store.incr_windows([("rl:x:{s}:1", "rl:x:{s}:0", 100)])
        client.expire(prefix + "rl:x:{s}:1", 50)
        store.incr_windows([("rl:x:{s}:1", "rl:x:{s}:0", 100), ("rl:y:{t}:1", "rl:y:{t}:0", 30)])
        assert 0 < client.ttl(prefix + "rl:x:{s}:1") <= 50
        assert 0 < client.ttl(prefix + "rl:y:{t}:1") <= 30
        assert client.ttl(prefix + "rl:x:{s}:0") == -2  # the read creates nothing
    finally:
        client.delete(prefix + "rl:x:{s}:1", prefix + "rl:y:{t}:1")
        client.close()


def test_redis_incr_windows_on_a_store_that_does_not_answer_is_503() -> None:
    dead = RedisStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    with pytest.raises(StoreUnavailableError) as exc:
        dead.incr_windows([("rl:x:{s}:1", "rl:x:{s}:0", 60)], ["gen"])
    assert (exc.value.error, exc.value.status_code) == ("temporarily_unavailable", 503)


def test_redis_incr_windows_error_in_one_command_is_503() -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex}:"
    client.set(prefix + "rl:x:{s}:1", "not a number")
    try:
        with pytest.raises(StoreUnavailableError):
            RedisStore(client, prefix=prefix).incr_windows([("rl:x:{s}:1", "rl:x:{s}:0", 60)],
                                                           ["gen"])
    finally:
        client.delete(prefix + "rl:x:{s}:1")
        client.close()


def test_a_spend_is_one_redis_round_trip(user: str, round_trips: list[list[str]]) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    limiter = RateLimiter(RedisStore(client, prefix=f"test:{uuid.uuid4().hex}:"), SMALL)
    client.ping()  # the connection's set-up commands
    round_trips.clear()
    limiter.hit("token", user, now=WINDOW_START)
    assert round_trips == [["EVAL"]]
    round_trips.clear()
    assert limiter.hit("token", user, now=WINDOW_START, read=["gen", "other"]) == [None, None]
    assert round_trips == [["EVAL", "GET", "GET"]]
    round_trips.clear()
    limiter.check(user_id=user, agent_id="a", action_class="destructive", now=WINDOW_START)
    assert round_trips == [["EVAL"] * 3]  # destructive, write, agent: one round trip
    client.close()


def test_a_refused_hit_reads_nothing_back(store: Store, user: str) -> None:
    limiter = RateLimiter(store, {"token": RateLimit(1, 60)})
    store.set("gen", "g1")
    assert limiter.hit("token", user, now=WINDOW_START, read=["gen"]) == ["g1"]
    with pytest.raises(RateLimitedError) as exc:
        limiter.hit("token", user, now=WINDOW_START, read=["gen"])
    # Two counted against a limit of 1: the rest of this window (60 s), then until the retry's
    # 1 plus this window's weight fits (60 s more).
    assert exc.value.retry_after == 120


def test_check_counts_every_budget_when_one_is_spent(store: Store, user: str) -> None:
    limiter = RateLimiter(store, {**SMALL, "agent": RateLimit(2, 60)})
    _exhaust(limiter, user, "destructive", 1, WINDOW_START)
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=user, agent_id="agent-1", action_class="destructive",
                      now=WINDOW_START)
    # The refused request counted against write and the agent too: the agent's budget of 2
    # is spent by the two requests, so a read by another user is refused.
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=user + "-2", agent_id="agent-1", action_class="read",
                      now=WINDOW_START)


# --- configuration ---------------------------------------------------------------------------


def test_default_limits_are_named() -> None:
    assert dict(DEFAULT_LIMITS) == {"read": RateLimit(120, 60), "write": RateLimit(30, 60),
                                    "destructive": RateLimit(5, 60),
                                    "agent": RateLimit(300, 60),
                                    "sign_in_account": RateLimit(10, 900),
                                    "sign_in_address": RateLimit(300, 900),
                                    "register": RateLimit(20, 3600),
                                    "token": RateLimit(1200, 60),
                                    "token_address": RateLimit(6000, 60)}


def test_front_door_budget_is_per_subject_and_shared(store: Store, user: str) -> None:
    limiter = RateLimiter(store, {"sign_in_account": RateLimit(2, 60)})
    for _ in range(2):
        limiter.hit("sign_in_account", user, now=WINDOW_START)
    with pytest.raises(RateLimitedError) as exc:
        limiter.hit("sign_in_account", user, now=WINDOW_START)
    # 3 counted of 2: the rest of this window (60 s), then until 3 x (60 - t)/60 + 1 <= 2 (40 s).
    assert exc.value.retry_after == 60 + 40
    limiter.hit("sign_in_account", user + "-other", now=WINDOW_START)
    limiter.hit("sign_in_address", user, now=WINDOW_START)  # another budget, same subject
    with pytest.raises(ValueError):
        limiter.hit("read", user, now=WINDOW_START)


def test_from_settings_overrides_defaults(store: Store) -> None:
    limiter = RateLimiter.from_settings(store, {"destructive": {"limit": 2, "window": 300},
                                                "read": {"limit": 10}})
    assert limiter.limits["destructive"] == RateLimit(2, 300)
    assert limiter.limits["read"] == RateLimit(10, 60)
    assert limiter.limits["write"] == DEFAULT_LIMITS["write"]


@pytest.mark.parametrize("mapping", [
    {"delete": {"limit": 1}},
    {"read": {"limit": 0}},
    {"read": {"limit": 5, "window": -1}},
    {"read": {"limit": "5"}},
    {"read": {"limt": 5}},
    {"read": 5},
], ids=["unknown_name", "zero_limit", "negative_window", "string_limit", "unknown_field",
        "not_a_table"])
def test_from_settings_rejects_bad_config(store: Store, mapping: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RateLimiter.from_settings(store, mapping)


# --- shared across processes; fails closed ---------------------------------------------------


@pytest.fixture
def two_redis_stores() -> Iterator[tuple[RedisStore, RedisStore]]:
    clients = [redis.Redis.from_url(REDIS_URL, decode_responses=True) for _ in range(2)]
    yield RedisStore(clients[0]), RedisStore(clients[1])
    for c in clients:
        c.close()


def test_two_instances_share_one_budget(two_redis_stores: tuple[RedisStore, RedisStore],
                                        user: str) -> None:
    first, second = (RateLimiter(s, SMALL) for s in two_redis_stores)
    first.check(user_id=user, agent_id="a", action_class="write", now=WINDOW_START)
    second.check(user_id=user, agent_id="a", action_class="write", now=WINDOW_START)
    with pytest.raises(RateLimitedError):
        first.check(user_id=user, agent_id="a", action_class="write", now=WINDOW_START)


_CHILD = """
import sys, redis
from authserver.ratelimit import RateLimit, RateLimiter
from authserver.store.redis import RedisStore
limits = {"read": RateLimit(10, 60), "write": RateLimit(10, 60),
          "destructive": RateLimit(10, 60), "agent": RateLimit(1000, 60)}
limiter = RateLimiter(RedisStore(redis.Redis.from_url(sys.argv[1], decode_responses=True)), limits)
for _ in range(int(sys.argv[3])):
    limiter.check(user_id=sys.argv[2], agent_id="a", action_class="read", now=1_799_999_980)
"""


def test_budget_spent_by_other_processes(two_redis_stores: tuple[RedisStore, RedisStore],
                                         user: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, REDIS_URL, user, "5"])
             for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    limiter = RateLimiter(two_redis_stores[0], {**SMALL, "read": RateLimit(10, 60)})
    with pytest.raises(RateLimitedError):
        limiter.check(user_id=user, agent_id="a", action_class="read", now=1_799_999_980)


def test_store_failure_propagates_as_503(user: str) -> None:
    dead = RedisStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    with pytest.raises(StoreUnavailableError) as exc:
        RateLimiter(dead).check(user_id=user, agent_id="a", action_class="read",
                                now=WINDOW_START)
    assert (exc.value.error, exc.value.status_code) == ("temporarily_unavailable", 503)
