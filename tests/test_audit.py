"""authserver.audit: hash chain, tamper detection, concurrent appends, redaction."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, update

from authserver.audit import (
    MAX_TAIL,
    REDACTED,
    AuditLog,
    AuditRecord,
    VerifyResult,
    redact,
)
from authserver.db import Database
from authserver.models.audit import AuditChainHead, AuditEvent, shard_genesis
from authserver.models.base import Base

JWT = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9."
    "eyJzdWIiOiJ1c2VyLTEiLCJhdWQiOiJnYXRld2F5In0."
    "MEUCIQDxk7Lk2PZ0bWlUqzGq0gR1r4xS3S5xY0mJc0fVw9t2hQIgQw"
)
OPAQUE = "gho_16C7e42F292c6912E7710c838347Ae178B4a"  # GitHub-style opaque token shape


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    yield database
    database.engine.dispose()


def _record(i: int = 0, **overrides: object) -> AuditRecord:
    values: dict[str, object] = {
        "event": "token_exchange",
        "outcome": "allowed",
        "correlation_id": f"corr-{i}",
        "user_id": "user-1",
        "agent_id": "agent-1",
        "actor_chain": ["agent-1", "edge-1"],
        "platform": "crm",
        "intent": {"action": "read", "resource": f"deal:acme-{i}", "count": 1,
                   "context": {"request": "show me the acme deal", "channel": "chat"}},
        "intent_hash": "a" * 64,
        "within_mandate": True,
        "policy_ids": ["allow-read-in-mandate"],
        "token_jti": f"jti-{i}",
        "client_ip": "192.0.2.7",
        "detail": {"audience": "crm"},
    }
    values.update(overrides)
    return AuditRecord(**values)  # type: ignore[arg-type]


def _append_n(db: Database, n: int, now: int) -> None:
    log = AuditLog()
    for i in range(n):
        with db.session() as s:
            log.append(s, _record(i), now=now + i)


def _verify(db: Database) -> VerifyResult:
    with db.session() as s:
        return AuditLog().verify(s)


# --- the chain -------------------------------------------------------------------------------


def test_empty_log_verifies(db: Database) -> None:
    result = _verify(db)
    assert (result.ok, result.count, result.first_bad_seq, result.reason) == (True, 0, None, "ok")


def test_chain_verifies(db: Database, now: int) -> None:
    _append_n(db, 5, now)
    result = _verify(db)
    assert (result.ok, result.count, result.first_bad_seq, result.reason) == (True, 5, None, "ok")


def test_records_link_to_previous_hash(db: Database, now: int) -> None:
    _append_n(db, 3, now)
    with db.session() as s:
        rows = s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
        assert [r.seq for r in rows] == [1, 2, 3]
        assert rows[0].prev_hash == shard_genesis(rows[0].shard)
        assert rows[1].prev_hash == rows[0].hash
        assert rows[2].prev_hash == rows[1].hash
        # One thread appends to one shard: positions 1..3 of that shard's chain.
        assert {r.shard for r in rows} == {rows[0].shard}
        assert [r.shard_seq for r in rows] == [1, 2, 3]
        head = s.get(AuditChainHead, rows[0].shard)
        assert head is not None and (head.seq, head.head_hash) == (3, rows[2].hash)


def test_append_stores_every_field(db: Database, now: int) -> None:
    with db.session() as s:
        row = AuditLog().append(s, _record(7, approval_id="ap-1", reason="in_mandate"), now=now)
    with db.session() as s:
        stored = s.get(AuditEvent, row.seq)
        assert stored is not None
        assert stored.created_at == now
        assert (stored.event, stored.outcome, stored.reason) == (
            "token_exchange", "allowed", "in_mandate")
        assert (stored.user_id, stored.agent_id, stored.platform) == ("user-1", "agent-1", "crm")
        assert stored.actor_chain == ["agent-1", "edge-1"]
        assert stored.intent == {"action": "read", "resource": "deal:acme-7", "count": 1,
                                 "context": {"request": "show me the acme deal",
                                             "channel": "chat"}}
        assert stored.within_mandate is True
        assert stored.policy_ids == ["allow-read-in-mandate"]
        assert (stored.approval_id, stored.token_jti, stored.client_ip) == (
            "ap-1", "jti-7", "192.0.2.7")
        assert stored.correlation_id == "corr-7"


def test_appended_record_is_what_the_database_holds(db: Database, now: int) -> None:
    """append returns what it wrote, column for column as a fresh session loads it, and
    leaves nothing pending in the session (the row is written by Core, not added)."""
    with db.session() as s:
        row = AuditLog().append(s, _record(3, approval_id="ap-3", reason="in_mandate"), now=now)
        assert not s.new and not s.dirty
        assert not any(isinstance(o, AuditEvent) for o in s.identity_map.values())
        with pytest.raises(TypeError):
            row.values["event"] = "edited"  # type: ignore[index]
    with db.session() as s:
        stored = s.get(AuditEvent, row.seq)
        assert stored is not None
        loaded = {c.key: getattr(stored, c.key) for c in AuditEvent.__mapper__.column_attrs}
    assert dict(row.values) == loaded
    assert (row.seq, row.shard, row.shard_seq, row.hash) == (
        stored.seq, stored.shard, stored.shard_seq, stored.hash)


def test_append_is_rolled_back_with_the_callers_transaction(db: Database, now: int) -> None:
    _append_n(db, 2, now)
    with pytest.raises(RuntimeError), db.session() as s:
        AuditLog().append(s, _record(9), now=now)
        raise RuntimeError("response failed before commit")
    _append_n(db, 1, now)
    result = _verify(db)
    assert (result.ok, result.count) == (True, 3)


def test_append_creates_missing_chain_head(db: Database, now: int) -> None:
    with db.session() as s:
        s.execute(delete(AuditChainHead))
    _append_n(db, 2, now)
    assert _verify(db).ok


def test_unknown_outcome_is_rejected(db: Database, now: int) -> None:
    with pytest.raises(ValueError), db.session() as s:
        AuditLog().append(s, _record(outcome="allowd"), now=now)


# --- tampering -------------------------------------------------------------------------------


def test_edited_field_is_detected(db: Database, now: int) -> None:
    _append_n(db, 5, now)
    with db.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(outcome="denied"))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "hash_mismatch")


def test_edited_json_field_is_detected(db: Database, now: int) -> None:
    _append_n(db, 5, now)
    with db.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(
            intent={"action": "delete", "resource": "deal:acme-1", "count": 1}))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 2, "hash_mismatch")


def test_edited_field_with_recomputed_hash_breaks_next_link(db: Database, now: int) -> None:
    from authserver.audit import record_hash

    _append_n(db, 5, now)
    with db.session() as s:
        row = s.get(AuditEvent, 3)
        assert row is not None
        row.outcome = "denied"
        row.hash = record_hash({c: getattr(row, c) for c in (
            "seq", "created_at", "event", "outcome", "reason", "correlation_id", "user_id",
            "agent_id", "actor_chain", "platform", "intent", "intent_hash", "within_mandate",
            "policy_ids", "approval_id", "token_jti", "client_ip", "detail", "prev_hash")})
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 4, "broken_link")


def test_deleted_record_is_detected(db: Database, now: int) -> None:
    _append_n(db, 5, now)
    with db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
    result = _verify(db)
    assert (result.ok, result.count, result.first_bad_seq, result.reason) == (
        False, 2, 3, "missing_record")


def test_deleted_first_record_is_detected(db: Database, now: int) -> None:
    _append_n(db, 3, now)
    with db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 1))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 1, "missing_record")


def test_deleted_last_record_is_detected(db: Database, now: int) -> None:
    _append_n(db, 4, now)
    with db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 4))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 4, "truncated")


def test_deleted_record_renumbered_is_detected(db: Database, now: int) -> None:
    _append_n(db, 5, now)
    with db.session() as s:
        # Close the gap in both numberings: the global seq and the chain position.
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(seq=3, shard_seq=3))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(seq=4, shard_seq=4))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "hash_mismatch")


def test_reordered_records_are_detected(db: Database, now: int) -> None:
    _append_n(db, 5, now)
    with db.session() as s:
        # Swap rows 2 and 4 by swapping their sequence numbers.
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(seq=-2))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(seq=2))
        s.execute(update(AuditEvent).where(AuditEvent.seq == -2).values(seq=4))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 2, "hash_mismatch")


def test_record_inserted_past_the_head_is_detected(db: Database, now: int) -> None:
    _append_n(db, 3, now)
    with db.session() as s:
        shard = s.execute(select(AuditEvent.shard).limit(1)).scalar_one()  # the chain's head
        s.execute(update(AuditChainHead).where(AuditChainHead.id == shard).values(seq=2))
    result = _verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "head_mismatch")


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_appends_keep_a_valid_chain(db: Database, now: int) -> None:
    threads_n, per_thread = 8, 10
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        log = AuditLog()
        try:
            barrier.wait()
            for i in range(per_thread):
                with db.session() as s:
                    log.append(s, _record(t * 100 + i), now=now)
        except BaseException as e:  # reported below, never swallowed
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    result = _verify(db)
    assert (result.ok, result.count) == (True, threads_n * per_thread)
    with db.session() as s:
        correlation_ids = s.execute(select(AuditEvent.correlation_id)).scalars().all()
    assert len(set(correlation_ids)) == threads_n * per_thread


_CHILD = """
import sys
from authserver.audit import AuditLog, AuditRecord
from authserver.db import Database
db = Database(sys.argv[1])
log = AuditLog()
for i in range(int(sys.argv[3])):
    with db.session() as s:
        log.append(s, AuditRecord(event="token_exchange", outcome="allowed",
                                  correlation_id=f"p{sys.argv[2]}-{i}"), now=1_800_000_000)
