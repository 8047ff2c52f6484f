"""Audit log: append-only, hash-chained decision records (docs/architecture.md "Audit").

Every exchange, gateway call, approval decision, connection change and deprovisioning writes
one `AuditEvent` before its response is sent. Each record's `hash` is SHA-256 over the
canonical JSON (sorted keys, compact) of its content, its global `seq` and the previous
record's hash, so editing, deleting or reordering records breaks the chain and
`AuditLog.verify` names the first bad record (shard and position).

The log is AUDIT_SHARDS chains (shards 1..N) so appends do not queue behind one lock (issue
18): an append locks one shard's `audit_chain_head` row (an UPDATE first, so the lock is taken
before the head is read: a row lock on PostgreSQL, the database write lock on SQLite), links
to that shard's previous record and holds the lock until the caller's transaction ends, so
append last, then commit. On PostgreSQL it takes the first shard nobody holds, starting at
its thread's own (SKIP LOCKED), and waits only when all N are held. Shard 0 holds anchors:
records that state every shard's (position, head hash), written by `authserver audit anchor`
and by every ANCHOR_EVERY-th append of a shard, so deleting a shard's newest records and
rewinding its head is caught up to the last anchor that covered them (docs/standards.md
AUD-01..03).

No token value ever enters a record: `redact` strips JWT-shaped and long opaque strings, and
values under credential-looking keys, from `detail` and the intent's free text.

Only decisions about real principals are recorded: a verified capability token, an
authenticated client. A refusal before anyone is authenticated (a gateway request without a
valid token, a failed client authentication) would let an anonymous client take the chain's
lock at will and throttle every exchange (issue 13, item 8), so `refused_unauthenticated`
counts it (`authserver_unauthenticated_rejections_total`) and logs it at most once per
`UNAUTHENTICATED_LOG_INTERVAL` per event and reason and process, with how many it stands for.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from authserver.audit_records import _HASHED_COLUMNS as _HASHED_COLUMNS

# The record side and the unauthenticated-refusal counter live beside the chain; their names
# are re-exported so callers import one module.
from authserver.audit_records import ANCHOR_EVENT as ANCHOR_EVENT
from authserver.audit_records import MAX_DETAIL_BYTES as MAX_DETAIL_BYTES
from authserver.audit_records import MAX_DETAIL_STRING as MAX_DETAIL_STRING
from authserver.audit_records import MAX_REQUEST_TEXT as MAX_REQUEST_TEXT
from authserver.audit_records import MAX_TAIL as MAX_TAIL
from authserver.audit_records import OUTCOMES as OUTCOMES
from authserver.audit_records import REDACTED as REDACTED
from authserver.audit_records import AuditRecord as AuditRecord
from authserver.audit_records import _row_values as _row_values
from authserver.audit_records import canonical_json as canonical_json
from authserver.audit_records import event_as_dict as event_as_dict
from authserver.audit_records import record_hash as record_hash
from authserver.audit_records import redact as redact
from authserver.audit_records import redact_jwts as redact_jwts
from authserver.audit_records import redact_mapping as redact_mapping
from authserver.audit_records import redact_text as redact_text
from authserver.audit_unauthenticated import UNAUTHENTICATED_EVENTS as UNAUTHENTICATED_EVENTS
from authserver.audit_unauthenticated import (
    UNAUTHENTICATED_LOG_INTERVAL as UNAUTHENTICATED_LOG_INTERVAL,
)
from authserver.audit_unauthenticated import RateLimitedLog as RateLimitedLog
from authserver.audit_unauthenticated import refused_unauthenticated as refused_unauthenticated
from authserver.db import DatabaseUnavailableError
from authserver.models.audit import GLOBAL_SEQ, AuditChainHead, AuditEvent, shard_genesis

#: Record chains (shards 1..AUDIT_SHARDS); more shards, fewer appenders per lock.
AUDIT_SHARDS = 8
#: The shard of anchors (the top-level chain over the shards' heads).
ANCHOR_SHARD = 0
#: A shard's append at a position that is a multiple of this also writes an anchor.
ANCHOR_EVERY = 1000

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ShardResult:
    """One shard's verification: `first_bad_seq` is a position in that shard's chain;
    `anchored_seq` is how far the newest anchor vouches for it (truncation of records past
    it, with the head rewound too, cannot be told from records never written)."""

    shard: int
    ok: bool
    count: int
    head_seq: int
    first_bad_seq: int | None
    reason: str
    anchored_seq: int = 0


@dataclass(frozen=True)
class VerifyResult:
    """The whole log: `count` records in all shards; the first failure (lowest shard) names
    its `shard` and its position there (`first_bad_seq`); `shards` has every shard's result."""

    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
    shard: int | None = None
    shards: tuple[ShardResult, ...] = ()


