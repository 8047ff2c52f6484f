"""The outcome of an exchange: which audit outcome each error is, the specific refusal reason,
and the one record per exchange (a refusal in a transaction of its own)."""

from __future__ import annotations

from typing import Any

from authserver.audit import AuditRecord, refused_unauthenticated
from authserver.errors import OAuthError, PolicyDeniedError
from authserver.grants.token_exchange.exchange import Exchange, ExchangeSteps
from authserver.observability import correlation_id


class ExchangeAudit(ExchangeSteps):
    """Every outcome is audited before the response leaves (authserver.audit), with the
    request's correlation id."""

    def _audit_failure(self, ex: Exchange, *, outcome: str, reason: str | None,
                       detail: dict[str, Any]) -> None:
        """A refused exchange: drop what the request did (its locks too), then record the
        refusal in a transaction of its own, since the request's own one will not commit.
        A client that did not authenticate is nobody to hold to account: it is counted, not
        appended to the chain, whose lock it could otherwise take at will (issue 13, item 8)."""
        self.db.rollback()
        if ex.client is None:
            refused_unauthenticated("token_exchange", reason or "server_error")
            return
        with self.services.db.session() as session:
            self._audit(ex, session, outcome=outcome, reason=reason, detail=detail)

    def _audit(self, ex: Exchange, session: Any, *, outcome: str, reason: str | None,
               detail: dict[str, Any]) -> None:
        """One record per exchange, written before the response leaves."""
        s = self.services
        record = AuditRecord(
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
        s.audit.append(session, record, now=self.now)


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
    if isinstance(error, PolicyDeniedError) and error.debug:
        return error.debug
    return error.error
