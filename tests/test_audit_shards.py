"""The sharded audit log (issue 18): N chains, anchors in shard 0, tamper and truncation
detection across shards, concurrent and crashing appenders, and a pre-shard database
(docs/standards.md AUD-01, AUD-02, AUD-03)."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import delete, func, select, text, update

import authserver.audit as audit
from authserver.audit import AUDIT_SHARDS, AuditLog, AuditRecord, VerifyResult, _row_values
from authserver.db import Database, alembic_config
from authserver.models.audit import GENESIS_HASH, AuditChainHead, AuditEvent, shard_genesis
from authserver.models.base import Base


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    yield database
    database.engine.dispose()


@pytest.fixture
def migrated(database_url: str) -> Iterator[Database]:
    """A database built by the migrations: every shard's head row exists."""
    database = Database(database_url)
    database.upgrade()
    yield database
    database.engine.dispose()


def _record(i: int) -> AuditRecord:
    return AuditRecord(event="token_exchange", outcome="allowed", correlation_id=f"corr-{i}",
                       user_id="user-1", agent_id="agent-1", detail={"i": i})


def _append(db: Database, shard: int, n: int, now: int, monkeypatch: pytest.MonkeyPatch,
            start: int = 0) -> None:
    """`n` records into `shard` (this thread's preferred shard, set for the test)."""
    monkeypatch.setattr(audit, "preferred_shard", lambda: shard)
    log = AuditLog()
    for i in range(start, start + n):
        with db.session() as s:
            log.append(s, _record(i), now=now + i)


def _verify(db: Database) -> VerifyResult:
    with db.session() as s:
        return AuditLog().verify(s)


def _anchor(db: Database, now: int) -> None:
    with db.session() as s:
        AuditLog().anchor(s, now=now)


def _three_shards(db: Database, now: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for shard in (1, 2, 3):
        _append(db, shard, 4, now, monkeypatch, start=shard * 100)


def _by_shard(result: VerifyResult) -> dict[int, Any]:
    return {r.shard: r for r in result.shards}


def test_records_spread_over_shards_and_verify(db: Database, now: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    with db.session() as s:
        rows = s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
        assert [r.seq for r in rows] == list(range(1, 13))  # global order kept
        for shard in (1, 2, 3):
            chain = [r for r in rows if r.shard == shard]
            assert [r.shard_seq for r in chain] == [1, 2, 3, 4]
            assert chain[0].prev_hash == shard_genesis(shard)
            assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    assert shard_genesis(1) == GENESIS_HASH and len({shard_genesis(i) for i in range(9)}) == 9
    result = _verify(db)
    assert (result.ok, result.count, result.reason) == (True, 12, "ok")
    assert {r.shard: (r.ok, r.count) for r in result.shards if r.count} == {
        1: (True, 4), 2: (True, 4), 3: (True, 4)}
    assert [r.shard for r in result.shards] == list(range(AUDIT_SHARDS + 1))


def test_tampered_record_names_its_shard(db: Database, now: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    with db.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.shard == 2, AuditEvent.shard_seq == 3)
                  .values(outcome="denied"))
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 2, 3, "hash_mismatch")
    shards = _by_shard(result)
    assert shards[1].ok and shards[3].ok and not shards[2].ok


def test_deleted_middle_record_is_detected(db: Database, now: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    with db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.shard == 3, AuditEvent.shard_seq == 2))
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 3, 2, "missing_record")


def test_deleted_and_renumbered_record_breaks_the_link(db: Database, now: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    with db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.shard == 3, AuditEvent.shard_seq == 2))
        for pos in (3, 4):
            s.execute(update(AuditEvent).where(AuditEvent.shard == 3,
                                               AuditEvent.shard_seq == pos)
                      .values(shard_seq=pos - 1))
        s.execute(update(AuditChainHead).where(AuditChainHead.id == 3)
                  .values(seq=AuditChainHead.seq - 1))
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 3, 2, "broken_link")