@dataclass(frozen=True)
class AppendedRecord:
    """What an append (or anchor) wrote: its global `seq`, its `shard` and position there
    (`shard_seq`), its `hash`, and `values`, every stored column as the database holds it
    (read-only). Written by Core statements in the caller's transaction, not an ORM object:
    the session does not hold it, and a later ORM query in the same session loads the row
    from the database."""

    seq: int
    shard: int
    shard_seq: int
    hash: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class _Slot:
    """A reserved place: `shard_seq` in `shard` after `prev_hash`, global number `seq`."""

    shard: int
    shard_seq: int
    prev_hash: str
    seq: int


_thread_shard = threading.local()
_shard_counter = itertools.count()


def preferred_shard() -> int:
    """This thread's shard, 1..AUDIT_SHARDS: threads of a process take them in turn (offset
    by the pid so processes start apart), so a thread, which serves one request at a time,
    only meets another thread's appends when there are more threads than shards. Chosen
    again after a fork (a child is a new appender)."""
    pid = os.getpid()
    mine = getattr(_thread_shard, "value", None)
    if mine is None or mine[0] != pid:
        mine = (pid, (pid + next(_shard_counter)) % AUDIT_SHARDS + 1)
        _thread_shard.value = mine
    return int(mine[1])


class _Statements:
    """The append's statements, built once (Core, on the mapped tables), with their values as
    bound parameters: `take_free_shard` (PostgreSQL: the first record shard nobody holds, from
    `preferred` on), `bump`/`bump_postgres` (one shard, by `shard`; PostgreSQL also draws the
    global `seq`), `insert` and `move_head` (SQLite), and `insert_and_move_head` (PostgreSQL:
    the INSERT as a data-modifying CTE of the head's UPDATE)."""

    def __init__(self) -> None:
        heads = cast(Table, AuditChainHead.__table__)
        events = cast(Table, AuditEvent.__table__)
        returning = (heads.c.id, heads.c.seq, heads.c.head_hash)
        free = (
            select(heads.c.id)
            .where(heads.c.id.between(1, AUDIT_SHARDS))
            .order_by((heads.c.id - bindparam("preferred", type_=Integer) + AUDIT_SHARDS)
                      % AUDIT_SHARDS)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        bump = update(heads).values(seq=heads.c.seq + 1)
        self.take_free_shard = bump.where(heads.c.id == free).returning(
            *returning, GLOBAL_SEQ.next_value())
        self.bump = bump.where(heads.c.id == bindparam("shard")).returning(*returning)
        self.bump_postgres = bump.where(heads.c.id == bindparam("shard")).returning(
            *returning, GLOBAL_SEQ.next_value())
        # Bound as `v_<column>`: a bindparam may not take a column's own name in VALUES.
        self.insert = insert(events).values(
            {c.name: bindparam("v_" + c.name, type_=c.type) for c in events.columns})
        self.move_head = update(heads).where(heads.c.id == bindparam("head_shard")).values(
            head_hash=bindparam("head_hash"))
        self.insert_and_move_head = self.move_head.add_cte(self.insert.cte("audit_record"))


_STATEMENTS = _Statements()


class AuditLog:
    """Append, verify and read the hash-chained audit log. Stateless; share one instance."""

    def _lock_head(self, session: Session, shard: int | None = None) -> _Slot:
        """Lock a shard's head (`shard`, or one chosen for this thread) and reserve its next
        position and a global `seq`.

        The UPDATE comes first so the lock is taken before anything is read: concurrent
        appenders to that shard in any process queue here until the holder's transaction
        ends. On PostgreSQL, without an explicit shard, the UPDATE takes the first record
        shard nobody holds (FOR UPDATE SKIP LOCKED), starting at this thread's, in the same
        round trip that draws the global `seq`; it waits only if every shard is held.
        The statements are built once (`_Statements`): building them per append cost more
        than running them.
        """
        postgres = session.get_bind().dialect.name == "postgresql"
        statements = _STATEMENTS
        connection = session.connection()
        if shard is None:
            shard = preferred_shard()
            if postgres:
                row: Any = connection.execute(statements.take_free_shard,
                                              {"preferred": shard}).one_or_none()
                if row is not None:
                    return _Slot(int(row[0]), int(row[1]), str(row[2]), int(row[3]))
        bump = statements.bump_postgres if postgres else statements.bump
        row = connection.execute(bump, {"shard": shard}).one_or_none()
        if row is None:
            # A database created without the migration's head rows: add every missing one
            # (so later appends spread over all shards). A concurrent creator makes our
            # INSERT fail; then its rows exist: lock ours.
            try:
                with session.begin_nested():
                    present = set(session.execute(select(AuditChainHead.id)).scalars())
                    session.add_all(AuditChainHead(id=i, seq=0, head_hash=shard_genesis(i))
                                    for i in {ANCHOR_SHARD, shard, *range(1, AUDIT_SHARDS + 1)}
                                    - present)
                    session.flush()
            except IntegrityError:
                pass
            row = session.connection().execute(bump, {"shard": shard}).one()
        seq = int(row[3]) if postgres else self._next_seq(session, postgres=False)
        return _Slot(int(row[0]), int(row[1]), str(row[2]), seq)

    @staticmethod
    def _next_seq(session: Session, postgres: bool) -> int:
        """The next global `seq`: the sequence on PostgreSQL (no lock); on SQLite max + 1,
        safe because the head UPDATE already holds the database's single write lock."""
        if postgres:
            return int(session.execute(select(GLOBAL_SEQ.next_value())).scalar_one())
        return int(session.execute(
            select(func.coalesce(func.max(AuditEvent.seq), 0) + 1)).scalar_one())

    def _write(self, session: Session, slot: _Slot, values: dict[str, Any]) -> AppendedRecord:
        """Insert the record and move its shard's head to it, in the caller's transaction.

        On PostgreSQL both are one statement (the INSERT a data-modifying CTE of the head's
        UPDATE: one round trip, and atomic: neither happens without the other). SQLite has
        no DML in a CTE: two statements. The session's pending work is flushed first; the
        record itself is written by Core statements only, so no ORM object is built or added
        (that cost about as much as the statements): a later ORM query in the same session
        loads it from the database.
        """
        columns = {**values, "shard": slot.shard, "shard_seq": slot.shard_seq}
        bound = {"v_" + name: value for name, value in columns.items()}
        head = {"head_shard": slot.shard, "head_hash": values["hash"]}
        session.flush()  # whatever the caller has pending goes first, as with the ORM's INSERT
        connection = session.connection()
        if session.get_bind().dialect.name == "postgresql":
            connection.execute(_STATEMENTS.insert_and_move_head, {**bound, **head})
        else:
            connection.execute(_STATEMENTS.insert, bound)
            connection.execute(_STATEMENTS.move_head, head)
        return AppendedRecord(seq=int(columns["seq"]), shard=slot.shard,
                              shard_seq=slot.shard_seq, hash=str(columns["hash"]),
                              values=MappingProxyType(columns))

    def append(self, session: Session, record: AuditRecord, *, now: int) -> AppendedRecord:
        """Append `record` as the next link of a shard's chain, in the caller's transaction.

        Every ANCHOR_EVERY-th record of a shard also writes an anchor in the same
        transaction. Returns what was written (`AppendedRecord`; the appended record, not
        the anchor). Raises ValueError for an unknown outcome (a caller bug); database
        errors propagate (the caller's session turns them into 503 and nothing is issued).
        """
        slot = self._lock_head(session)
        values = _row_values(record, seq=slot.seq, prev_hash=slot.prev_hash, now=now)
        written = self._write(session, slot, values)
        if slot.shard_seq % ANCHOR_EVERY == 0:
            self.anchor(session, now=now)
        return written

    def anchor(self, session: Session, *, now: int) -> AppendedRecord:
        """Append to shard 0 a record of every shard's (position, head hash), in the
        caller's transaction (`authserver audit anchor` commits it); returns what was written
        (its `values["detail"]["shards"]` are the heads it states).

        Heads are read, not locked: each is a committed state (or this transaction's own),
        whose records are all committed with it. Shard 0's lock is always taken last (an
        append holding its shard's lock may take it; an anchor takes no other), so anchors
        cannot deadlock with appends.
        """
        slot = self._lock_head(session, ANCHOR_SHARD)
        heads = session.execute(
            select(AuditChainHead.id, AuditChainHead.seq, AuditChainHead.head_hash)
            .where(AuditChainHead.id != ANCHOR_SHARD).order_by(AuditChainHead.id)
        ).all()
        shards = {str(i): {"seq": int(seq), "hash": str(h)} for i, seq, h in heads}
        values = _row_values(AuditRecord(event=ANCHOR_EVENT, outcome="anchored"),
                             seq=slot.seq, prev_hash=slot.prev_hash, now=now,
                             trusted_detail={"shards": shards})
        return self._write(session, slot, values)

    def append_refusal(self, session: Session, record: AuditRecord, *, now: int) -> None:
        """The one path of a refusal's record: the request's unit of work on `session` is
        abandoned (rolled back: nothing the refused request wrote persists, and the locks it
        took are let go, which the record's transaction could otherwise wait on: a row lock on
        PostgreSQL, the single writer on SQLite), then the record alone is appended and
        committed at once, in a transaction of its own on the same connection. Whatever must
        outlive a refusal besides its record (a pending approval) is committed by its own
        unit before (authserver.approvals.request_approval).

        A database failure raises DatabaseUnavailableError (503): the refusal then goes
        unrecorded, and the client sees a retryable error rather than the refusal.
        """
        session.rollback()
        try:
            self.append(session, record, now=now)
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise DatabaseUnavailableError(debug=f"database: {type(e).__name__}") from e
        except BaseException:
            session.rollback()
            raise

    def verify(self, session: Session) -> VerifyResult:
        """Walk every shard's chain from position 1 and check it against the anchors; the
        result names the first record that does not hold, and has every shard's result.

        reason: "ok", "missing_record" (a gap: first_bad_seq is the missing position),
        "hash_mismatch" (a record's content was changed), "broken_link" (prev_hash is not
        the previous record's hash), "truncated" (the head, or an anchor, is ahead of the
        last record), "head_mismatch" (the head's hash is not the last record's, or a record
        lies past a head that did not move) or "anchor_mismatch" (an anchor states another
        hash for that position).

        Safe while appends run: all heads are read first, in one statement, and only the
        records they cover are walked. A record commits with its head move, so once a head
        says N, positions 1..N are committed; an anchor older than the heads read states
        heads no newer than them.
        """
        heads = self._heads(session)
        anchor_result, claims = self._verify_shard(
            session, ANCHOR_SHARD, heads.get(ANCHOR_SHARD, (0, shard_genesis(ANCHOR_SHARD))), {})
        stored = session.execute(select(AuditEvent.shard).distinct()).scalars()
        shards = sorted((set(heads) | set(stored) | set(claims)) - {ANCHOR_SHARD})
        results = [anchor_result] + [
            self._verify_shard(session, shard, heads.get(shard, (0, shard_genesis(shard))),
                               claims.get(shard, {}))[0]
            for shard in shards
        ]
        total = sum(r.count for r in results)
        for r in results:
            if not r.ok:
                return VerifyResult(False, total, r.first_bad_seq, r.reason, r.shard,
                                    tuple(results))
        return VerifyResult(True, total, None, "ok", None, tuple(results))

    def _verify_shard(self, session: Session, shard: int, head: tuple[int, str],
                      claims: Mapping[int, str]
                      ) -> tuple[ShardResult, dict[int, dict[int, str]]]:
        """One shard's chain, and the (shard -> position -> hash) its anchors state.

        `claims` are the anchors' statements about this shard: each must match the record
        at its position; one past the last record means the shard lost its tail.
        """
        head_seq, head_hash = head
        anchored = max(claims, default=0)
        found: dict[int, dict[int, str]] = {}
        expected, prev_hash, count = 1, shard_genesis(shard), 0

        def result(ok: bool, bad: int | None, reason: str) -> ShardResult:
            return ShardResult(shard, ok, count, head_seq, bad, reason, anchored)

        rows = session.execute(
            select(AuditEvent)
            .where(AuditEvent.shard == shard, AuditEvent.shard_seq <= head_seq)
            .order_by(AuditEvent.shard_seq)
            .execution_options(yield_per=500)
        ).scalars()
        for row in rows:
            values = {name: getattr(row, name) for name in _HASHED_COLUMNS}
            if row.shard_seq != expected:
                return result(False, expected, "missing_record"), found
            if record_hash(values) != row.hash:
                return result(False, row.shard_seq, "hash_mismatch"), found
            if row.prev_hash != prev_hash:
                return result(False, row.shard_seq, "broken_link"), found
            claimed = claims.get(row.shard_seq)
            if claimed is not None and claimed != row.hash:
                return result(False, row.shard_seq, "anchor_mismatch"), found
            if shard == ANCHOR_SHARD and row.event == ANCHOR_EVENT:
                for name, state in dict(row.detail.get("shards", {})).items():
                    found.setdefault(int(name), {})[int(state["seq"])] = str(state["hash"])
            count += 1
            prev_hash = row.hash
            expected += 1
        if head_seq > count:
            return result(False, count + 1, "truncated"), found
        beyond = session.execute(
            select(func.min(AuditEvent.shard_seq))
            .where(AuditEvent.shard == shard, AuditEvent.shard_seq > head_seq)
        ).scalar_one_or_none()
        # A record past the head is a concurrent append only if the head has moved to it.
        if beyond is not None and self._heads(session, shard).get(shard, (0, ""))[0] < beyond:
            return result(False, head_seq + 1, "head_mismatch"), found
        if head_hash != prev_hash:
            return result(False, count, "head_mismatch"), found
        if anchored > count:
            # The head was rewound with the records: only an anchor still remembers them.
            return result(False, count + 1, "truncated"), found
        return result(True, None, "ok"), found

    @staticmethod
    def _heads(session: Session, shard: int | None = None) -> dict[int, tuple[int, str]]:
        """Every shard's (last position, head hash), or one shard's, in one statement."""
        query = select(AuditChainHead.id, AuditChainHead.seq, AuditChainHead.head_hash)
        if shard is not None:
            query = query.where(AuditChainHead.id == shard)
        return {int(i): (int(seq), str(h)) for i, seq, h in session.execute(query).all()}

    def tail(self, session: Session, n: int = 20) -> list[AuditEvent]:
        """The newest `n` records (1 ≤ n ≤ MAX_TAIL), oldest first, like tail(1)."""
        if not 1 <= n <= MAX_TAIL:
            raise ValueError(f"n must be between 1 and {MAX_TAIL}")
        rows = session.execute(
            select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(n)
        ).scalars().all()
        return list(reversed(rows))
