"""RFC 6749 §6 refresh, with rotation and reuse detection (RFC 9700 §4.14.2) and, for public
clients, proof of the same DPoP key on every refresh (RFC 9449 §5).

A retry of a rotation whose response was lost is not reuse: within REFRESH_TOKEN_REUSE_INTERVAL
the same client (authenticated, or proving the grant's DPoP key) with the same DPoP key as the
rotation gets the same successor back (refresh_tokens.retry_successor)."""

from __future__ import annotations

import logging

from authserver import refresh_tokens
from authserver.clients import GRANT_REFRESH_TOKEN, OAuthClient
from authserver.errors import InvalidGrantError, InvalidRequestError, InvalidTargetError
from authserver.grants.base import (
    Grant,
    Issued,
    audience_for,
    check_dpop,
    check_resource_servers,
    check_still_served,
    checked_scope,
    issued,
    requested_resources,
)
from authserver.models import Grant as GrantRow
from authserver.models import User
from authserver.observability import REFRESH_TOKEN_REUSE
from authserver.services import Services
from authserver.token_endpoint.request import TokenRequest
from authserver.tokens import TokenRequestContext, issue_access_token

log = logging.getLogger(__name__)


class RefreshTokenGrant(Grant):
    GRANT_TYPE = GRANT_REFRESH_TOKEN
    PARAMETERS = frozenset({"refresh_token", "scope", "resource"})
    AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")

    def issue(self, services: Services, req: TokenRequest, client: OAuthClient) -> Issued:
        db, now = req.db, req.now
        value = req.form.get("refresh_token")
        if not value:
            raise InvalidRequestError("Missing refresh_token", reason="refresh_token_missing")
        row = refresh_tokens.find(db, value)
        if row is None:
            raise InvalidGrantError("Invalid refresh token", reason="refresh_token_unknown")
        grant = db.get(GrantRow, row.grant_id)
        if grant is None or grant.client_id != client.client_id:
            raise InvalidGrantError("Invalid refresh token", reason="refresh_token_other_client")
        if grant.revoked_at is not None:
            raise InvalidGrantError("The refresh token was revoked",
                                    reason="refresh_token_revoked")
        if row.expires_at <= now:
            raise InvalidGrantError("The refresh token has expired",
                                    reason="refresh_token_expired")
        user = db.get(User, grant.user_id) if grant.user_id else None
        if grant.user_id and (user is None or not user.active):
            raise InvalidGrantError("The user is no longer active", reason="user_inactive")
        proof = check_dpop(services, req, client, grant_type=self.GRANT_TYPE)
        if grant.dpop_jkt is not None and (proof is None or proof.jkt != grant.dpop_jkt):
            raise InvalidGrantError("The refresh token is bound to another DPoP key",
                                    reason="refresh_token_dpop_key_mismatch")
        settings = services.settings
        scope = checked_scope(services, client, req.form.get("scope") or grant.scope,
                              granted=grant.scope)
        resources = requested_resources(services, req)
        if not set(resources) <= set(grant.resources):
            raise InvalidTargetError("resource was not part of the grant",
                                     reason="resource_not_granted")
        if not resources:
            check_still_served(services, grant.resources)
        check_resource_servers(services, resources or grant.resources, scope,
                               bound=proof is not None)
        key = services.refresh_successor_key
        if not key:  # never derive successors under an empty or missing key
            raise RuntimeError("no refresh-token successor key configured")
        jkt = proof.jkt if proof else None
        successor = refresh_tokens.rotate(db, row, value, key=key, jkt=jkt, now=now,
                                          ttl=settings.refresh_token_ttl)
        if successor is None and sender_constrained(client, grant):
            # Retired already. The same client retrying a rotation whose response it lost
            # (issue 13, item 6) gets that rotation's successor again, never a new one.
            successor = refresh_tokens.retry_successor(
                db, row, value, key=key, jkt=jkt, now=now,
                interval=settings.refresh_token_reuse_interval)
            if successor is not None:
                REFRESH_TOKEN_REUSE.labels(outcome="retried").inc()
                log.info("refresh token retried within the reuse interval",
                         extra={"grant_id": grant.id, "client_id": client.client_id})
        if successor is None:
            # Reuse of a rotated token: assume theft and revoke the whole family.
            REFRESH_TOKEN_REUSE.labels(outcome="revoked").inc()
            db.rollback()
            refresh_tokens.revoke_grant(services.db, grant.id, now=now)
            raise InvalidGrantError("The refresh token was already used",
                                    reason="refresh_token_reused")

        token = issue_access_token(
            services.keyring,
            settings.issuer,
            TokenRequestContext(
                sub=grant.user_id or client.client_id,
                client_id=client.client_id,
                audience=audience_for(services, resources or grant.resources),
                scope=scope,
                ttl=settings.access_token_ttl,
                jkt=jkt,
                authorization_details=grant.authorization_details or None,
                grant_id=grant.id,
            ),
            now=now,
        )
        return issued(token, refresh_token=successor)


def sender_constrained(client: OAuthClient, grant: GrantRow) -> bool:
    """Whether this request shows it comes from the grant's own client: a confidential client
    authenticated, or the grant's DPoP key proven (checked above). A public, unbound client's
    client_id proves nothing, so its every reuse revokes."""
    return not client.row.is_public or grant.dpop_jkt is not None
