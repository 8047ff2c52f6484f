"""Step-up approvals (docs/standards.md A3; polling modelled on OpenID CIBA Core §11).

When policy requires the user's confirmation, the token exchange creates a pending approval
bound to (user, agent, platform, intent hash) and answers 403 `approval_required`. The user
approves or declines on an authenticated page (`decide_approval`); the agent repeats the same
exchange with `approval_id` (`redeem_approval`) and gets `authorization_pending`, `slow_down`,
`access_denied` (declined), `expired_token`, or, exactly once, success.

Errors raised to the user's decide endpoint (not OAuth, but rendered by the same handler):
`ApprovalNotFoundError` (404) for an unknown id *and* for another user's approval, so ids
cannot be probed; `ApprovalNotPendingError` (409) once decided, consumed or expired.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from authserver.config import APPROVAL_POLL_INTERVAL, APPROVAL_TTL
from authserver.db import DatabaseUnavailableError
from authserver.errors import (
    AccessDeniedError,
    ApprovalRequiredError,
    AuthorizationPendingError,
    ExpiredTokenError,
    InvalidAuthorizationDetailsError,
    InvalidGrantError,
    InvalidRequestError,
    RateLimitedError,
    SlowDownError,
)
from authserver.intent import parse_mandate
from authserver.models.approvals import Approval
from authserver.presentation import (
    ClientIdentity,
    confirm_phrase,
    count_of,
    risk_of,
    what_in_words,
)
from authserver.store import Store
from authserver.store import keys as store_keys

PENDING = "pending"
APPROVED = "approved"
DECLINED = "declined"
CONSUMED = "consumed"

#: Bytes of randomness in an approval id (token_urlsafe: 43 characters).
APPROVAL_ID_BYTES = 32
#: Pending approvals one agent may have waiting for one user at a time; one more is 429
#: `rate_limited` until one is decided or expires (against MFA fatigue: a flood of cards).
MAX_PENDING_APPROVALS = 3
#: The lock (store key family `approval-lock`) that makes "same intent → same approval" and
#: the cap hold across processes.
LOCK_TIMEOUT = 5.0
LOCK_WAIT = 5.0


class ApprovalNotFoundError(InvalidRequestError):
    """No such approval for this user (unknown, or bound to someone else)."""

    status_code = 404


class ApprovalNotPendingError(InvalidRequestError):
    """The approval was already decided or consumed, or has expired."""

    status_code = 409


def create_approval(
    session: Session,
    *,
    user_id: str,
    agent_id: str,
    platform: str,
    intent: dict[str, Any],
    intent_hash: str,
    now: int,
    ttl: int = APPROVAL_TTL,
) -> Approval:
    """A new pending approval, expiring `ttl` seconds from `now`, added to `session`."""
    approval = Approval(
        id=secrets.token_urlsafe(APPROVAL_ID_BYTES),
        user_id=user_id,
        agent_id=agent_id,
        platform=platform,
        intent=dict(intent),
        intent_hash=intent_hash,
        status=PENDING,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(approval)
    session.flush()
    return approval


def request_approval(
    session: Session,
    store: Store,
    *,
    user_id: str,
    agent_id: str,
    platform: str,
    intent: dict[str, Any],
    intent_hash: str,
    mandate: dict[str, Any] | None,
    now: int,
    ttl: int = APPROVAL_TTL,
    max_pending: int = MAX_PENDING_APPROVALS,
) -> Approval:
    """The pending approval for this (user, agent, platform, intent hash), created if there
    is none yet. This function writes: the approval is a unit of work of its own, committed
    here, in a session of its own on `session`'s engine; the caller's session (the request's,
    which is refused with `approval_required` and so never commits) is only its engine.

    The same intent again gets the approval already waiting (one card, however often the
    agent asks). A new one is refused with RateLimitedError (429, `Retry-After` = until the
    oldest pending one expires) when the agent already has `max_pending` waiting for the
    user. Look-up, count and insert run under a store lock per (user, agent) and commit
    before it is released, so concurrent requests on any instance cannot exceed the cap or
    create two cards for one intent. Lock or store failures propagate (503); so does a
    database failure (DatabaseUnavailableError), and then no approval exists.
    """
    with store.lock(store_keys.approval_lock(user_id, agent_id), timeout=LOCK_TIMEOUT,
                    blocking_timeout=LOCK_WAIT), \
            Session(session.get_bind(), expire_on_commit=False) as own:
        try:
            approval = _pending_or_new(
                own, user_id=user_id, agent_id=agent_id, platform=platform, intent=intent,
                intent_hash=intent_hash, mandate=mandate, now=now, ttl=ttl,
                max_pending=max_pending)
            own.commit()  # before the lock is released: the cap holds across instances
        except SQLAlchemyError as e:
            own.rollback()
            raise DatabaseUnavailableError(debug=f"database: {type(e).__name__}") from e
        return approval


def _pending_or_new(session: Session, *, user_id: str, agent_id: str, platform: str,
                    intent: dict[str, Any], intent_hash: str, mandate: dict[str, Any] | None,
                    now: int, ttl: int, max_pending: int) -> Approval:
    """`request_approval`'s look-up, cap and insert (flushed; the caller commits)."""
    waiting = list(session.execute(
        select(Approval)
        .where(Approval.user_id == user_id, Approval.agent_id == agent_id,
               Approval.status == PENDING, Approval.expires_at > now)
        .order_by(Approval.created_at, Approval.id)
        .execution_options(populate_existing=True)
    ).scalars())
    for approval in waiting:
        if approval.platform == platform and approval.intent_hash == intent_hash:
            return approval
    if len(waiting) >= max_pending:
        raise RateLimitedError(
            min(a.expires_at for a in waiting) - now,
            "Too many requests are waiting for the user's confirmation",
            debug=f"{len(waiting)} pending approvals")
    approval = create_approval(
        session, user_id=user_id, agent_id=agent_id, platform=platform, intent=intent,
        intent_hash=intent_hash, now=now, ttl=ttl)
    approval.mandate = dict(mandate) if mandate is not None else None
    session.flush()
    return approval


