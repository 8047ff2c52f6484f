"""OAuth error codes as exceptions: one class per code.

RFC 6749 §5.2 (token endpoint), RFC 6750 §3.1 (resource servers), RFC 9449 §5/§7 (DPoP),
RFC 7591 §3.2.2 (registration), RFC 8707 §2, RFC 9396 §5, and the local codes of
docs/standards.md A3.

`description` is shown to the client and must be safe to show; `debug` is for logs and audit
only (free text); `reason` is the refusal's stable snake_case code for the audit trail and the
"request rejected" log line (docs/operating.md "Audit refusal reasons"), defaulting to `error`.
Exactly one Flask handler (authserver.http.errors) renders these; anything that is not an
`OAuthError` becomes `server_error` with no detail.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION_CHARS = re.compile(r"^[\x20-\x21\x23-\x5B\x5D-\x7E]*$")


class OAuthError(Exception):
    """Base class. Subclasses set `error` and `status_code`."""

    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 400

    def __init__(
        self,
        description: str | None = None,
        *,
        debug: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if description is not None and not _DESCRIPTION_CHARS.match(description):
            raise ValueError("error_description has characters RFC 6749 §5.2 forbids")
        super().__init__(debug or description or self.error)
        self.description = description
        self.debug = debug
        #: Which check refused (audit and logs only; never sent to the client).
        self.reason = reason or self.error
        self.extra_headers = dict(headers or {})
        self.extra = dict(extra or {})

    def with_reason(self, reason: str) -> OAuthError:
        """This error, with `reason` unless a more specific one was set where it was raised:
        a caller names the step that failed for an error another module raised."""
        if self.reason == self.error:
            self.reason = reason
        return self

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-store", **self.extra_headers}


# --- RFC 6749 §5.2 --------------------------------------------------------------------------


class InvalidRequestError(OAuthError):
    error = "invalid_request"


class InvalidClientError(OAuthError):
    """RFC 6749 §5.2: 401 with a WWW-Authenticate challenge (RFC 9110 requires one on 401)."""

    error = "invalid_client"
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="authserver"', **super().headers()}


class InvalidGrantError(OAuthError):
    error = "invalid_grant"


class UnauthorizedClientError(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseTypeError(OAuthError):
    error = "unsupported_response_type"


class InvalidScopeError(OAuthError):
    error = "invalid_scope"


class AccessDeniedError(OAuthError):
    """Authorization endpoint denial, or a declined approval while polling (Part A3: 400)."""

    error = "access_denied"


# --- extensions ----------------------------------------------------------------------------


class InvalidTargetError(OAuthError):
    """RFC 8707 §2."""

    error = "invalid_target"


class InvalidAuthorizationDetailsError(OAuthError):
    """RFC 9396 §5."""

    error = "invalid_authorization_details"


class InvalidRedirectUriError(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_redirect_uri"


class InvalidClientMetadataError(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_client_metadata"


class InvalidDpopProofError(OAuthError):
    """RFC 9449 §5 (token endpoint). Resource servers render it as a 401 challenge."""

    error = "invalid_dpop_proof"


class UseDpopNonceError(OAuthError):
    """RFC 9449 §8: carries exactly one fresh `DPoP-Nonce` header."""

    error = "use_dpop_nonce"

    def __init__(self, nonce: str, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(description or "Authorization server requires nonce in DPoP proof",
                         **kwargs)
        self.nonce = nonce
        #: No nonce was sent (else `description` says what was wrong with the one sent).
        self.missing = description is None

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "DPoP-Nonce": self.nonce}


class AuthorizationPendingError(OAuthError):
    error = "authorization_pending"


class SlowDownError(OAuthError):
    error = "slow_down"


class ExpiredTokenError(OAuthError):
    error = "expired_token"


# --- Part A3: policy, step-up, broker --------------------------------------------------------


class PolicyDeniedError(OAuthError):
    """Cedar denied the intent (Part A3: 403 access_denied). Policy ids go to audit only."""

    error = "access_denied"
    status_code = 403


class ApprovalRequiredError(OAuthError):
    """Cedar requires the user's confirmation; `extra` carries approval_id, approval_uri, …"""

    error = "approval_required"
    status_code = 403


class ConnectionRequiredError(OAuthError):
    error = "connection_required"
    status_code = 403


class RateLimitedError(OAuthError):
    error = "rate_limited"
    status_code = 429

    def __init__(self, retry_after: int, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(description or "Rate limit exceeded", **kwargs)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Retry-After": str(self.retry_after)}


#: `Retry-After` (seconds) on every 503: long enough not to hammer a failing dependency,
#: short enough that clients come back soon after it recovers.
RETRY_AFTER_SECONDS = 5


class TemporarilyUnavailableError(OAuthError):
    """A dependency (Redis, database, KMS, policy engine, platform) failed: fail closed with 503
    and `Retry-After`."""

    error = "temporarily_unavailable"
    status_code = 503

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Retry-After": str(RETRY_AFTER_SECONDS)}


class ServerError(OAuthError):
    error = "server_error"
    status_code = 500


# --- RFC 6750 §3.1 / RFC 9449 §7.1: resource-server errors ------------------------------------


class ResourceError(OAuthError):
    """An error a resource server (our gateway) renders as a `WWW-Authenticate` challenge.

    `scheme` is the scheme the client attempted (`DPoP` or `Bearer`); with `challenge_only`
    (no credentials presented) the challenge carries no `error` (RFC 6750 §3.1, RFC 9449 §7.1).
    `also` is a further challenge, without an error, for a scheme the resource also accepts
    (RFC 9449 §7.2: one field may carry several challenges, RFC 9110 §11.6.1).
    """

    scheme: str = "DPoP"

    def __init__(
        self,
        description: str | None = None,
        *,
        scheme: str = "DPoP",
        algs: str = "",
        extra_params: dict[str, str] | None = None,
        challenge_only: bool = False,
        also: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(description, **kwargs)
        self.scheme = scheme
        self.algs = algs
        self.extra_params = dict(extra_params or {})
        self.challenge_only = challenge_only
        self.also = also

    def challenge(self) -> str:
        params: list[tuple[str, str]] = []
        if not self.challenge_only:
            params.append(("error", self.error))
            if self.description:
                params.append(("error_description", self.description))
        params.extend(self.extra_params.items())
        if self.scheme == "DPoP" and self.algs:
            params.append(("algs", self.algs))
        rendered = ", ".join(f'{k}="{v}"' for k, v in params)
        challenge = f"{self.scheme} {rendered}".strip()
        return f"{challenge}, {self.also}" if self.also else challenge

    def body(self) -> dict[str, Any]:
        return {} if self.challenge_only else super().body()

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": self.challenge()}


class InvalidTokenError(ResourceError):
    error = "invalid_token"
    status_code = 401


class ResourceInvalidRequestError(ResourceError):
    error = "invalid_request"
    status_code = 400


class ResourceInvalidDpopProofError(ResourceError):
    error = "invalid_dpop_proof"
    status_code = 401


class ResourceUseDpopNonceError(ResourceError):
    error = "use_dpop_nonce"
    status_code = 401

    def __init__(self, nonce: str, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(description or "Resource server requires nonce in DPoP proof", **kwargs)
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "DPoP-Nonce": self.nonce}


class ResourceForbiddenError(ResourceError):
    """The request does not fit the capability token's intent (wrong method, path or record)."""

    error = "insufficient_scope"
    status_code = 403
