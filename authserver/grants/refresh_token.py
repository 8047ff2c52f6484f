"""RFC 6749 §6 refresh, with rotation and reuse detection (RFC 9700 §4.14.2) and, for public
clients, proof of the same DPoP key on every refresh (RFC 9449 §5).

A retry of a rotation whose response was lost is not reuse: within REFRESH_TOKEN_REUSE_INTERVAL
the same client (authenticated, or proving the grant's DPoP key) with the same DPoP key as the
rotation gets the same successor back (refresh_tokens.retry_successor)."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin

from authserver import refresh_tokens
from authserver.clients import OAuthClient
from authserver.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidTargetError,
    UnauthorizedClientError,
)
from authserver.grants.base import GrantMixin
from authserver.models import Grant, User
from authserver.observability import REFRESH_TOKEN_REUSE
from authserver.tokens import TokenRequestContext, issue_access_token

log = logging.getLogger(__name__)


class RefreshTokenGrant(GrantMixin, BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = "refresh_token"
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post",
                                   "private_key_jwt", "none"]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use this grant type")
        value = self.request.form.get("refresh_token")
        if not value:
            raise InvalidRequestError("Missing refresh_token")
        row = refresh_tokens.find(self.db, value)
        if row is None:
            raise InvalidGrantError("Invalid refresh token")
        grant = self.db.get(Grant, row.grant_id)
        if grant is None or grant.client_id != client.client_id:
            raise InvalidGrantError("Invalid refresh token")
        if grant.revoked_at is not None:
            raise InvalidGrantError("The refresh token was revoked")
        if row.expires_at <= self.now:
            raise InvalidGrantError("The refresh token has expired")
        user = self.db.get(User, grant.user_id) if grant.user_id else None
        if grant.user_id and (user is None or not user.active):
            raise InvalidGrantError("The user is no longer active")
        proof = self.check_dpop(client)
        if grant.dpop_jkt is not None and (proof is None or proof.jkt != grant.dpop_jkt):
            raise InvalidGrantError("The refresh token is bound to another DPoP key")
        settings = self.services.settings
        scope = self.checked_scope(client, self.request.payload.scope or grant.scope,
                                   granted=grant.scope)
        resources = self.requested_resources()
        if not set(resources) <= set(grant.resources):
            raise InvalidTargetError("resource was not part of the grant")
        if not resources:
            self.check_still_served(grant.resources)
        self.check_resource_servers(resources or grant.resources, scope)
        key = self.services.refresh_successor_key
        if not key:  # never derive successors under an empty or missing key
            raise RuntimeError("no refresh-token successor key configured")
        jkt = proof.jkt if proof else None
        successor = refresh_tokens.rotate(self.db, row, value, key=key, jkt=jkt, now=self.now,
                                          ttl=settings.refresh_token_ttl)
        if successor is None and self.sender_constrained(client, grant):
            # Retired already. The same client retrying a rotation whose response it lost
            # (issue 13, item 6) gets that rotation's successor again, never a new one.
            successor = refresh_tokens.retry_successor(
                self.db, row, value, key=key, jkt=jkt, now=self.now,
                interval=settings.refresh_token_reuse_interval)
            if successor is not None:
                REFRESH_TOKEN_REUSE.labels(outcome="retried").inc()
                log.info("refresh token retried within the reuse interval",
                         extra={"grant_id": grant.id, "client_id": client.client_id})
        if successor is None:
            # Reuse of a rotated token: assume theft and revoke the whole family.
            REFRESH_TOKEN_REUSE.labels(outcome="revoked").inc()
            self.db.rollback()
            refresh_tokens.revoke_grant(self.services.db, grant.id, now=self.now)
            raise InvalidGrantError("The refresh token was already used")
        self.request.refresh_successor = successor
        self.request.client = client
        self.request.grant = grant
        self.request.scope_checked = scope
        self.request.resources = resources or grant.resources

    @staticmethod
    def sender_constrained(client: OAuthClient, grant: Grant) -> bool:
        """Whether this request shows it comes from the grant's own client: a confidential
        client authenticated, or the grant's DPoP key proven (checked above). A public,
        unbound client's client_id proves nothing, so its every reuse revokes."""
        return not client.row.is_public or grant.dpop_jkt is not None

    def create_token_response(self):
        client = self.request.client
        grant: Grant = self.request.grant
        settings = self.services.settings
        proof = getattr(self.request, "dpop", None)
        refresh: str = self.request.refresh_successor
        token = issue_access_token(
            self.services.keyring,
            settings.issuer,
            TokenRequestContext(
                sub=grant.user_id or client.client_id,
                client_id=client.client_id,
                audience=self.audience_for(self.request.resources),
                scope=self.request.scope_checked,
                ttl=settings.access_token_ttl,
                jkt=proof.jkt if proof else None,
                authorization_details=grant.authorization_details or None,
                grant_id=grant.id,
            ),
            now=self.now,
        )
        return self.token_response(token, refresh_token=refresh)