def test_reordered_records_are_detected(db: Database, now: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    with db.session() as s:  # swap positions 2 and 3 of shard 1, records left intact
        s.execute(update(AuditEvent).where(AuditEvent.shard == 1, AuditEvent.shard_seq == 2)
                  .values(shard_seq=-2))
        s.execute(update(AuditEvent).where(AuditEvent.shard == 1, AuditEvent.shard_seq == 3)
                  .values(shard_seq=2))
        s.execute(update(AuditEvent).where(AuditEvent.shard == 1, AuditEvent.shard_seq == -2)
                  .values(shard_seq=3))
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 1, 2, "broken_link")


def test_record_moved_to_another_shard_is_detected(db: Database, now: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    with db.session() as s:  # shard 2's first record becomes shard 4's first
        s.execute(update(AuditEvent).where(AuditEvent.shard == 2, AuditEvent.shard_seq == 1)
                  .values(shard=4))
    result = _verify(db)
    assert not result.ok
    shards = _by_shard(result)
    assert (shards[2].first_bad_seq, shards[2].reason) == (1, "missing_record")
    assert not shards[4].ok


def _truncate(db: Database, shard: int, keep: int) -> None:
    """Delete a shard's records past `keep` and rewind its head to match: what a careful
    attacker does; the per-shard chain alone cannot tell."""
    with db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.shard == shard,
                                           AuditEvent.shard_seq > keep))
        last = s.execute(select(AuditEvent.hash).where(
            AuditEvent.shard == shard, AuditEvent.shard_seq == keep)).scalar_one()
        s.execute(update(AuditChainHead).where(AuditChainHead.id == shard)
                  .values(seq=keep, head_hash=last))


def test_truncated_shard_after_an_anchor_is_detected(db: Database, now: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    _anchor(db, now + 50)
    assert _verify(db).ok
    _truncate(db, 2, keep=2)
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 2, 3, "truncated")
    assert _by_shard(result)[2].anchored_seq == 4


