"""Redis Cluster and Sentinel: every multi-key command hashes to one slot; the store runs on both.

Redis Cluster refuses a script (or MGET, DEL k1 k2 ...) whose keys hash to different slots
(CROSSSLOT). The store's only multi-key command is the rate limiter's Lua script
(`incr_with_previous`: this window and the last); its keys share the subject's `{…}` hash tag
(authserver/store/keys.py). This module records every command the store's operations send,
through the real key builders and the real rate limiter, and checks the slots; then it starts a
three-node Redis Cluster and a Sentinel on spare ports (only if `redis-server` is installed) and
runs the store's operations through `redis+cluster://` and `redis+sentinel://` URLs.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from authserver.dpop import replay_key
from authserver.ratelimit import REQUEST_LIMITS, RateLimiter
from authserver.store import keys
from authserver.store.redis import RedisStore, client_from_url
from tests.conftest import NOW, REDIS_URL, delete_prefixed

USER = "usr_alice:{not-a-tag}"
AGENT = "cli_{agent}:b"
PACKAGE = Path(__file__).resolve().parent.parent / "authserver"
#: Commands whose key count is their first argument (EVAL/EVALSHA numkeys), or all-keys ones.
SCRIPTS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL"}
ALL_KEYS = {"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH", "SDIFF", "SINTER", "SUNION"}


class RecordingRedis(redis.Redis):
    """A real client that notes each command's keys (for the multi-key ones)."""

    seen: list[tuple[str, list[str]]]

    def note(self, args: tuple[Any, ...]) -> None:
        name = str(args[0]).upper()
        if name in SCRIPTS:
            self.seen.append((name, [str(k) for k in args[3:3 + int(args[2])]]))
        elif name in ALL_KEYS or name in {"MSET", "MSETNX"}:
            step = 2 if name.startswith("MSET") else 1
            self.seen.append((name, [str(k) for k in args[1::step]]))
        else:
            self.seen.append((name, [str(args[1])] if len(args) > 1 else []))

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.note(args)
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A pipeline whose queued commands are noted too (`incr_windows`)."""
        pipe = super().pipeline(transaction, shard_hint)
        queue = pipe.pipeline_execute_command

        def noting(*args: Any, **options: Any) -> Any:
            self.note(args)
            return queue(*args, **options)

        pipe.pipeline_execute_command = noting  # type: ignore[method-assign]
        return pipe


def exercise(store: Any) -> None:
    """Every Store operation, with every key family the code base builds, and the rate
    limiter's real spends (the one multi-key script)."""
    limiter = RateLimiter(store)
    for name in REQUEST_LIMITS:
        limiter.hit(name, "alice@example.com", now=NOW)
        limiter.hit(name, "cli_{a}", now=NOW + 3600)
    for action_class in ("read", "write", "destructive"):
        limiter.check(user_id=USER, agent_id=AGENT, action_class=action_class, now=NOW)
    assert store.add_if_absent(keys.oidc_nonce("n"), 60) is True
    assert store.add_if_absent(keys.oidc_nonce("n"), 60) is False
    store.set(keys.connection_epoch(USER, "projects"), "7", ttl=60)
    epoch = [keys.connection_epoch(USER, "projects")]
    proof = replay_key("https://as.example/gateway/projects/x", "jti-1", "jkt-1")
    assert store.add_if_absent_and_get(proof, 60, epoch) == (True, ["7"])
    assert store.add_if_absent_and_get(proof, 60, epoch) == (False, ["7"])
    assert store.incr(keys.capability_writes("jti-1"), 60) == 1
    assert store.incr_with_previous(keys.rate_agent("x") + ":2", keys.rate_agent("x") + ":1",
                                    60) == (1, 0)
    agent, user = keys.rate_agent("y"), keys.rate_user("read", USER)
    store.set(keys.registry_generation(), "g1")
    assert store.incr_windows([(agent + ":2", agent + ":1", 60), (user + ":2", user + ":1", 60)],
                              [keys.registry_generation()]) == ([(1, 0), (1, 0)], ["g1"])
    store.set(keys.connection_epoch(USER, "crm"), "3", ttl=60)
    assert store.get(keys.connection_epoch(USER, "crm")) == "3"
    store.delete(keys.connection_epoch(USER, "crm"))
    assert store.get(keys.connection_epoch(USER, "crm")) is None
    for name in (keys.refresh_lock(USER, "crm"), keys.approval_lock(USER, AGENT)):
        with store.lock(name, timeout=5, blocking_timeout=1) as first:
            pass
        with store.lock(name, timeout=5, blocking_timeout=1) as second:
            assert second == first + 1
    store.ping()


def test_the_only_scripts_are_the_ones_checked_here():
    """Only store/redis.py talks to Redis (the `Store` methods take one key each, but
    `incr_with_previous`, `incr_windows` and `add_if_absent_and_get`); its multi-key calls are
    the scripts exercised here (`incr_windows` pipelines the same script, EVAL'd, and GETs;
    `add_if_absent_and_get` a SET NX and GETs: a pipeline that is not a transaction may span
    slots). A new script or multi-key call must be added to `exercise` (and its keys given one
    hash tag)."""
    talks_to_redis = sorted(
        path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
        if re.search(r"^\s*(import redis\b|from redis(?!\.exceptions )(\.\w+)* import)",
                     path.read_text(), re.M))
    assert talks_to_redis == ["store/redis.py"]
    source = (PACKAGE / "store/redis.py").read_text()
    calls = re.findall(r"\.(register_script|eval|evalsha|pipeline|mget|mset|msetnx|unlink|"
                       r"transaction|delete)\(([^)]*)\)", source)
    assert sorted(name for name, _ in calls) == ["delete", "eval", "pipeline", "pipeline",
                                                 "register_script", "register_script"]
    assert [args for name, args in calls if name == "pipeline"] == ["transaction=False"] * 2
    assert [args.split(",")[0] for name, args in calls if name == "eval"] == [
        "_INCR_WITH_PREVIOUS"]
    assert [args for name, args in calls if name == "delete"] == ["self._prefix + key"]
    scripts = re.findall(r'^(_[A-Z_]+) = """', source, re.M)
    assert scripts == ["_INCR_WITH_TTL", "_INCR_WITH_PREVIOUS"]


