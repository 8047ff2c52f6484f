"""RFC 6749 §4.1.3 authorization code at the token endpoint, with PKCE S256 (RFC 7636),
single-use codes (reuse revokes what the code produced), and `dpop_jkt` (RFC 9449 §10)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NoReturn

from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import update

from authserver import refresh_tokens
from authserver.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidTargetError,
    UnauthorizedClientError,
)
from authserver.grants.base import GrantMixin
from authserver.models import AuthorizationCode, Grant, User
from authserver.tokens import TokenRequestContext, issue_access_token

#: An ID token states a sign-in; it is consumed at once (OIDC Core §3.1.3.7), so it is short.
ID_TOKEN_TTL = 300


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class AuthorizationCodeGrant(GrantMixin, BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = "authorization_code"
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post",
                                   "private_key_jwt", "none"]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use this grant type")
        form = self.request.form
        code_value = form.get("code")
        if not code_value:
            raise InvalidRequestError("Missing code")
        code = self.db.get(AuthorizationCode, code_hash(code_value))
        if code is None or code.client_id != client.client_id:
            raise InvalidGrantError("Invalid code")
        if code.used_at is not None:
            # Checked before expiry: a replay after the code's short lifetime still revokes.
            self.revoke_reused(code)
        if code.expires_at <= self.now:
            raise InvalidGrantError("The code has expired")
        # RFC 6749 §4.1.3: redirect_uri must be identical to the authorization request's.
        if form.get("redirect_uri") != code.redirect_uri:
            raise InvalidGrantError("redirect_uri does not match the authorization request")
        self.check_pkce(code, form.get("code_verifier"))
        proof = self.check_dpop(client)
        # RFC 9449 §10: the code is bound to the key named at the authorization endpoint.
        if code.dpop_jkt is not None and (proof is None or proof.jkt != code.dpop_jkt):
            raise InvalidGrantError("DPoP key does not match the authorization request")
        resources = self.requested_resources()
        if not set(resources) <= set(code.resources):
            raise InvalidTargetError("resource was not part of the authorization request")
        if not resources:
            self.check_still_served(code.resources)
        self.check_resource_servers(resources or code.resources, code.scope)
        self.consume(code)
        self.request.client = client
        self.request.code = code
        self.request.resources = resources or code.resources

    @staticmethod
    def check_pkce(code: AuthorizationCode, verifier: str | None) -> None:
        # RFC 7636 §4.6; codes are only ever issued with an S256 challenge.
        if not verifier:
            raise InvalidRequestError("Missing code_verifier")
        if not 43 <= len(verifier) <= 128:
            raise InvalidGrantError("Invalid code_verifier")
        expected = create_s256_code_challenge(verifier)
        if not hmac.compare_digest(expected, code.code_challenge):
            raise InvalidGrantError("code_verifier does not match the code_challenge")

    def consume(self, code: AuthorizationCode) -> None:
        """Single use. A second redemption revokes the grant the first one created."""
        result = self.db.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_hash == code.code_hash,
                   AuthorizationCode.used_at.is_(None))
            .values(used_at=self.now)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            self.revoke_reused(code)

    def revoke_reused(self, code: AuthorizationCode) -> NoReturn:
        """RFC 6749 §4.1.2: deny a reused code and revoke the tokens issued from it."""
        self.db.rollback()  # reloads `code`: the concurrent redemption may have set grant_id
        grant_id = code.grant_id
        if grant_id:
            refresh_tokens.revoke_grant(self.services.db, grant_id, now=self.now)
        raise InvalidGrantError("The code was already used")

    def create_token_response(self):
        client = self.request.client
        code: AuthorizationCode = self.request.code
        user = self.db.get(User, code.user_id)
        if user is None or not user.active:
            raise InvalidGrantError("The user is no longer active")
        proof = getattr(self.request, "dpop", None)
        settings = self.services.settings
        grant = Grant(
            id=refresh_tokens.new_grant_id(),
            client_id=client.client_id,
            user_id=user.id,
            scope=code.scope,
            resources=code.resources,
            authorization_details=code.authorization_details,
            # RFC 9449 §5: only public clients' refresh tokens are key-bound.
            dpop_jkt=proof.jkt if (proof and client.row.is_public) else None,
            auth_time=code.auth_time,
            created_at=self.now,
        )
        self.db.add(grant)
        code.grant_id = grant.id
        refresh = None
        if client.check_grant_type("refresh_token"):
            refresh = refresh_tokens.issue(self.db, grant, now=self.now,
                                           ttl=settings.refresh_token_ttl)
        token = issue_access_token(
            self.services.keyring,
            settings.issuer,
            TokenRequestContext(
                sub=user.id,
                client_id=client.client_id,
                audience=self.audience_for(self.request.resources),
                scope=code.scope,
                ttl=settings.access_token_ttl,
                jkt=proof.jkt if proof else None,
                authorization_details=code.authorization_details or None,
                grant_id=grant.id,
                extra={"auth_time": code.auth_time},
            ),
            now=self.now,
        )
        extra = None
        if "openid" in code.scope.split():
            extra = {"id_token": self.id_token(user.id, code)}
        return self.token_response(token, refresh_token=refresh, extra=extra)

    def id_token(self, user_id: str, code: AuthorizationCode) -> str:
        """OIDC Core §2 / §3.1.3.3: the ID token of this sign-in, for this client only. `typ`
        JWT, never at+jwt, so no resource of ours takes it as an access token (JAT-01)."""
        s = self.services.settings
        claims: dict[str, Any] = {
            "iss": s.issuer, "sub": user_id, "aud": code.client_id, "azp": code.client_id,
            "iat": self.now, "exp": self.now + min(s.access_token_ttl, ID_TOKEN_TTL),
            "auth_time": code.auth_time,
        }
        if code.nonce is not None:
            claims["nonce"] = code.nonce
        return str(self.services.keyring.sign(claims, typ="JWT"))