def test_truncation_past_the_last_anchor_is_not_detected(db: Database, now: int,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The honest limit: records appended after the newest anchor, deleted together with
    a rewind of their head, leave no trace (docs/operating.md "audit verify")."""
    _three_shards(db, now, monkeypatch)
    _anchor(db, now + 50)
    _append(db, 2, 2, now, monkeypatch, start=900)  # shard 2 positions 5, 6: not anchored
    _truncate(db, 2, keep=4)
    result = _verify(db)
    assert result.ok and _by_shard(result)[2].anchored_seq == 4


def test_anchor_mismatch_and_tampered_anchor(db: Database, now: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _three_shards(db, now, monkeypatch)
    _anchor(db, now + 50)
    with db.session() as s:  # rewrite shard 3's last record with a valid hash: the chain
        row = s.execute(select(AuditEvent).where(AuditEvent.shard == 3,  # holds, the
                                                 AuditEvent.shard_seq == 4)).scalar_one()
        values = {c: getattr(row, c) for c in audit._HASHED_COLUMNS}  # anchor does not
        values["outcome"] = "denied"
        row.outcome, row.hash = "denied", audit.record_hash(values)
        s.execute(update(AuditChainHead).where(AuditChainHead.id == 3)
                  .values(head_hash=row.hash))
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 3, 4, "anchor_mismatch")
    with db.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.shard == 0).values(created_at=1))
    result = _verify(db)
    assert (result.ok, result.shard, result.first_bad_seq, result.reason) == (
        False, 0, 1, "hash_mismatch")


def test_every_kth_append_writes_an_anchor(db: Database, now: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "ANCHOR_EVERY", 3)
    _append(db, 5, 7, now, monkeypatch)
    with db.session() as s:
        anchors = s.execute(select(AuditEvent).where(AuditEvent.shard == 0)
                            .order_by(AuditEvent.shard_seq)).scalars().all()
    assert [a.detail["shards"]["5"]["seq"] for a in anchors] == [3, 6]
    assert all(a.event == "audit_anchor" and a.outcome == "anchored" for a in anchors)
    result = _verify(db)
    assert result.ok and result.count == 9 and _by_shard(result)[5].anchored_seq == 6


def test_concurrent_appends_on_many_shards(migrated: Database, now: int) -> None:
    """8 threads x 50 appends, each thread its own sessions: every chain verifies, and on
    PostgreSQL the appends spread over the shards (SKIP LOCKED), in global `seq` order."""
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        log = AuditLog()
        try:
            for i in range(50):
                with migrated.session() as s:
                    log.append(s, _record(t * 1000 + i), now=now)
        except BaseException as e:  # reported below, never swallowed
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = _verify(migrated)
    assert (result.ok, result.count) == (True, 400)
    with migrated.session() as s:
        used = s.execute(select(AuditEvent.shard).distinct()).scalars().all()
        seqs = s.execute(select(AuditEvent.seq)).scalars().all()
    assert len(set(seqs)) == 400 and set(used) <= set(range(1, AUDIT_SHARDS + 1))
    if migrated.url.startswith("postgresql"):
        assert len(used) > 1


def _crash_child(url: str, shard: int, point: str, committed: int, now: int) -> None:
    """Commit `committed` appends to `shard`, then die inside the next one's transaction
    (after its head UPDATE, or after its INSERT too) without committing or closing."""
    audit.preferred_shard = lambda: shard  # type: ignore[assignment]  # this process only
    database = Database(url)
    log = AuditLog()
    for i in range(committed):
        with database.session() as s:
            log.append(s, _record(i), now=now + i)
    s = database.sessionmaker()
    if point == "after_lock":
        log._lock_head(s)
    else:
        log.append(s, _record(999), now=now)
        s.flush()
    os._exit(3)


@pytest.mark.parametrize("point", ["after_lock", "after_append"])
def test_process_killed_mid_append_loses_nothing_committed(
        migrated: Database, now: int, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _append(migrated, 4, 3, now, monkeypatch)
    child = multiprocessing.get_context("fork").Process(
        target=_crash_child, args=(migrated.url, 4, point, 5, now))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 3
    result = _verify(migrated)
    assert (result.ok, result.count) == (True, 8)
    # The dead appender's lock is gone with its connection: its shard takes appends again.
    with migrated.session() as s:
        if migrated.url.startswith("postgresql"):
            s.execute(text("SET LOCAL lock_timeout = '30s'"))
        AuditLog()._lock_head(s, 4)
        s.rollback()
    _append(migrated, 4, 2, now, monkeypatch, start=50)
    result = _verify(migrated)
    assert (result.ok, result.count) == (True, 10)
    assert _by_shard(result)[4].head_seq == 10


def test_records_from_before_the_shards_verify_after_the_migration(
        database_url: str, now: int) -> None:
    """A 0010 database's single chain becomes shard 1, unchanged, and still verifies."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0010")
    database = Database(database_url)
    prev = GENESIS_HASH
    with database.engine.begin() as conn:
        for seq in range(1, 6):
            values = _row_values(_record(seq), seq=seq, prev_hash=prev, now=now + seq)
            # The 0010 table has no shard columns: insert only the columns it had.
            conn.execute(AuditEvent.__table__.insert().values(values))
            prev = values["hash"]
        # The head row the first append created (0001 has none).
        conn.execute(text("INSERT INTO audit_chain_head (id, seq, head_hash) "
                          "VALUES (1, 5, :h)"), {"h": prev})
    command.upgrade(cfg, "head")
    result = _verify(database)
    assert (result.ok, result.count, [r.shard for r in result.shards]) == (True, 5, list(range(9)))
    log = AuditLog()
    with database.session() as s:
        row = log.append(s, _record(6), now=now)
        assert row.seq == 6  # the global numbering continues after the old records
        log.anchor(s, now=now)
    result = _verify(database)
    assert (result.ok, result.count) == (True, 7)
    with database.session() as s:
        assert s.execute(select(func.count()).select_from(AuditEvent)
                         .where(AuditEvent.shard == 1)).scalar_one() >= 5
    database.engine.dispose()


def test_cli_verify_and_anchor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from authserver.cli import main

    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)

    runner.invoke(main, ["db", "upgrade"], catch_exceptions=False)
    run("users", "create-local", "carol", "--password", "pw")
    anchor = run("audit", "anchor")
    assert anchor["anchor_seq"] == 1 and set(anchor["shards"]) == {
        str(i) for i in range(1, AUDIT_SHARDS + 1)}
    verified = run("audit", "verify")
    assert {"ok", "count", "first_bad_seq", "reason", "shard", "shards"} <= set(verified)
    assert verified["ok"] is True and verified["shards"][0]["shard"] == 0
    assert {s["shard"] for s in verified["shards"]} == set(range(AUDIT_SHARDS + 1))