def approval_required_error(
    approval: Approval, *, approval_uri: str, now: int,
    interval: int = APPROVAL_POLL_INTERVAL,
) -> ApprovalRequiredError:
    """The Part A3 403 `approval_required` response for a pending approval."""
    return ApprovalRequiredError(
        "User confirmation required",
        extra={
            "approval_id": approval.id,
            "approval_uri": approval_uri,
            "expires_in": max(0, approval.expires_at - now),
            "interval": interval,
        },
    )


def _get(session: Session, approval_id: str) -> Approval | None:
    if not approval_id or len(approval_id) > 64:
        return None
    # populate_existing: the row may have changed under us in another transaction.
    return session.execute(
        select(Approval).where(Approval.id == approval_id).execution_options(
            populate_existing=True
        )
    ).scalar_one_or_none()


def decide_approval(
    session: Session, approval_id: str, *, user_id: str, approve: bool, now: int
) -> Approval:
    """Record the bound user's decision on a pending, unexpired approval.

    One conditional UPDATE makes the decision atomic: of two concurrent decisions exactly one
    wins. Raises ApprovalNotFoundError if the id is unknown or bound to another user, and
    ApprovalNotPendingError if it is decided, consumed or expired.
    """
    approval = _get(session, approval_id)
    if approval is None or not hmac.compare_digest(approval.user_id.encode(), user_id.encode()):
        raise ApprovalNotFoundError("Unknown approval")
    result = session.execute(
        update(Approval)
        .where(
            Approval.id == approval_id,
            Approval.user_id == user_id,
            Approval.status == PENDING,
            Approval.expires_at > now,
        )
        .values(status=APPROVED if approve else DECLINED, decided_by=user_id, decided_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ApprovalNotPendingError(
            "Approval is no longer pending", debug=f"status={approval.status}"
        )
    session.refresh(approval)
    return approval


def _is_bound_to(
    approval: Approval, *, user_id: str, agent_id: str, platform: str, intent_hash: str
) -> bool:
    checks = [
        hmac.compare_digest(approval.user_id.encode(), user_id.encode()),
        hmac.compare_digest(approval.agent_id.encode(), agent_id.encode()),
        hmac.compare_digest(approval.platform.encode(), platform.encode()),
        hmac.compare_digest(approval.intent_hash.encode(), intent_hash.encode()),
    ]
    return all(checks)


def _check_poll_rate(store: Store, approval_id: str, *, now: int, interval: int) -> None:
    """Raise SlowDownError on a second poll within one `interval` window (CIBA §11).

    A fixed window counter in the shared store: atomic across processes and driven by `now`.
    """
    key = store_keys.approval_poll(approval_id, now // interval)
    if store.incr(key, ttl=2 * interval) > 1:
        raise SlowDownError(f"Poll at most every {interval} seconds")


def redeem_approval(
    session: Session,
    store: Store,
    approval_id: str,
    *,
    user_id: str,
    agent_id: str,
    platform: str,
    intent_hash: str,
    now: int,
    interval: int = APPROVAL_POLL_INTERVAL,
) -> Approval:
    """Consume an approved approval for the repeated exchange; return it, marked consumed.

    Raises, in this order:
      InvalidGrantError    unknown id, bound to another (user, agent, platform, intent hash),
                           or already consumed (replay)
      AccessDeniedError    the user declined (400)
      ExpiredTokenError    past `expires_at`
      SlowDownError        pending, polled again within `interval`
      AuthorizationPendingError  pending
    Store errors propagate (503). Consumption is one conditional UPDATE: a concurrent second
    redemption of the same approval gets InvalidGrantError.
    """
    approval = _get(session, approval_id)
    if approval is None:
        raise InvalidGrantError("Unknown approval_id")
    if not _is_bound_to(
        approval, user_id=user_id, agent_id=agent_id, platform=platform, intent_hash=intent_hash
    ):
        # Part A3: an approval is for one intent, user, agent and platform, never another.
        raise InvalidGrantError(
            "approval_id does not match this request", debug=f"approval {approval.id[:8]} binding"
        )
    if approval.status == CONSUMED:
        raise InvalidGrantError("approval_id was already used")
    if approval.status == DECLINED:
        raise AccessDeniedError("The user declined the request")
    if now >= approval.expires_at:
        raise ExpiredTokenError("The approval request has expired")
    if approval.status == PENDING:
        _check_poll_rate(store, approval.id, now=now, interval=interval)
        raise AuthorizationPendingError("Waiting for the user to confirm")
    if approval.status != APPROVED:
        raise InvalidGrantError("Unknown approval state", debug=f"status={approval.status}")
    result = session.execute(
        update(Approval)
        .where(Approval.id == approval.id, Approval.status == APPROVED)
        .values(status=CONSUMED, consumed_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidGrantError("approval_id was already used", debug="lost consumption race")
    session.refresh(approval)
    return approval


def pending_for_user(session: Session, user_id: str, now: int) -> list[Approval]:
    """The user's approvals still awaiting a decision, oldest first."""
    return list(
        session.execute(
            select(Approval)
            .where(Approval.user_id == user_id, Approval.status == PENDING,
                   Approval.expires_at > now)
            .order_by(Approval.created_at, Approval.id)
        ).scalars()
    )


# --- what the user sees ----------------------------------------------------------------------

#: How many decided (or expired) approvals the approvals page lists under "Decided".
HISTORY_LENGTH = 20


def decided_for_user(session: Session, user_id: str, now: int,
                     limit: int = HISTORY_LENGTH) -> list[Approval]:
    """The user's approvals that are no longer waiting (decided, used, or expired
    undecided), the latest decided (or expired) first."""
    return list(
        session.execute(
            select(Approval)
            .where(Approval.user_id == user_id,
                   (Approval.status != PENDING) | (Approval.expires_at <= now))
            .order_by(func.coalesce(Approval.decided_at, Approval.expires_at).desc(),
                      Approval.created_at.desc(), Approval.id)
            .limit(limit)
        ).scalars()
    )


@dataclass(frozen=True)
class ApprovalCard:
    """An approval as the page presents it. Whose words are whose matters: `user_request` is
    the request the edge signed into the user's mandate (bound by its `request_hash`);
    `agent_says` is `intent.context.request`, which the agent (an LLM reading untrusted text)
    wrote, and must never be presented as the user's."""

    approval: Approval
    #: The action in plain words: "Delete deal acme-123", "Create 3 records (board b/tasks)".
    what: str
    #: "Your request (chat): “…”", or where it came from when its text was not shared.
    user_request: str
    agent_says: str | None
    #: The agent as registered (name, domain, whether anybody verified them).
    agent: ClientIdentity
    platform_name: str
    #: "destructive", "bulk", "write" or "read": destructive and bulk cards look different.
    risk: str
    count: int
    #: What the user types before Approve works (destructive and bulk), else None.
    confirm_phrase: str | None
    #: "pending", "approved", "declined", "used" (approved, then redeemed) or "expired".
    state: str


def approval_card(approval: Approval, *, agent: ClientIdentity | None = None,
                  platform_name: str | None = None, now: int | None = None) -> ApprovalCard:
    context = approval.intent.get("context")
    agent_says = context.get("request") if isinstance(context, dict) else None
    state = {CONSUMED: "used"}.get(approval.status, approval.status)
    if approval.status == PENDING and now is not None and now >= approval.expires_at:
        state = "expired"
    return ApprovalCard(
        approval=approval,
        what=describe_intent(approval.intent),
        user_request=_user_request(approval.mandate),
        agent_says=str(agent_says) if agent_says else None,
        agent=agent or ClientIdentity(approval.agent_id, approval.agent_id, None, False),
        platform_name=platform_name or approval.platform,
        risk=risk_of(approval.intent),
        count=count_of(approval.intent),
        confirm_phrase=confirm_phrase(approval.intent),
        state=state,
    )


def describe_intent(intent: dict[str, Any]) -> str:
    return what_in_words(intent)


def _user_request(mandate: dict[str, Any] | None) -> str:
    if mandate is None:
        return "No request of yours came with this."
    try:
        parsed = parse_mandate([mandate])
    except InvalidAuthorizationDetailsError:
        # Stored from a verified assertion, so this does not happen; say nothing rather than
        # something unverified.
        return "No request of yours came with this."
    if parsed.request_text is None:
        return f"Your request came from: {parsed.channel} (its text was not shared)"
    return f"Your request ({parsed.channel}): “{parsed.request_text}”"
