"""Clients and registered resource servers cached in process, valid while one shared
generation is unchanged (issue 18: a client_credentials request runs no SQL statement).

A token request needs its client (authentication, grants, scopes, DPoP flags) and, when it
names a `resource`, the registered resource servers. Both change rarely, and a change must
take effect on every instance at once. So each instance keeps immutable snapshots
(`ClientSnapshot`, `ResourceSnapshot`; never a SQLAlchemy row), each tagged with the
generation it was loaded under, and a snapshot is used only while the shared store's
generation (`store.keys.registry_generation()`, one GET; the token endpoint reads it in its
address budget's round trip, `generation_from`) still equals that tag:

- **Writers** (`watch`): every session of the instance's `Database` that changes a
  `clients` or `resource_servers` row (ORM add/change/delete, or a bulk `update`/`delete`
  statement) sets a new random generation before its commit (a store error refuses the
  commit: fail closed) and again after it (a reader that loaded the old row between the two
  tagged it with the first). Random values, never a counter: a store that lost the key and
  counts again could not bring back a value something was cached under.
- **Readers**: read the generation first, then load; a generation that cannot be read is
  `StoreUnavailableError` (503), never a snapshot. An absent generation (a new or flushed
  store) is set to a new random value before loading.
- **The embedded store** (no Redis) is one process's: instances sharing a database could not
  see each other's generation, so nothing is cached and every lookup reads the database, as
  before (production runs Redis).
- **Backstops**: a snapshot is also dropped `MAX_AGE` seconds after it was loaded (a write
  made where no bump could follow it, say a migration while old instances run); at most
  `MAX_CLIENTS` clients are kept (least recently used dropped). Unknown client ids and URL
  client ids (authserver.cimd: their rows follow a fetched document) are never cached.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session

from authserver.models import Client, ResourceServer
from authserver.store import Store, StoreUnavailableError
from authserver.store.keys import registry_generation

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

log = logging.getLogger(__name__)

#: Seconds a snapshot is used at most, whatever the generation says.
MAX_AGE = 60
MAX_CLIENTS = 10_000
#: The tables whose rows are cached here.
TABLES = frozenset({Client.__tablename__, ResourceServer.__tablename__})
_CHANGED = "authserver.registry_changed"  # Session.info flag: this transaction wrote them


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a private deep copy (nested values are the snapshot's own)."""
    return MappingProxyType(copy.deepcopy(dict(value)))


@dataclass(frozen=True)
class ClientSnapshot:
    """What authentication and the grants read of a `Client` row, detached and read-only
    (`authserver.clients.ClientRecord`)."""

    client_id: str
    secret_hash: str | None
    token_endpoint_auth_method: str
    client_metadata: Mapping[str, Any]
    attributes: Mapping[str, Any]
    client_id_issued_at: int

    @classmethod
    def of(cls, row: Client) -> ClientSnapshot:
        return cls(row.client_id, row.secret_hash, row.token_endpoint_auth_method,
                   _frozen(row.client_metadata or {}), _frozen(row.attributes or {}),
                   row.client_id_issued_at)

    # The row's derived views, the same code (they read only the fields above).
    redirect_uris = Client.redirect_uris
    grant_types = Client.grant_types
    dpop_bound_access_tokens = Client.dpop_bound_access_tokens
    is_public = Client.is_public


@dataclass(frozen=True)
class ResourceSnapshot:
    """A `ResourceServer` row, detached and read-only."""

    uri: str
    name: str
    scopes: tuple[str, ...]
    token_types: tuple[str, ...]
    introspection_client_id: str | None
    created_at: int

    @classmethod
    def of(cls, row: ResourceServer) -> ResourceSnapshot:
        return cls(row.uri, row.name, tuple(row.scopes or ()), tuple(row.token_types or ()),
                   row.introspection_client_id, row.created_at)


@dataclass(frozen=True)
class Resources:
    """The registered resource servers by URI, and the resources admin-registered
    resource-server clients serve (their `resources` attribute)."""

    servers: Mapping[str, ResourceSnapshot]
    served: frozenset[str]


@dataclass(frozen=True)
class _Entry:
    generation: str
    loaded_at: int
    value: Any


