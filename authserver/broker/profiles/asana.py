"""Asana: credentials in the form body, revocation with the refresh token."""

from __future__ import annotations

from authserver.broker.profiles.base import PlatformProfile

# Asana (https://developers.asana.com/docs/oauth): credentials in the form body;
# expires_in 3600; refresh responses carry no refresh_token (keep the old one); revoke with
# POST /-/oauth_revoke (token + client credentials in the body) using the refresh token.
PROFILE = PlatformProfile(
    name="asana", auth_method="client_secret_post", revocable_tokens=("refresh_token",),
    revocation_token_type_hint=False,
    authorize_url="https://app.asana.com/-/oauth_authorize",
    token_url="https://app.asana.com/-/oauth_token",
    revocation_url="https://app.asana.com/-/oauth_revoke",
    api_base_url="https://app.asana.com/api/1.0",
)
