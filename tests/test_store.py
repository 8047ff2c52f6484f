"""authserver.store: `add_if_absent_and_get`, a one-use entry and reads in one round trip
(issue 18: the gateway's DPoP replay entry and its connection's revocation epoch).

The other operations are exercised with their callers (tests/test_ratelimit.py for the
windows, tests/test_redis_cluster_slots.py for every operation on a Cluster and a Sentinel).
"""

from __future__ import annotations

import uuid

import pytest
import redis

from authserver.store import Store, StoreUnavailableError
from authserver.store.memory import MemoryStore
from authserver.store.redis import RedisStore
from tests.conftest import REDIS_URL, delete_prefixed


def test_add_if_absent_and_get_records_once_and_reads(store: Store) -> None:
    entry, epoch = f"dpop:{uuid.uuid4().hex}", f"conn-epoch:{uuid.uuid4().hex}:crm"
    store.set(epoch, "1700000000")
    assert store.add_if_absent_and_get(entry, 60, [epoch, epoch + ":absent"]) == (
        True, ["1700000000", None])
    # The second use is refused; the reads still answer, as they stand now.
    store.set(epoch, "1700000007")
    assert store.add_if_absent_and_get(entry, 60, [epoch]) == (False, ["1700000007"])
    assert store.add_if_absent(entry, 60) is False  # the same entry as add_if_absent's


def test_memory_add_if_absent_and_get_entry_expires() -> None:
    t = [1000.0]
    store = MemoryStore(clock=lambda: t[0])
    assert store.add_if_absent_and_get("dpop:a", 60, []) == (True, [])
    t[0] += 59
    assert store.add_if_absent_and_get("dpop:a", 60, []) == (False, [])
    t[0] += 1
    assert store.add_if_absent_and_get("dpop:a", 60, []) == (True, [])


def test_redis_add_if_absent_and_get_sets_the_ttl_and_creates_nothing_it_reads() -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex}:"
    try:
        RedisStore(client, prefix=prefix).add_if_absent_and_get("dpop:a", 70, ["epoch"])
        assert 0 < client.ttl(prefix + "dpop:a") <= 70
        assert client.exists(prefix + "epoch") == 0
    finally:
        delete_prefixed(REDIS_URL, prefix)
        client.close()


def test_redis_add_if_absent_and_get_is_one_round_trip(round_trips: list[list[str]]) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(client, prefix=prefix)
    try:
        client.ping()  # the connection's set-up commands
        round_trips.clear()
        store.add_if_absent_and_get("dpop:a", 60, ["epoch"])
        assert round_trips == [["SET", "GET"]]
    finally:
        delete_prefixed(REDIS_URL, prefix)
        client.close()


def test_redis_add_if_absent_and_get_on_a_store_that_does_not_answer_is_503() -> None:
    dead = RedisStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    with pytest.raises(StoreUnavailableError) as exc:
        dead.add_if_absent_and_get("dpop:a", 60, ["epoch"])
    assert (exc.value.error, exc.value.status_code) == ("temporarily_unavailable", 503)


def test_redis_add_if_absent_and_get_error_in_a_read_is_503() -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex}:"
    client.hset(prefix + "epoch", "not", "a string")  # GET on a hash: WRONGTYPE
    try:
        with pytest.raises(StoreUnavailableError) as exc:
            RedisStore(client, prefix=prefix).add_if_absent_and_get("dpop:a", 60, ["epoch"])
        assert exc.value.status_code == 503
    finally:
        delete_prefixed(REDIS_URL, prefix)
        client.close()
