"""authserver.client_cache: clients and resource servers cached while one shared generation
holds; every write through a watched session renews it, and a store that cannot answer is
never read as "unchanged"."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from authserver.client_cache import ClientSnapshot, RegistryCache, load_resources, watch
from authserver.db import Database
from authserver.models import Client, ResourceServer
from authserver.models.base import Base
from authserver.store import StoreUnavailableError
from authserver.store.keys import registry_generation
from authserver.store.memory import MemoryStore

NOW = 1_700_000_000


class SharedStore(MemoryStore):
    """An embedded store standing in for Redis: what two caches share."""

    single_process = False


class DownStore(SharedStore):
    def get(self, key: str) -> str | None:
        raise StoreUnavailableError(debug="down")

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        raise StoreUnavailableError(debug="down")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/cache.db")
    Base.metadata.create_all(database.engine)
    yield database
    database.engine.dispose()


@pytest.fixture
def store() -> SharedStore:
    return SharedStore()


@pytest.fixture
def cache(db: Database, store: SharedStore) -> RegistryCache:
    registry = RegistryCache(lambda: store)
    watch(db.sessionmaker, registry)
    return registry


@pytest.fixture
def statements(db: Database) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(statement))
    return seen


def add_client(db: Database, client_id: str = "cli_a", **attributes: Any) -> None:
    with db.session() as session:
        session.add(Client(client_id=client_id, secret_hash="0" * 64,
                           token_endpoint_auth_method="client_secret_basic",
                           client_metadata={"grant_types": ["client_credentials"],
                                            "scope": "read"},
                           attributes=attributes, client_id_issued_at=NOW))


def lookup(db: Database, cache: RegistryCache, client_id: str = "cli_a",
           now: int = NOW) -> ClientSnapshot | None:
    with db.session() as session:
        return cache.client(session, client_id, now=now)


def test_a_cached_client_is_a_read_only_snapshot_read_without_sql(
        db: Database, cache: RegistryCache, statements: list[str]) -> None:
    add_client(db, trusted_edge=True)
    first = lookup(db, cache)
    assert isinstance(first, ClientSnapshot)
    assert first.grant_types == ["client_credentials"] and first.attributes["trusted_edge"]
    statements.clear()
    assert lookup(db, cache) is first
    assert statements == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.secret_hash = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.attributes["trusted_edge"] = False  # type: ignore[index]


@pytest.mark.parametrize("write", ["orm_change", "bulk_update", "orm_delete", "bulk_delete"])
def test_every_write_to_a_client_renews_the_generation(
        db: Database, cache: RegistryCache, store: SharedStore, write: str) -> None:
    add_client(db)
    assert lookup(db, cache) is not None
    before = store.get(registry_generation())
    with db.session() as session:
        if write == "orm_change":
            row = session.get(Client, "cli_a")
            assert row is not None
            row.attributes = {"executor": True}
        elif write == "bulk_update":
            session.execute(update(Client).values(attributes={"executor": True}))
        elif write == "orm_delete":
            session.delete(session.get(Client, "cli_a"))
        else:
            from sqlalchemy import delete

            session.execute(delete(Client))
    assert store.get(registry_generation()) != before
    seen = lookup(db, cache)
    assert (seen is None) if "delete" in write else (seen is not None
                                                      and seen.attributes["executor"])


def test_another_instance_sees_a_change_at_once(db: Database, cache: RegistryCache,
                                                store: SharedStore) -> None:
    other = RegistryCache(lambda: store)  # a second instance: same store, same database
    add_client(db)
    assert lookup(db, other) is not None
    with db.session() as session:  # written through the first instance's sessions
        session.execute(update(Client).values(token_endpoint_auth_method="private_key_jwt"))
    seen = lookup(db, other)
    assert seen is not None and seen.token_endpoint_auth_method == "private_key_jwt"


def test_an_unrelated_write_keeps_the_generation(db: Database, cache: RegistryCache,
                                                 store: SharedStore) -> None:
    from authserver.models import RevokedToken

    add_client(db)
    lookup(db, cache)
    before = store.get(registry_generation())
    with db.session() as session:
        session.add(RevokedToken(jti="jti-1", expires_at=NOW))
    assert store.get(registry_generation()) == before


class CountingStore(SharedStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, key: str) -> str | None:
        self.gets += 1
        return super().get(key)


def test_a_generation_read_by_the_caller_is_used_without_reading_it_again(
        db: Database, statements: list[str]) -> None:
    """The token endpoint reads the generation in its address budget's round trip."""
    store = CountingStore()
    registry = RegistryCache(lambda: store)
    watch(db.sessionmaker, registry)
    add_client(db)
    generation = registry.generation_from(store.get(registry_generation()))
    first = lookup(db, registry)
    store.gets, statements[:] = 0, []
    with db.session() as session:
        assert registry.client(session, "cli_a", now=NOW, generation=generation) is first
    assert (store.gets, statements) == (0, [])
    # A generation read before a change no longer holds once the change has been read.
    with db.session() as session:
        session.execute(update(Client).values(attributes={"executor": True}))
    renewed = registry.generation_from(store.get(registry_generation()))
    assert renewed != generation
    with db.session() as session:
        seen = registry.client(session, "cli_a", now=NOW, generation=renewed)
    assert seen is not None and seen.attributes["executor"]


