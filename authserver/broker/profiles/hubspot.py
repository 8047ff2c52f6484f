"""HubSpot: the date-versioned OAuth API, errors with RFC 6749 `error` and the legacy `status`."""

from __future__ import annotations

from typing import Any

from authserver.broker.profiles.base import PlatformProfile, error_only, is_error_code


def hubspot_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """HubSpot errors carry the RFC 6749 `error` member and, for compatibility, the legacy
    `status` (https://developers.hubspot.com/changelog/new-oauth-v3-api-endpoints-and-
    standardized-error-responses): `error` wins; `status` alone is mapped."""
    if "access_token" not in doc and is_error_code(doc.get("error")):
        return error_only(str(doc["error"]))
    status = doc.get("status")
    if "access_token" not in doc and isinstance(status, str):
        if status in ("BAD_REFRESH_TOKEN", "BAD_AUTH_CODE", "EXPIRED_AUTH_CODE"):
            return error_only("invalid_grant")
        if status == "BAD_CLIENT_ID":
            return error_only("invalid_client")
        return error_only("invalid_request")
    return doc


# HubSpot: the v1 OAuth endpoints are sunset on 2027-02-16; the date-versioned API is
# https://developers.hubspot.com/changelog/v1-oauth-api-deprecation and
# https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/
# migration-guide (form-encoded bodies, client credentials in the body).
PROFILE = PlatformProfile(
    name="hubspot", auth_method="client_secret_post",
    # Access tokens expire after 30 minutes: https://developers.hubspot.com/docs/
    # api-reference/latest/authentication/manage-oauth-tokens
    default_expires_in=1800,
    # Errors carry `error` (RFC 6749) and legacy `status`: https://developers.hubspot.com/
    # changelog/new-oauth-v3-api-endpoints-and-standardized-error-responses
    token_response_quirks=hubspot_token_response,
    # POST /oauth/2026-03/token/revoke replaces DELETE /oauth/v1/refresh-tokens/{token}
    # (changelog above): form `token` + client credentials, refresh tokens only.
    revocable_tokens=("refresh_token",),
    authorize_url="https://app.hubspot.com/oauth/authorize",
    token_url="https://api.hubapi.com/oauth/2026-03/token",
    revocation_url="https://api.hubapi.com/oauth/2026-03/token/revoke",
    api_base_url="https://api.hubapi.com",
)