def test_every_multi_key_command_maps_to_one_slot():
    client = RecordingRedis.from_url(REDIS_URL, decode_responses=True)
    client.seen = []
    prefix = f"test:{uuid.uuid4().hex}:"
    try:
        exercise(RedisStore(client, prefix=prefix))
    finally:
        delete_prefixed(REDIS_URL, prefix)
    multi = [(name, ks) for name, ks in client.seen if len(ks) > 1]
    # the hits; read and write (each with the agent's); destructive (with write and the
    # agent's); incr_with_previous; incr_windows' two windows
    spends = len(REQUEST_LIMITS) * 2 + 2 + 2 + 3 + 1 + 2
    assert len(multi) == spends, client.seen
    for name, ks in multi:
        assert len({key_slot(k.encode()) for k in ks}) == 1, (name, ks)
    # The rate windows are the script's keys; the subject is the tag, not the window index.
    assert {name for name, _ in multi} == {"EVAL", "EVALSHA"}
    # Distinct subjects land on different slots (the tag spreads load; not one hot slot).
    rate_slots = {key_slot(ks[0].encode()) for _, ks in multi}
    assert len(rate_slots) > 3


def test_a_lock_and_its_fence_are_single_key_commands():
    """redis-py's Lock scripts take one key (the lock); the fencing INCR is its own command, so
    the lock and its counter may live on different nodes."""
    client = RecordingRedis.from_url(REDIS_URL, decode_responses=True)
    client.seen = []
    prefix = f"test:{uuid.uuid4().hex}:"
    with RedisStore(client, prefix=prefix).lock(keys.refresh_lock(USER, "crm"), timeout=5,
                                                blocking_timeout=1):
        pass
    delete_prefixed(REDIS_URL, prefix)
    assert client.seen and all(len(ks) <= 1 for _, ks in client.seen), client.seen


def test_sentinel_and_cluster_urls_parse_without_connecting():
    client = client_from_url("redis+sentinel://u%40x:p%3Aw@[::1]:26380,sentinel-b/my%20primary/3")
    pool: Any = client.connection_pool
    assert pool.service_name == "my primary"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["username"] == "u@x"
    assert pool.connection_kwargs["password"] == "p:w"
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("::1", 26380), ("sentinel-b", 26379)]
    assert all(s["socket_timeout"] == 2.0 for s in sentinels)
    with pytest.raises(ValueError):
        client_from_url("redis+sentinel://127.0.0.1:26379")  # no service name
    plain = client_from_url("redis://127.0.0.1:6379/15")
    assert plain.connection_pool.connection_kwargs["socket_timeout"] == 2.0


# --- a real cluster and a real sentinel, on spare ports -----------------------------------------

needs_redis_server = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="redis-server/redis-cli not installed")


def _free_port(also_free: int = 0) -> int:
    """A port that is free, and (for a cluster node) whose bus port `port + also_free` too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + also_free > 65535:
            continue
        if also_free:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + also_free))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


def _wait(predicate: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _server(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["redis-server", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("cluster")
    ports = [_free_port(also_free=10000) for _ in range(3)]
    nodes = [_server(["--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                      "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"],
                     base / str(p)) for p in ports]
    try:
        for p in ports:
            _wait(lambda p=p: redis.Redis(port=p).ping(), f"node {p}")
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        _wait(lambda: all(b"cluster_state:ok" in redis.Redis(port=p).execute_command(
            "CLUSTER", "INFO") for p in ports), "cluster_state:ok")
        yield f"redis+cluster://127.0.0.1:{ports[0]}/0"
    finally:
        _stop(nodes)


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("sentinel")
    primary, sentinel = _free_port(), _free_port()
    conf = base / "sentinel.conf"  # a sentinel rewrites its config file: it must be its own
    conf.write_text(f"port {sentinel}\nbind 127.0.0.1\n"
                    f"sentinel monitor primary-{primary} 127.0.0.1 {primary} 1\n")
    procs = [_server(["--port", str(primary), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"], base / "primary")]
    try:
        _wait(lambda: redis.Redis(port=primary).ping(), "primary")
        procs.append(_server([str(conf), "--sentinel"], base))
        _wait(lambda: redis.Redis(port=sentinel).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", f"primary-{primary}"), "sentinel")
        yield f"redis+sentinel://127.0.0.1:{sentinel}/primary-{primary}/2"
    finally:
        _stop(procs)


@needs_redis_server
def test_the_store_runs_on_a_redis_cluster(cluster_url: str):
    store = RedisStore.from_url(cluster_url, prefix=f"test:{uuid.uuid4().hex}:")
    exercise(store)
    # A script whose keys span slots is refused, and fails closed as the store's error.
    from authserver.store import StoreUnavailableError

    with pytest.raises(StoreUnavailableError):
        store.incr_with_previous("rl:{a}:1", "rl:{b}:0", 60)


@needs_redis_server
def test_the_store_runs_on_a_sentinel_primary(sentinel_url: str):
    store = RedisStore.from_url(sentinel_url, prefix=f"test:{uuid.uuid4().hex}:")
    exercise(store)
    assert store._r.connection_pool.connection_kwargs["db"] == 2