def test_generation_from_an_absent_value_sets_a_new_one(store: SharedStore) -> None:
    registry = RegistryCache(lambda: store)
    generation = registry.generation_from(None)
    assert generation and store.get(registry_generation()) == generation
    assert registry.generation_from("g-read") == "g-read"
    assert RegistryCache(MemoryStore).generation_from("g-read") is None  # caches nothing


def test_a_store_error_is_no_snapshot_and_no_write(db: Database) -> None:
    registry = RegistryCache(lambda: DownStore())
    watch(db.sessionmaker, registry)
    with pytest.raises(StoreUnavailableError), db.session() as session:
        registry.client(session, "cli_a", now=NOW)
    # A write whose generation cannot be renewed is not committed (fail closed).
    with pytest.raises(StoreUnavailableError):
        add_client(db)
    with db.session() as session:
        assert session.get(Client, "cli_a") is None


def test_a_snapshot_expires_after_max_age_and_the_cache_is_bounded(
        db: Database, store: SharedStore, statements: list[str]) -> None:
    registry = RegistryCache(lambda: store, max_clients=2, max_age=60)
    for cid in ("cli_a", "cli_b", "cli_c"):
        add_client(db, cid)
        lookup(db, registry, cid)
    statements.clear()
    lookup(db, registry, "cli_c")
    assert statements == []
    lookup(db, registry, "cli_a")  # dropped: only two are kept
    assert statements
    statements.clear()
    lookup(db, registry, "cli_a", now=NOW + 60)
    assert statements


def test_the_embedded_store_caches_nothing(db: Database, statements: list[str]) -> None:
    registry = RegistryCache(MemoryStore)  # one process's: other instances cannot see it
    add_client(db)
    lookup(db, registry)
    statements.clear()
    assert lookup(db, registry) is not None
    assert statements


def test_resources_are_cached_and_renewed_by_a_resource_server_write(
        db: Database, cache: RegistryCache, statements: list[str]) -> None:
    def load() -> Any:
        with db.session() as session:
            return load_resources(session)

    add_client(db, "cli_rs", resources=["https://rs.example/"])
    assert cache.resources(load, now=NOW).served == {"https://rs.example/"}
    statements.clear()
    assert not cache.resources(load, now=NOW).servers
    assert statements == []
    with db.session() as session:
        session.add(ResourceServer(uri="https://tools.example/", name="Tools", scopes=["read"],
                                   token_types=["dpop"], created_at=NOW))
    servers = cache.resources(load, now=NOW).servers
    assert servers["https://tools.example/"].token_types == ("dpop",)
