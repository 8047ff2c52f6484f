"""Step-up approvals (shared/STANDARDS.md Part A3; polling modelled on OpenID CIBA Core §11).

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
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.config import APPROVAL_POLL_INTERVAL, APPROVAL_TTL
from authserver.errors import (
    AccessDeniedError,
    ApprovalRequiredError,
    AuthorizationPendingError,
    ExpiredTokenError,
    InvalidGrantError,
    InvalidRequestError,
    SlowDownError,
)
from authserver.models.approvals import Approval
from authserver.store import Store

PENDING = "pending"
APPROVED = "approved"
DECLINED = "declined"
CONSUMED = "consumed"

#: Bytes of randomness in an approval id (token_urlsafe: 43 characters).
APPROVAL_ID_BYTES = 32
_POLL_KEY = "approval_poll:"


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


def approval_required_error(
    approval: Approval, *, approval_uri: str, now: int,
    interval: int = APPROVAL_POLL_INTERVAL,
) -> ApprovalRequiredError:
    """The Part A3 403 `approval_required` response for a freshly created approval."""
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
    key = f"{_POLL_KEY}{approval_id}:{now // interval}"
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