"""


def test_appends_from_several_processes_keep_a_valid_chain(db: Database) -> None:
    procs_n, per_proc = 4, 10
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, db.url, str(p), str(per_proc)])
        for p in range(procs_n)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * procs_n
    result = _verify(db)
    assert (result.ok, result.count) == (True, procs_n * per_proc)


# --- tail ------------------------------------------------------------------------------------


def test_tail_returns_newest_records_oldest_first(db: Database, now: int) -> None:
    _append_n(db, 6, now)
    with db.session() as s:
        rows = AuditLog().tail(s, 3)
    assert [r.seq for r in rows] == [4, 5, 6]


def test_tail_bounds_n(db: Database) -> None:
    with db.session() as s, pytest.raises(ValueError):
        AuditLog().tail(s, MAX_TAIL + 1)


# --- no token in a record --------------------------------------------------------------------


def test_verify_during_concurrent_appends_reports_no_tampering(db: Database, now: int) -> None:
    _append_n(db, 3, now)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        log = AuditLog()
        try:
            i = 0
            while not stop.is_set() and i < 200:
                with db.session() as s:
                    log.append(s, _record(1000 + i), now=now)
                i += 1
        except BaseException as e:  # reported below, never swallowed
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    results = []
    try:
        for _ in range(10):
            results.append(_verify(db))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert [r.reason for r in results if not r.ok] == []
    assert _verify(db).ok


def _stored_text(db: Database) -> str:
    with db.session() as s:
        rows = s.execute(select(AuditEvent)).scalars().all()
        return json.dumps([{c.name: getattr(r, c.name) for c in AuditEvent.__table__.columns}
                           for r in rows])


def test_jwt_in_detail_is_redacted(db: Database, now: int) -> None:
    with db.session() as s:
        AuditLog().append(s, _record(detail={"note": f"upstream said {JWT}",
                                             "nested": [{"x": JWT}]}), now=now)
    text = _stored_text(db)
    assert JWT not in text and JWT[:30] not in text
    assert f"upstream said {REDACTED}" in text


def test_opaque_token_in_detail_is_redacted(db: Database, now: int) -> None:
    with db.session() as s:
        AuditLog().append(s, _record(detail={"upstream": OPAQUE}), now=now)
    assert OPAQUE not in _stored_text(db)


def test_credential_keys_in_detail_are_redacted(db: Database, now: int) -> None:
    with db.session() as s:
        AuditLog().append(s, _record(detail={
            "access_token": "short", "refresh_token": "r", "client_secret": "s",
            "Authorization": "DPoP abc", "code": "xyz", "status": 200}), now=now)
    with db.session() as s:
        row = s.execute(select(AuditEvent)).scalar_one()
        assert row.detail == {"access_token": REDACTED, "refresh_token": REDACTED,
                              "client_secret": REDACTED, "Authorization": REDACTED,
                              "code": REDACTED, "status": 200}


def test_jwt_in_request_text_is_redacted(db: Database, now: int) -> None:
    intent = {"action": "read", "resource": "deal:1", "count": 1,
              "context": {"request": f"use this token {JWT} and Bearer {OPAQUE}"}}
    with db.session() as s:
        AuditLog().append(s, _record(intent=intent), now=now)
    text = _stored_text(db)
    assert JWT not in text and OPAQUE not in text
    assert _verify(db).ok


def test_request_text_is_bounded(db: Database, now: int) -> None:
    from authserver.audit import MAX_REQUEST_TEXT

    intent = {"action": "read", "resource": "deal:1", "count": 1,
              "context": {"request": "please " * 1000}}
    with db.session() as s:
        row = AuditLog().append(s, _record(intent=intent), now=now)
    assert row.values["intent"] is not None
    assert len(row.values["intent"]["context"]["request"]) == MAX_REQUEST_TEXT


def test_oversized_detail_is_replaced(db: Database, now: int) -> None:
    with db.session() as s:
        row = AuditLog().append(
            s, _record(detail={f"k{i}": "v" * 400 for i in range(30)}), now=now)
    assert row.values["detail"]["truncated"] is True


def test_redact_keeps_ordinary_values() -> None:
    value = {"path": "/crm/v3/objects/deals/acme-1234567890-abcdefghij-klm", "status": 404,
             "record": "0b7a3c1e-5d2f-4a6b-9c8d-1e2f3a4b5c6d", "ok": True, "host": None}
    assert redact(value) == value


def test_redact_strips_jwe() -> None:
    jwe = "eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVydGV4dA.dGFn"
    assert redact({"v": jwe}) == {"v": REDACTED}


def test_redact_strips_authorization_header_values() -> None:
    assert redact("Authorization: Bearer abc.def") == f"Authorization: Bearer {REDACTED}"


# --- unauthenticated refusals: counted and logged rate-limited, never appended (issue 13) -----


def test_unauthenticated_refusals_are_logged_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    from authserver.audit import RateLimitedLog

    t = [0.0]
    limited = RateLimitedLog(interval=60, clock=lambda: t[0])
    with caplog.at_level("WARNING", logger="authserver.audit"):
        logged = [limited("gateway_call", "invalid_token") for _ in range(5)]
        other = limited("token_exchange", "invalid_client")  # its own key: logged
        t[0] = 60.0
        again = limited("gateway_call", "invalid_token")
    assert logged == [True, False, False, False, False]
    assert other and again
    lines = [r for r in caplog.records if r.name == "authserver.audit"]
    assert [(r.event, r.reason, r.count) for r in lines] == [  # type: ignore[attr-defined]
        ("gateway_call", "invalid_token", 1), ("token_exchange", "invalid_client", 1),
        ("gateway_call", "invalid_token", 5)]


def test_refused_unauthenticated_counts_with_closed_labels(db: Database) -> None:
    from prometheus_client import REGISTRY

    from authserver.audit import refused_unauthenticated

    metric = "authserver_unauthenticated_rejections_total"

    def value(event: str, reason: str) -> float:
        return REGISTRY.get_sample_value(metric, {"event": event, "reason": reason}) or 0.0

    before = value("gateway_call", "invalid_token"), value("other", "x" * 64)
    refused_unauthenticated("gateway_call", "invalid_token")
    refused_unauthenticated("anything-else", "x" * 500)  # an unknown event, an overlong reason
    assert (value("gateway_call", "invalid_token"), value("other", "x" * 64)) == \
        (before[0] + 1, before[1] + 1)
    with db.session() as session:
        assert session.scalar(select(AuditEvent.seq).limit(1)) is None


def test_row_hash_is_the_record_hash_of_what_the_database_hands_back() -> None:
    # Issue 18: `_row_values` hashes its one canonical text; that is `record_hash` of the
    # values as read back (tuples, non-string keys and floats normalised by JSON).
    from authserver.audit import record_hash
    from authserver.audit_records import _row_values

    record = AuditRecord(event="token_exchange", outcome="allowed", user_id="u", agent_id="a",
                         actor_chain=["a", "b"], intent={"action": "read", "count": 2,
                                                         "context": {"request": "é ✓"}},
                         policy_ids=["p1"], within_mandate=True,
                         detail={"n": 1.5, 7: ("x", None), "nested": {"b": [1, 2]}})
    values = _row_values(record, seq=3, prev_hash="0" * 64, now=1_700_000_000)
    assert values["hash"] == record_hash(values)
    assert json.loads(json.dumps(values)) == values

