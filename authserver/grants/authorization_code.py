"""RFC 6749 §4.1.3 authorization code at the token endpoint, with PKCE S256 (RFC 7636),
single-use codes (reuse revokes what the code produced), and `dpop_jkt` (RFC 9449 §10)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NoReturn

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import update

from authserver import refresh_tokens
from authserver.clients import GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, OAuthClient
from authserver.errors import InvalidGrantError, InvalidRequestError, InvalidTargetError
from authserver.grants.base import (
    Grant,
    Issued,
    audience_for,
    check_dpop,
    check_resource_servers,
    check_still_served,
    issued,
    requested_resources,
)
from authserver.models import AuthorizationCode, User
from authserver.models import Grant as GrantRow
from authserver.services import Services
from authserver.token_endpoint.request import TokenRequest
from authserver.tokens import TokenRequestContext, issue_access_token

#: An ID token states a sign-in; it is consumed at once (OIDC Core §3.1.3.7), so it is short.
ID_TOKEN_TTL = 300


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class AuthorizationCodeGrant(Grant):
    GRANT_TYPE = GRANT_AUTHORIZATION_CODE
    PARAMETERS = frozenset({"code", "redirect_uri", "code_verifier", "resource"})
    AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")

    def issue(self, services: Services, req: TokenRequest, client: OAuthClient) -> Issued:
        form, db = req.form, req.db
        code_value = form.get("code")
        if not code_value:
            raise InvalidRequestError("Missing code", reason="code_missing")
        code = db.get(AuthorizationCode, code_hash(code_value))
        if code is None or code.client_id != client.client_id:
            raise InvalidGrantError("Invalid code", reason="code_unknown")
        if code.used_at is not None:
            # Checked before expiry: a replay after the code's short lifetime still revokes.
            revoke_reused(services, req, code)
        if code.expires_at <= req.now:
            raise InvalidGrantError("The code has expired", reason="code_expired")
        # RFC 6749 §4.1.3: redirect_uri must be identical to the authorization request's.
        if form.get("redirect_uri") != code.redirect_uri:
            raise InvalidGrantError("redirect_uri does not match the authorization request",
                                    reason="redirect_uri_mismatch")
        check_pkce(code, form.get("code_verifier"))
        proof = check_dpop(services, req, client, grant_type=self.GRANT_TYPE)
        # RFC 9449 §10: the code is bound to the key named at the authorization endpoint.
        if code.dpop_jkt is not None and (proof is None or proof.jkt != code.dpop_jkt):
            raise InvalidGrantError("DPoP key does not match the authorization request",
                                    reason="code_dpop_key_mismatch")
        resources = requested_resources(services, req)
        if not set(resources) <= set(code.resources):
            raise InvalidTargetError("resource was not part of the authorization request",
                                     reason="resource_not_authorized")
        if not resources:
            check_still_served(services, code.resources)
        check_resource_servers(services, resources or code.resources, code.scope,
                               bound=proof is not None)
        consume(services, req, code)

        user = db.get(User, code.user_id)
        if user is None or not user.active:
            raise InvalidGrantError("The user is no longer active", reason="user_inactive")
        settings = services.settings
        grant = GrantRow(
            id=refresh_tokens.new_grant_id(),
            client_id=client.client_id,
            user_id=user.id,
            scope=code.scope,
            resources=code.resources,
            authorization_details=code.authorization_details,
            # RFC 9449 §5: only public clients' refresh tokens are key-bound.
            dpop_jkt=proof.jkt if (proof and client.row.is_public) else None,
            auth_time=code.auth_time,
            created_at=req.now,
        )
        db.add(grant)
        code.grant_id = grant.id
        refresh = None
        if client.check_grant_type(GRANT_REFRESH_TOKEN):
            refresh = refresh_tokens.issue(db, grant, now=req.now,
                                           ttl=settings.refresh_token_ttl)
        token = issue_access_token(
            services.keyring,
            settings.issuer,
            TokenRequestContext(
                sub=user.id,
                client_id=client.client_id,
                audience=audience_for(services, resources or code.resources),
                scope=code.scope,
                ttl=settings.access_token_ttl,
                jkt=proof.jkt if proof else None,
                authorization_details=code.authorization_details or None,
                grant_id=grant.id,
                extra={"auth_time": code.auth_time},
            ),
            now=req.now,
        )
        extra = None
        if "openid" in code.scope.split():
            extra = {"id_token": id_token(services, user.id, code, now=req.now)}
        return issued(token, refresh_token=refresh, extra=extra)


def check_pkce(code: AuthorizationCode, verifier: str | None) -> None:
    # RFC 7636 §4.6; codes are only ever issued with an S256 challenge.
    if not verifier:
        raise InvalidRequestError("Missing code_verifier", reason="code_verifier_missing")
    if not 43 <= len(verifier) <= 128:
        raise InvalidGrantError("Invalid code_verifier", reason="code_verifier_malformed")
    expected = create_s256_code_challenge(verifier)
    if not hmac.compare_digest(expected, code.code_challenge):
        raise InvalidGrantError("code_verifier does not match the code_challenge",
                                reason="code_verifier_mismatch")


def consume(services: Services, req: TokenRequest, code: AuthorizationCode) -> None:
    """Single use. A second redemption revokes the grant the first one created."""
    result = req.db.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_hash == code.code_hash,
               AuthorizationCode.used_at.is_(None))
        .values(used_at=req.now)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        revoke_reused(services, req, code)


def revoke_reused(services: Services, req: TokenRequest, code: AuthorizationCode) -> NoReturn:
    """RFC 6749 §4.1.2: deny a reused code and revoke the tokens issued from it."""
    req.db.rollback()  # reloads `code`: the concurrent redemption may have set grant_id
    grant_id = code.grant_id
    if grant_id:
        refresh_tokens.revoke_grant(services.db, grant_id, now=req.now)
    raise InvalidGrantError("The code was already used", reason="code_reused")


def id_token(services: Services, user_id: str, code: AuthorizationCode, *, now: int) -> str:
    """OIDC Core §2 / §3.1.3.3: the ID token of this sign-in, for this client only. `typ` JWT,
    never at+jwt, so no resource of ours takes it as an access token (JAT-01)."""
    s = services.settings
    claims: dict[str, Any] = {
        "iss": s.issuer, "sub": user_id, "aud": code.client_id, "azp": code.client_id,
        "iat": now, "exp": now + min(s.access_token_ttl, ID_TOKEN_TTL),
        "auth_time": code.auth_time,
    }
    if code.nonce is not None:
        claims["nonce"] = code.nonce
    return str(services.keyring.sign(claims, typ="JWT"))
