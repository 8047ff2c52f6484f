"""Microsoft identity platform: `offline_access`, scope repeated on refresh, no per-grant
revocation."""

from __future__ import annotations

from typing import Any

from authserver.broker.profiles.base import DAY, PlatformProfile, error_only


def microsoft_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """Microsoft uses `interaction_required` / `consent_required` / `login_required` when only
    the user can restore the grant (MFA, Conditional Access, consent): same as invalid_grant."""
    if doc.get("error") in ("interaction_required", "consent_required", "login_required"):
        return error_only("invalid_grant")
    return doc


# Microsoft identity platform. Replace "organizations" with the tenant id in the
# configured URLs.
PROFILE = PlatformProfile(
    name="microsoft", auth_method="client_secret_post",
    # `offline_access` is needed for a refresh token; `scope` is sent again on refresh:
    # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
    refresh_scopes=("offline_access",), send_scope_on_refresh=True,
    # "Refresh tokens replace themselves with a fresh token upon every use. The Microsoft
    # identity platform doesn't revoke old refresh tokens when used"; 90-day lifetime:
    # https://learn.microsoft.com/entra/identity-platform/refresh-tokens. Each refresh
    # returns a new token that we store; the old one is not invalidated, so a replayed
    # refresh is harmless: no rotation flag.
    refresh_idle_lifetime=90 * DAY,
    # interaction_required / consent_required / login_required: only the user can fix it.
    token_response_quirks=microsoft_token_response,
    # No per-grant revocation endpoint (Graph revokeSignInSessions ends every session):
    # same page.
    supports_revocation=False,
    authorize_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
    token_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
    api_base_url="https://graph.microsoft.com/v1.0",
)
