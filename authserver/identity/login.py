"""The login relying party: OpenID Connect Core 1.0 §3.1 code flow with PKCE (RFC 7636 §4)
and `iss` in the authorization response (RFC 9207 §2.4). Nonce replay entries go through the
shared `Store`."""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from authserver.encoding import sha256_b64url
from authserver.identity.discovery import MAX_DOCUMENT_BYTES, json_object
from authserver.identity.errors import IdentityError, IdPUnavailableError
from authserver.identity.id_tokens import (
    ID_TOKEN_LEEWAY,
    ID_TOKEN_TYPS,
    IdTokenVerifier,
    check_at_hash,
)
from authserver.outbound import OutboundError
from authserver.store import keys as store_keys

#: Nonce replay entries live at least this long, even for an already-expiring ID token.
NONCE_REPLAY_MIN_TTL = 60
#: Token responses read (RFC 6749 §5.1, §5.2): 200, or an error; a 5xx is the IdP being down.
_TOKEN_RESPONSE_STATUSES = tuple(range(200, 500))


@dataclass(frozen=True)
class LoginStart:
    """Where to send the browser, and what the caller keeps in the browser session."""

    url: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)


class OIDCProvider(IdTokenVerifier):
    """One configured IdP: discovery, JWKS, the code flow and ID-token validation."""

    def begin_login(
        self, *, redirect_uri: str, now: int, login_hint: str | None = None
    ) -> LoginStart:
        """Build the authorization request (OIDC Core §3.1.2.1, PKCE S256, fresh state/nonce).

        The caller stores `state`, `nonce` and `code_verifier` in the browser session and
        passes them back to `verify_callback` and `complete_login`.
        """
        endpoint = self.metadata(now=now)["authorization_endpoint"]
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        # RFC 7636 §4.1: 43-128 unreserved characters; 48 random bytes give 64 characters.
        verifier = secrets.token_urlsafe(48)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": sha256_b64url(verifier.encode("ascii")),
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        separator = "&" if urlsplit(endpoint).query else "?"
        return LoginStart(endpoint + separator + urlencode(params), state, nonce, verifier)

    def verify_callback(
        self, params: Mapping[str, str], *, expected_state: str, now: int
    ) -> str:
        """Check the authorization response at our redirect URI; return the code.

        Raises IdentityError on a state mismatch, an issuer mix-up or an IdP error response.
        """
        state = params.get("state")
        # OIDC Core §3.1.2.7 / RFC 6749 §10.12: the state binds the response to this browser.
        if not expected_state or not isinstance(state, str) or not hmac.compare_digest(
            state.encode(), expected_state.encode()
        ):
            raise IdentityError("login callback: state mismatch")
        iss = params.get("iss")
        # RFC 9207 §2.4: compare `iss` when sent; require it when the IdP says it sends it.
        if iss is not None and iss != self.config.issuer:
            raise IdentityError("login callback: iss mismatch (mix-up)")
        if iss is None and self.metadata(now=now).get(
            "authorization_response_iss_parameter_supported"
        ) is True:
            raise IdentityError("login callback: iss missing")
        if "error" in params:
            raise IdentityError(f"login callback: idp error {str(params['error'])[:64]!r}")
        code = params.get("code")
        if not isinstance(code, str) or not code:
            raise IdentityError("login callback: code missing")
        return code

    def complete_login(
        self, *, code: str, redirect_uri: str, expected_nonce: str, code_verifier: str, now: int
    ) -> dict[str, Any]:
        """Redeem the code at the IdP and return the verified ID-token claims.

        Raises IdentityError (bad code, bad ID token, replayed nonce) or IdPUnavailableError.
        """
        if not expected_nonce or not code_verifier:
            raise IdentityError("login: no nonce or code_verifier in the session")
        body = self._redeem_code(code=code, redirect_uri=redirect_uri,
                                 code_verifier=code_verifier, now=now)
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise IdentityError("login: token response has no id_token")
        header, claims = self.verify_token(id_token, now=now, nonce=expected_nonce,
                                      audiences=(self.config.client_id,), typs=ID_TOKEN_TYPS)
        access_token = body.get("access_token")
        if "at_hash" in claims and isinstance(access_token, str):
            # OIDC Core §3.1.3.8: at_hash binds the access token to this ID token.
            check_at_hash(claims["at_hash"], access_token, header["alg"])
        # OIDC Core §15.5.2: a nonce is accepted once. The entry outlives the ID token, so the
        # same token cannot be replayed into another login while it is valid.
        ttl = max(int(claims["exp"]) + ID_TOKEN_LEEWAY - now, NONCE_REPLAY_MIN_TTL)
        if not self._store.add_if_absent(store_keys.oidc_nonce(expected_nonce), ttl):
            raise IdentityError("login: nonce replayed")
        return claims

    def _redeem_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, now: int
    ) -> dict[str, Any]:
        meta = self.metadata(now=now)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        authorization = None
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in methods:
            # RFC 6749 §2.3.1: form-urlencode id and secret before base64.
            pair = f"{quote(self.config.client_id, safe='')}:" \
                   f"{quote(self.config.client_secret, safe='')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        elif "client_secret_post" in methods:
            form["client_id"] = self.config.client_id
            form["client_secret"] = self.config.client_secret
        else:
            raise IdPUnavailableError(f"idp {self.config.name}: no supported client auth method")
        try:
            # The one outbound fetcher (no redirects, a size limit); a 5xx is the IdP being down.
            resp = self._outbound.post(
                meta["token_endpoint"], urlencode(form).encode("ascii"),
                max_bytes=MAX_DOCUMENT_BYTES, content_type="application/x-www-form-urlencoded",
                authorization=authorization, ok=_TOKEN_RESPONSE_STATUSES)
        except OutboundError as e:
            raise IdPUnavailableError(f"idp {self.config.name}: token request failed "
                                      f"({e.reason})") from e
        body = json_object(resp.body, f"idp {self.config.name}: token response",
                           unavailable=False)
        if resp.status != 200:
            # Only the error code is kept (debug); IdP descriptions are never passed on.
            raise IdentityError(f"login: token endpoint {resp.status} "
                                f"{str(body.get('error'))[:64]!r}")
        return body