class RegistryCache:
    """One instance's snapshots (thread-safe). `store_of` gives the store at each use (the
    services' current one)."""

    def __init__(self, store_of: Callable[[], Store], *, max_clients: int = MAX_CLIENTS,
                 max_age: int = MAX_AGE) -> None:
        self._store_of = store_of
        self._max_clients = max_clients
        self._max_age = max_age
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Entry] = OrderedDict()
        self._resources: _Entry | None = None

    # --- the generation ---------------------------------------------------------------------

    def generation(self) -> str | None:
        """The current generation, or None with the embedded store (no snapshot holds: see
        the module docstring); raises `StoreUnavailableError`."""
        store = self._store_of()
        if store.single_process:
            return None
        return self.generation_from(store.get(registry_generation()))

    def generation_from(self, stored: str | None) -> str | None:
        """`generation()`, given what `registry_generation()` held when the caller read it in
        a round trip it made anyway (the token endpoint's address budget)."""
        store = self._store_of()
        if store.single_process:
            return None
        if stored is None:
            stored = secrets.token_hex(16)
            store.set(registry_generation(), stored)
        return stored

    def bump(self) -> None:
        """A new generation: every instance's snapshots stop holding."""
        self._store_of().set(registry_generation(), secrets.token_hex(16))

    def _fresh(self, entry: _Entry | None, generation: str | None, now: int) -> bool:
        return generation is not None and entry is not None and entry.generation == generation \
            and 0 <= now - entry.loaded_at < self._max_age

    # --- clients ----------------------------------------------------------------------------

    def client(self, session: Session, client_id: str, *, now: int,
               generation: str | None = None) -> ClientSnapshot | None:
        """The registered client `client_id` (not a URL id: authserver.cimd), or None.
        `generation` is one this request has read already (`generation_from`); without it
        the generation is read here."""
        generation = generation or self.generation()
        with self._lock:
            entry = self._clients.get(client_id)
            if self._fresh(entry, generation, now):
                self._clients.move_to_end(client_id)
                return entry.value  # type: ignore[union-attr]
        row = session.get(Client, client_id)
        if row is None:
            return None
        snapshot = ClientSnapshot.of(row)
        # Never cache what this transaction may undo.
        if generation is not None and not _writes_registry(session):
            with self._lock:
                self._clients[client_id] = _Entry(generation, now, snapshot)
                self._clients.move_to_end(client_id)
                while len(self._clients) > self._max_clients:
                    self._clients.popitem(last=False)
        return snapshot

    # --- resource servers -------------------------------------------------------------------

    def resources(self, load: Callable[[], Resources], *, now: int) -> Resources:
        """The registered resource servers, `load`ed when no snapshot holds."""
        generation = self.generation()
        with self._lock:
            if self._fresh(self._resources, generation, now):
                return self._resources.value  # type: ignore[union-attr]
        value = load()
        if generation is not None:
            with self._lock:
                self._resources = _Entry(generation, now, value)
        return value


def load_resources(session: Session) -> Resources:
    """Every registered resource server, and every resource a client's `resources` attribute
    names (one session, two reads)."""
    servers = {row.uri: ResourceSnapshot.of(row) for row in session.scalars(select(ResourceServer))}
    served = frozenset(
        r for attrs in session.scalars(
            select(Client.attributes).where(Client.attributes["resources"].is_not(None)))
        for r in (attrs or {}).get("resources") or [] if isinstance(r, str))
    return Resources(MappingProxyType(servers), served)


# --- writers ------------------------------------------------------------------------------------


def _touches(objects: Iterable[object]) -> bool:
    return any(isinstance(o, (Client, ResourceServer)) for o in objects)


def _writes_registry(session: Session) -> bool:
    if session.info.get(_CHANGED):
        return True
    return _touches(session.new) or _touches(session.dirty) or _touches(session.deleted)


def watch(factory: sessionmaker[Session], cache: RegistryCache) -> None:
    """Bump `cache`'s generation around every commit of a `factory` session that wrote a
    client or a resource server."""

    def note_flush(session: Session, _context: Any, _instances: Any) -> None:
        if _writes_registry(session):
            session.info[_CHANGED] = True

    def note_statement(state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            table = getattr(state.statement, "table", None)
            if getattr(table, "name", None) in TABLES:
                state.session.info[_CHANGED] = True

    def before_commit(session: Session) -> None:
        if _writes_registry(session):
            session.info[_CHANGED] = True
            cache.bump()  # StoreUnavailableError: the commit does not happen

    def after_commit(session: Session) -> None:
        if session.info.pop(_CHANGED, False):
            try:
                cache.bump()
            except StoreUnavailableError:
                # The first bump held; only a reader between the two may keep the old row,
                # until MAX_AGE.
                log.warning("client cache: generation not renewed after a commit")

    event.listen(factory, "before_flush", note_flush)
    event.listen(factory, "do_orm_execute", note_statement)
    event.listen(factory, "before_commit", before_commit)
    event.listen(factory, "after_commit", after_commit)
