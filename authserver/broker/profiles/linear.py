"""Linear: comma-separated scopes, rotating refresh tokens, revocation by refresh token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from authserver.broker.profiles.base import PlatformProfile, PlatformRequest, bearer_revocation

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform


def linear_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Linear: POST /oauth/revoke. A refresh token goes in the `refresh_token` form field with
    our client credentials (access tokens live 24 h, so a bearer revoke of a day-old access
    token fails); an access token is sent as the bearer credential."""
    if platform.revocation_url is None:
        raise ValueError(f"platform {platform.name} has no revocation_url")
    if kind == "refresh_token":
        return PlatformRequest("POST", platform.revocation_url, data={"refresh_token": token})
    return bearer_revocation(platform, token, kind)


# Linear: https://linear.app/developers/oauth-2-0-authentication
PROFILE = PlatformProfile(
    name="linear", auth_method="client_secret_post", scope_separator=",",
    # Every app uses (rotating) refresh tokens since 2026-04-01 (same page).
    rotates_refresh_tokens=True,
    # Access tokens live 24 hours (issue 19; not on the stored page): revoke with the
    # refresh token in the `refresh_token` form field, the access token as a fallback.
    revocable_tokens=("refresh_token", "access_token"),
    revocation_request=linear_revocation,
    authorize_url="https://linear.app/oauth/authorize",
    token_url="https://api.linear.app/oauth/token",
    revocation_url="https://api.linear.app/oauth/revoke",
    api_base_url="https://api.linear.app",
)
