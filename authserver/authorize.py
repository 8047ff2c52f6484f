"""RFC 6749 §4.1.1 authorization requests: validation, codes, and responses.

PKCE S256 is mandatory (RFC 9700 §2.1.1), redirect URIs match exactly (§4.1.3), `iss` is in
every response (RFC 9207), `dpop_jkt` binds the code to a key (RFC 9449 §10), RFC 8707
`resource` and RFC 9396 `authorization_details` (type `agent_mandate`) are validated here.
Errors before the redirect URI is trusted are shown as a page, never redirected (GEN-04).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy.orm import Session

from authserver.cimd import find_client
from authserver.clients import OAuthClient
from authserver.config import AUTHORIZATION_CODE_TTL
from authserver.errors import (
    InvalidAuthorizationDetailsError,
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    UnauthorizedClientError,
    UnsupportedResponseTypeError,
)
from authserver.grants.authorization_code import code_hash
from authserver.models import AuthorizationCode, Client, User
from authserver.urls import match_resource

_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
SINGLE_VALUED = ("client_id", "redirect_uri", "response_type", "scope", "state",
                 "code_challenge", "code_challenge_method", "dpop_jkt", "nonce",
                 "authorization_details")


class AuthorizeError(Exception):
    """`redirect_uri` is set only once client and redirect URI are verified."""

    def __init__(self, error: OAuthError, redirect_uri: str | None, state: str | None) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


@dataclass
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str
    resources: list[str] = field(default_factory=list)
    dpop_jkt: str | None = None
    nonce: str | None = None
    authorization_details: list[dict[str, Any]] = field(default_factory=list)

    def as_params(self) -> dict[str, str]:
        """The request as form fields (the consent form re-submits it for re-validation)."""
        params = {
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": self.scope,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        if self.state is not None:
            params["state"] = self.state
        if self.dpop_jkt:
            params["dpop_jkt"] = self.dpop_jkt
        if self.nonce:
            params["nonce"] = self.nonce
        if self.authorization_details:
            params["authorization_details"] = json.dumps(self.authorization_details)
        return params


def validate_authorization_request(
    session: Session,
    params: Mapping[str, Sequence[str]],
    *,
    supported_scopes: Sequence[str],
    known_resources: set[str],
    cimd: Any = None,
    now: int = 0,
) -> AuthorizationRequest:
    """Validate a request (`params`: every value as a list, to catch repeats). `cimd`
    (authserver.cimd.CimdResolver) resolves https URL client ids; `now` dates a new one."""

    def one(name: str) -> str | None:
        values = params.get(name) or []
        return values[0] if values else None

    state = one("state")
    client_id = one("client_id")
    try:
        row = find_client(session, client_id, cimd=cimd, now=now)
    except InvalidClientError as e:  # a client metadata document we refuse (CIMD-02..05)
        raise AuthorizeError(e, None, state) from e
    if row is None:
        raise AuthorizeError(InvalidRequestError("Unknown client"), None, state)
    client = OAuthClient(row)
    redirect_uri = one("redirect_uri") or client.get_default_redirect_uri()
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        raise AuthorizeError(InvalidRequestError("Invalid redirect_uri"), None, state)

    def fail(error: OAuthError) -> AuthorizeError:
        return AuthorizeError(error, redirect_uri, state)

    for name in SINGLE_VALUED:
        if len(params.get(name) or []) > 1:
            raise fail(InvalidRequestError(f"Repeated parameter {name}"))
    if one("request") or one("request_uri"):
        raise fail(InvalidRequestError("Request objects are not supported"))
    if one("response_type") != "code":
        raise fail(UnsupportedResponseTypeError("Only response_type=code is supported"))
    if not client.check_grant_type("authorization_code"):
        raise fail(UnauthorizedClientError("The client may not use the authorization code"))

    challenge, method = one("code_challenge"), one("code_challenge_method")
    if not challenge:
        raise fail(InvalidRequestError("PKCE code_challenge is required"))
    if method != "S256":
        raise fail(InvalidRequestError("code_challenge_method must be S256"))
    if len(challenge) != 43 or not _B64URL.match(challenge):
        raise fail(InvalidRequestError("Malformed code_challenge"))

    scope = one("scope") or ""
    scopes = scope.split()
    if any(s not in supported_scopes for s in scopes) or \
            len(client.get_allowed_scope(scope).split()) != len(scopes):
        raise fail(InvalidScopeError("The requested scope is not allowed"))

    resources = []
    for resource in params.get("resource") or []:
        parts = urlsplit(resource)
        if not parts.scheme or not parts.netloc or "#" in resource:
            raise fail(InvalidTargetError("resource must be an absolute URI"))
        registered = match_resource(resource, known_resources)  # RFC 3986 §6 comparison
        if registered is None:
            raise fail(InvalidTargetError("Unknown resource"))
        resources.append(registered)
    resources = list(dict.fromkeys(resources))

    dpop_jkt = one("dpop_jkt")
    if dpop_jkt is not None and (len(dpop_jkt) != 43 or not _B64URL.match(dpop_jkt)):
        raise fail(InvalidRequestError("Malformed dpop_jkt"))

    details = _authorization_details(one("authorization_details"), fail)
    nonce = one("nonce")
    if nonce is not None and len(nonce) > 255:
        raise fail(InvalidRequestError("nonce is too long"))
    return AuthorizationRequest(
        client=row, redirect_uri=redirect_uri, state=state, scope=scope,
        code_challenge=challenge, resources=resources, dpop_jkt=dpop_jkt, nonce=nonce,
        authorization_details=details,
    )


def _authorization_details(raw: str | None, fail: Any) -> list[dict[str, Any]]:
    """RAR at the authorization endpoint: only `agent_mandate` entries (standing delegation)."""
    if raw is None:
        return []
    from authserver.intent import parse_mandate

    try:
        # The raw text, so it is parsed strictly (no duplicate members), like `intent`.
        mandate = parse_mandate(raw)
    except InvalidAuthorizationDetailsError as e:
        raise fail(e) from e
    return [mandate.to_authorization_details()]


def issue_code(session: Session, req: AuthorizationRequest, user: User, *, now: int) -> str:
    code = secrets.token_urlsafe(32)
    session.add(
        AuthorizationCode(
            code_hash=code_hash(code),
            client_id=req.client.client_id,
            user_id=user.id,
            redirect_uri=req.redirect_uri,
            scope=req.scope,
            resources=req.resources,
            authorization_details=req.authorization_details,
            code_challenge=req.code_challenge,
            code_challenge_method="S256",
            nonce=req.nonce,
            dpop_jkt=req.dpop_jkt,
            auth_time=now,
            expires_at=now + AUTHORIZATION_CODE_TTL,
        )
    )
    return code


def redirect_location(redirect_uri: str, params: Mapping[str, str | None], *, issuer: str) -> str:
    """Append response parameters (plus RFC 9207 `iss`) to the client's redirect URI."""
    query = {k: v for k, v in params.items() if v is not None}
    query["iss"] = issuer
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return redirect_uri + separator + urlencode(query)
