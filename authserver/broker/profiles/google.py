"""Google: offline access on consent, revocation by `token` alone, a six-month idle lifetime."""

from __future__ import annotations

from typing import TYPE_CHECKING

from authserver.broker.profiles.base import DAY, PlatformProfile, PlatformRequest

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform


def google_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Google's endpoint takes only `token` (no client authentication); revoking the refresh
    token revokes the whole grant."""
    url = platform.revocation_url or "https://oauth2.googleapis.com/revoke"
    return PlatformRequest("POST", url, data={"token": token}, client_auth="none")


# Google (https://developers.google.com/identity/protocols/oauth2/web-server).
PROFILE = PlatformProfile(
    name="google", auth_method="client_secret_post",
    # A refresh token only with access_type=offline, again on re-consent only with
    # prompt=consent (#offline); refresh responses omit refresh_token (keep the old one).
    extra_authorize_params={"access_type": "offline", "prompt": "consent",
                            "include_granted_scopes": "true"},
    # Unused refresh tokens die after six months; past the per-client and per-user caps
    # the oldest stop working: https://developers.google.com/identity/protocols/oauth2
    refresh_idle_lifetime=183 * DAY,
    # Revoke at oauth2.googleapis.com/revoke (#tokenrevoke). Revoking a token ends the
    # app's grant for the account, so a reconnect does NOT revoke the superseded token
    # (it would kill the new one); Google drops the oldest past its per-client cap instead.
    revocable_tokens=("refresh_token", "access_token"), revocation_request=google_revocation,
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    token_url="https://oauth2.googleapis.com/token",
    revocation_url="https://oauth2.googleapis.com/revoke",
    api_base_url="https://www.googleapis.com",
)
