"""GitHub OAuth apps: JSON only on request, errors with HTTP 200, grant and token deletion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from authserver.broker.profiles.base import PlatformProfile, PlatformRequest, error_only

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform


def github_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """GitHub reports token errors with HTTP 200 and an `error` member."""
    error = doc.get("error")
    if error in ("bad_verification_code", "bad_refresh_token", "unverified_user_email"):
        return error_only("invalid_grant")
    if error == "incorrect_client_credentials":
        return error_only("invalid_client")
    return doc


def github_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """GitHub: DELETE /applications/{client_id}/grant, Basic client auth, JSON body; deleting
    the grant revokes every token of the authorization."""
    base = platform.revocation_url or "https://api.github.com/applications"
    return PlatformRequest(
        "DELETE", f"{base.rstrip('/')}/{quote(platform.client_id, safe='')}/grant",
        json={"access_token": token}, client_auth="basic",
        headers={"Accept": "application/vnd.github+json"},
    )


def github_token_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """GitHub: DELETE /applications/{client_id}/token revokes one token and leaves the rest of
    the authorization (the new grant after a reconnect) alive (REST "Delete an app token",
    https://docs.github.com/en/rest/apps/oauth-applications; not in our stored copy)."""
    base = platform.revocation_url or "https://api.github.com/applications"
    return PlatformRequest(
        "DELETE", f"{base.rstrip('/')}/{quote(platform.client_id, safe='')}/token",
        json={"access_token": token}, client_auth="basic",
        headers={"Accept": "application/vnd.github+json"},
    )


# GitHub OAuth apps.
PROFILE = PlatformProfile(
    name="github", auth_method="client_secret_post",
    # Form-encoded token response unless Accept: application/json; errors with HTTP 200:
    # https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
    token_request_headers={"Accept": "application/json"},
    token_response_quirks=github_token_response,
    # OAuth-app tokens never expire; GitHub-app user tokens last 8 h with rotating refresh
    # tokens: https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-
    # github-app/refreshing-user-access-tokens
    rotates_refresh_tokens=True, default_expires_in=None,
    # Disconnect deletes the whole authorization (DELETE /applications/{client_id}/grant):
    # https://docs.github.com/en/rest/apps/oauth-applications#delete-an-app-authorization
    revocable_tokens=("access_token",), revocation_request=github_revocation,
    # Ten tokens per user, app and scope; more revoke the oldest:
    # https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/
    # token-expiration-and-revocation. A reconnect revokes the superseded token only.
    revoke_superseded_grant=True, superseded_revocation_request=github_token_revocation,
    extra_headers={"Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"},
    authorize_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",
    revocation_url="https://api.github.com/applications",
    api_base_url="https://api.github.com",
)
