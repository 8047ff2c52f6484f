"""Redis-backed store, shared by every worker and host of a deployment.

Atomic primitives only: `SET NX EX` for replay entries, a Lua INCR+EXPIRE for counters (with
the previous window's GET in the same script for rate windows: one round trip per spend, and
several spends and reads pipelined in one by `incr_windows`),
redis-py's `Lock` (token-checked release) plus an INCR fencing counter for locks. Scripts run
on `self._r`, the one client every command uses.

`from_url` takes one Redis (`redis://`, `rediss://`), a Redis Cluster (`redis+cluster://host:port`,
any node: the client finds the others) or a Sentinel-managed primary
(`redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`; the credentials
are the primary's). Every script's keys share one Cluster hash slot
(tests/test_redis_cluster_slots.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockError, RedisClusterException, RedisError

from authserver.store import LockTimeoutError, StoreUnavailableError, keys

KEY_PREFIX = "authserver:"
#: What a store call turns into StoreUnavailableError (a cluster's "no node answers" is not a
#: RedisError).
_ERRORS = (RedisError, RedisClusterException)
_TIMEOUTS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}

_INCR_WITH_TTL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

#: KEYS[1] this window's counter, KEYS[2] the previous window's (same hash slot).
_INCR_WITH_PREVIOUS = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, tonumber(redis.call('GET', KEYS[2])) or 0}
"""


class RedisStore:
    single_process = False

    def __init__(self, client: redis.Redis, prefix: str = KEY_PREFIX) -> None:
        self._r = client
        self._prefix = prefix
        self._cluster = isinstance(client, RedisCluster)
        self._incr = client.register_script(_INCR_WITH_TTL)
        self._incr_with_previous = client.register_script(_INCR_WITH_PREVIOUS)

    @classmethod
    def from_url(cls, url: str, prefix: str = KEY_PREFIX) -> RedisStore:
        return cls(client_from_url(url), prefix)

    def add_if_absent(self, key: str, ttl: int) -> bool:
        try:
            return bool(self._r.set(self._prefix + key, "1", nx=True, ex=max(1, int(ttl))))
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e

    def add_if_absent_and_get(self, key: str, ttl: int, read: Sequence[str]
                              ) -> tuple[bool, list[str | None]]:
        if self._cluster:
            # As in incr_windows: the keys may live on different nodes; one call each there.
            return self.add_if_absent(key, ttl), [self.get(k) for k in read]
        try:
            pipe = self._r.pipeline(transaction=False)
            pipe.set(self._prefix + key, "1", nx=True, ex=max(1, int(ttl)))
            for k in read:
                pipe.get(self._prefix + k)
            added, *values = pipe.execute()
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e
        return bool(added), [None if value is None else str(value) for value in values]

    def incr(self, key: str, ttl: int) -> int:
        try:
            return int(self._incr(keys=[self._prefix + key], args=[max(1, int(ttl))],
                                  client=self._r))
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e

    def incr_with_previous(self, key: str, previous: str, ttl: int) -> tuple[int, int]:
        try:
            current, before = self._incr_with_previous(
                keys=[self._prefix + key, self._prefix + previous], args=[max(1, int(ttl))],
                client=self._r)
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e
        return int(current), int(before)

    def incr_windows(self, windows: Sequence[tuple[str, str, int]], read: Sequence[str] = ()
                     ) -> tuple[list[tuple[int, int]], list[str | None]]:
        if self._cluster:
            # redis-py's cluster pipeline runs no script: one round trip per command there.
            return ([self.incr_with_previous(key, previous, ttl)
                     for key, previous, ttl in windows], [self.get(key) for key in read])
        # A pipeline, not a transaction. EVAL rather than the registered script's EVALSHA: a
        # pipelined EVALSHA makes redis-py check SCRIPT EXISTS first, a second round trip.
        try:
            pipe = self._r.pipeline(transaction=False)
            for key, previous, ttl in windows:
                pipe.eval(_INCR_WITH_PREVIOUS, 2, self._prefix + key, self._prefix + previous,
                          max(1, int(ttl)))
            for key in read:
                pipe.get(self._prefix + key)
            answers = pipe.execute()
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e
        spends, values = answers[:len(windows)], answers[len(windows):]
        return ([(int(current), int(before)) for current, before in spends],
                [None if value is None else str(value) for value in values])

    def get(self, key: str) -> str | None:
        try:
            value = self._r.get(self._prefix + key)
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e
        return None if value is None else str(value)

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        try:
            self._r.set(self._prefix + key, value, ex=None if ttl is None else max(1, int(ttl)))
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e

    def delete(self, key: str) -> None:
        try:
            self._r.delete(self._prefix + key)
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e

    @contextmanager
    def lock(self, name: str, *, timeout: float, blocking_timeout: float) -> Iterator[int]:
        lock = self._r.lock(
            self._prefix + keys.lock(name), timeout=timeout, blocking_timeout=blocking_timeout
        )
        try:
            acquired = lock.acquire()
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis lock: {type(e).__name__}") from e
        if not acquired:
            raise LockTimeoutError(debug=f"lock {name} not acquired in {blocking_timeout}s")
        try:
            try:
                fence = int(self._r.incr(self._prefix + keys.fence(name)))
            except _ERRORS as e:
                raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e
            yield fence
        finally:
            # Expired (held past `timeout`) or Redis gone: the fencing token protects writers.
            with contextlib.suppress(LockError, *_ERRORS):
                lock.release()

    def ping(self) -> None:
        try:
            self._r.ping()
        except _ERRORS as e:
            raise StoreUnavailableError(debug=f"redis: {type(e).__name__}") from e


def client_from_url(url: str) -> redis.Redis:
    """The client for a `redis://`, `rediss://`, `redis+cluster://` or `redis+sentinel://` URL.

    A cluster client reads the slot map from the node named at construction (it refuses to
    start if none answers); a Sentinel client asks the sentinels for the primary on each new
    connection, so a failover reaches it without a restart."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("redis+cluster", "rediss+cluster"):
        cluster = RedisCluster.from_url(
            scheme.split("+")[0] + "://" + rest, decode_responses=True, **_TIMEOUTS)
        return cluster  # type: ignore[return-value]  # the same command API
    if scheme == "redis+sentinel" and sep:
        from urllib.parse import unquote

        from redis.sentinel import Sentinel

        netloc, _, path = rest.partition("/")
        userinfo, _, hosts = netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        service, _, db = path.strip("/").partition("/")
        if not hosts or not service:
            raise ValueError("redis+sentinel:// needs host:port[,host:port...]/service_name")
        sentinels = []
        for node in hosts.split(","):  # host:port, or [v6]:port
            host, _, port = (node[1:].partition("]") if node.startswith("[")
                             else node.partition(":"))
            sentinels.append((host, int(port.lstrip(":") or 26379)))
        return Sentinel(sentinels, sentinel_kwargs=dict(_TIMEOUTS), **_TIMEOUTS).master_for(
            unquote(service), db=int(db or 0), username=unquote(username) or None,
            password=unquote(password) or None, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True, **_TIMEOUTS)
