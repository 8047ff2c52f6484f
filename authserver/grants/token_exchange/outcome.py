"""The outcome of an exchange: which audit outcome each error is, the specific refusal reason,
and the one record per exchange (a refusal through `AuditLog.append_refusal`)."""

from __future__ import annotations

from typing import Any

from authserver.audit import AuditRecord, refused_unauthenticated
from authserver.errors import OAuthError
from authserver.grants.token_exchange.exchange import Exchange, ExchangeSteps
from authserver.observability import correlation_id


class ExchangeAudit(ExchangeSteps):
    """Every outcome is audited before the response leaves (authserver.audit), with the
    request's correlation id."""

    def _audit_failure(self, ex: Exchange, *, outcome: str, reason: str | None,
                       detail: dict[str, Any]) -> None:
        """A refused exchange: its record alone persists (`AuditLog.append_refusal` drops what
        the request did, its locks too); a pending approval it created was committed by
        `approvals.request_approval`. A client that did not authenticate is nobody to hold to
        account: it is counted, not appended to the chain, whose lock it could otherwise take
        at will (issue 13, item 8)."""
        if ex.client is None:
            refused_unauthenticated("token_exchange", reason or "server_error")
            return
        self.services.audit.append_refusal(
            self.db, self._record(ex, outcome=outcome, reason=reason, detail=detail),
            now=self.now)

    def _audit(self, ex: Exchange, session: Any, *, outcome: str, reason: str | None,
               detail: dict[str, Any]) -> None:
        """The allowed exchange's record, in the request's transaction: the token is issued
        only if the record commits with it."""
        self.services.audit.append(
            session, self._record(ex, outcome=outcome, reason=reason, detail=detail),
            now=self.now)

    def _record(self, ex: Exchange, *, outcome: str, reason: str | None,
                detail: dict[str, Any]) -> AuditRecord:
        """One record per exchange, written before the response leaves."""
        return AuditRecord(
            event="edge_mint" if ex.role == "edge" else "token_exchange",
            outcome=outcome,
            reason=reason,
            correlation_id=correlation_id(),
            user_id=ex.user.id if ex.user else None,
            agent_id=ex.agent_id or (ex.client.client_id if ex.client else None),
            actor_chain=_actor_chain(ex.act) if ex.act else [],
            platform=ex.platform,
            intent=ex.intent.to_json() if ex.intent else None,
            intent_hash=ex.intent.hash() if ex.intent else None,
            within_mandate=ex.within_mandate,
            policy_ids=ex.policy_ids,
            approval_id=ex.approval_id,
            token_jti=ex.token.jti if ex.token else None,
            client_ip=self.req.client_ip,
            detail={"client_id": ex.client.client_id if ex.client else None, **detail},
        )


def _actor_chain(act: dict[str, Any] | None) -> list[str]:
    chain: list[str] = []
    while isinstance(act, dict):
        chain.append(str(act.get("sub")))
        act = act.get("act")
    return chain

def outcome_of(error: OAuthError) -> str:
    return {
        "approval_required": "step_up",
        "rate_limited": "rate_limited",
        "access_denied": "denied",
        "authorization_pending": "pending",
        "slow_down": "pending",
        "expired_token": "expired",
        "connection_required": "denied",
        "temporarily_unavailable": "error",
        "server_error": "error",
    }.get(error.error, "invalid")

def reason_of(error: OAuthError, ex: Exchange) -> str:
    """The audit record's `reason`: the specific check that refused (`OAuthError.reason`,
    docs/operating.md "Audit refusal reasons"). A refusal before the client authenticated is
    only counted, labelled with the OAuth error code (a bounded label set)."""
    if ex.client is None:
        return error.error
    return error.reason
