"""authserver.approvals: step-up approvals and Part A3 polling outcomes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from authserver.approvals import (
    APPROVED,
    CONSUMED,
    DECLINED,
    PENDING,
    ApprovalNotFoundError,
    ApprovalNotPendingError,
    approval_required_error,
    create_approval,
    decide_approval,
    pending_for_user,
    redeem_approval,
)
from authserver.config import APPROVAL_POLL_INTERVAL, APPROVAL_TTL
from authserver.db import Database
from authserver.errors import (
    AccessDeniedError,
    AuthorizationPendingError,
    ExpiredTokenError,
    InvalidGrantError,
    SlowDownError,
)
from authserver.models.approvals import Approval
from authserver.models.base import Base
from authserver.models.oauth import User
from authserver.store import Store

INTENT = {"action": "bulk_delete", "resource": "deals?stage=stale", "count": 40,
          "context": {"request": "clean up stale deals", "channel": "chat"}}
INTENT_HASH = "b" * 64
BINDING = {"user_id": "alice", "agent_id": "agent-1", "platform": "crm",
           "intent_hash": INTENT_HASH}


@pytest.fixture
def db(database_url: str, now: int) -> Iterator[Database]:
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    with database.session() as s:
        for uid in ("alice", "bob"):
            s.add(User(id=uid, idp_issuer="https://idp.example", idp_subject=uid,
                       created_at=now))
    yield database
    database.engine.dispose()


def _create(db: Database, now: int, **overrides: object) -> str:
    kwargs: dict[str, object] = {"user_id": "alice", "agent_id": "agent-1", "platform": "crm",
                                 "intent": INTENT, "intent_hash": INTENT_HASH, "now": now}
    kwargs.update(overrides)
    with db.session() as s:
        return create_approval(s, **kwargs).id  # type: ignore[arg-type]


def _decide(db: Database, approval_id: str, now: int, *, approve: bool = True,
            user_id: str = "alice") -> Approval:
    with db.session() as s:
        return decide_approval(s, approval_id, user_id=user_id, approve=approve, now=now)


def _redeem(db: Database, store: Store, approval_id: str, now: int,
            **overrides: str) -> Approval:
    binding = {**BINDING, **overrides}
    with db.session() as s:
        return redeem_approval(
            s, store, approval_id, user_id=binding["user_id"], agent_id=binding["agent_id"],
            platform=binding["platform"], intent_hash=binding["intent_hash"], now=now)


# --- creation --------------------------------------------------------------------------------


def test_create_approval_is_pending_and_expires(db: Database, now: int) -> None:
    approval_id = _create(db, now)
    with db.session() as s:
        approval = s.get(Approval, approval_id)
        assert approval is not None
        assert approval.status == PENDING
        assert approval.expires_at == now + APPROVAL_TTL
        assert approval.intent == INTENT
        assert (approval.user_id, approval.agent_id, approval.platform, approval.intent_hash) == (
            "alice", "agent-1", "crm", INTENT_HASH)


def test_approval_ids_are_unpredictable(db: Database, now: int) -> None:
    ids = {_create(db, now) for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i) >= 43 for i in ids)


def test_approval_required_error_carries_part_a3_fields(db: Database, now: int) -> None:
    with db.session() as s:
        approval = create_approval(s, user_id="alice", agent_id="agent-1", platform="crm",
                                   intent=INTENT, intent_hash=INTENT_HASH, now=now)
    err = approval_required_error(approval, approval_uri="https://as/approvals/x", now=now + 10)
    assert err.status_code == 403
    assert err.body() == {
        "error": "approval_required", "error_description": "User confirmation required",
        "approval_id": approval.id, "approval_uri": "https://as/approvals/x",
        "expires_in": APPROVAL_TTL - 10, "interval": APPROVAL_POLL_INTERVAL}


def test_pending_for_user_lists_only_live_pending_of_that_user(db: Database, now: int) -> None:
    a1 = _create(db, now)
    a2 = _create(db, now + 1)
    decided = _create(db, now + 2)
    _decide(db, decided, now + 3)
    _create(db, now, user_id="bob")
    _create(db, now - APPROVAL_TTL)  # already expired at `now`
    with db.session() as s:
        assert [a.id for a in pending_for_user(s, "alice", now + 3)] == [a1, a2]


# --- deciding --------------------------------------------------------------------------------


def test_bound_user_approves(db: Database, now: int) -> None:
    approval = _decide(db, _create(db, now), now + 5)
    assert (approval.status, approval.decided_by, approval.decided_at) == (
        APPROVED, "alice", now + 5)


def test_bound_user_declines(db: Database, now: int) -> None:
    approval = _decide(db, _create(db, now), now + 5, approve=False)
    assert (approval.status, approval.decided_by, approval.decided_at) == (
        DECLINED, "alice", now + 5)


def test_other_user_cannot_decide(db: Database, now: int) -> None:
    approval_id = _create(db, now)
    with pytest.raises(ApprovalNotFoundError) as exc:
        _decide(db, approval_id, now, user_id="bob")
    assert exc.value.status_code == 404
    with db.session() as s:
        stored = s.get(Approval, approval_id)
        assert stored is not None and stored.status == PENDING


def test_decide_unknown_approval(db: Database, now: int) -> None:
    with pytest.raises(ApprovalNotFoundError):
        _decide(db, "no-such-approval", now)


def test_decide_twice_is_rejected(db: Database, now: int) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now, approve=False)
    with pytest.raises(ApprovalNotPendingError) as exc:
        _decide(db, approval_id, now, approve=True)
    assert exc.value.status_code == 409


def test_decide_expired_is_rejected(db: Database, now: int) -> None:
    approval_id = _create(db, now)
    with pytest.raises(ApprovalNotPendingError):
        _decide(db, approval_id, now + APPROVAL_TTL)


def test_concurrent_decisions_have_one_winner(db: Database, now: int) -> None:
    approval_id = _create(db, now)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def worker(approve: bool) -> None:
        barrier.wait()
        try:
            _decide(db, approval_id, now, approve=approve)
            outcomes.append("won")
        except ApprovalNotPendingError:
            outcomes.append("lost")

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]


# --- polling (redeem) ------------------------------------------------------------------------


def test_pending_poll_is_authorization_pending(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    with pytest.raises(AuthorizationPendingError) as exc:
        _redeem(db, store, approval_id, now)
    assert (exc.value.error, exc.value.status_code) == ("authorization_pending", 400)


def test_poll_faster_than_interval_is_slow_down(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    with pytest.raises(AuthorizationPendingError):
        _redeem(db, store, approval_id, now)
    with pytest.raises(SlowDownError) as exc:
        _redeem(db, store, approval_id, now)
    assert (exc.value.error, exc.value.status_code) == ("slow_down", 400)


def test_poll_after_interval_is_pending_again(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    with pytest.raises(AuthorizationPendingError):
        _redeem(db, store, approval_id, now)
    with pytest.raises(AuthorizationPendingError):
        _redeem(db, store, approval_id, now + APPROVAL_POLL_INTERVAL)


def test_approved_is_redeemed_once(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now + 1)
    approval = _redeem(db, store, approval_id, now + 2)
    assert (approval.status, approval.consumed_at) == (CONSUMED, now + 2)
    assert approval.intent == INTENT


def test_replayed_approval_is_invalid_grant(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now)
    _redeem(db, store, approval_id, now)
    with pytest.raises(InvalidGrantError) as exc:
        _redeem(db, store, approval_id, now + 1)
    assert (exc.value.error, exc.value.status_code) == ("invalid_grant", 400)


def test_concurrent_redemptions_have_one_winner(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        try:
            _redeem(db, store, approval_id, now)
            outcomes.append("won")
        except InvalidGrantError:
            outcomes.append("lost")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]


@pytest.mark.parametrize(
    "override",
    [{"intent_hash": "c" * 64}, {"user_id": "bob"}, {"agent_id": "agent-2"},
     {"platform": "tracker"}],
    ids=["different_intent_hash", "different_user", "different_agent", "different_platform"],
)
def test_approval_for_another_binding_is_invalid_grant(
    db: Database, store: Store, now: int, override: dict[str, str]
) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now)
    with pytest.raises(InvalidGrantError):
        _redeem(db, store, approval_id, now, **override)
    # The rightful exchange still works: a mismatched attempt does not burn the approval.
    assert _redeem(db, store, approval_id, now).status == CONSUMED


def test_unknown_approval_is_invalid_grant(db: Database, store: Store, now: int) -> None:
    with pytest.raises(InvalidGrantError):
        _redeem(db, store, "no-such-approval", now)


def test_declined_is_access_denied(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now, approve=False)
    with pytest.raises(AccessDeniedError) as exc:
        _redeem(db, store, approval_id, now)
    assert (exc.value.error, exc.value.status_code) == ("access_denied", 400)


def test_expired_pending_is_expired_token(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    with pytest.raises(ExpiredTokenError) as exc:
        _redeem(db, store, approval_id, now + APPROVAL_TTL)
    assert (exc.value.error, exc.value.status_code) == ("expired_token", 400)


def test_expired_approved_is_expired_token(db: Database, store: Store, now: int) -> None:
    approval_id = _create(db, now)
    _decide(db, approval_id, now)
    with pytest.raises(ExpiredTokenError):
        _redeem(db, store, approval_id, now + APPROVAL_TTL)
