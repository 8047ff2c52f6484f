"""Slack user tokens: `user_scope`, the user token nested in `authed_user`, errors as HTTP 200
with `ok: false`, bearer `auth.revoke`."""

from __future__ import annotations

import json
from typing import Any

from authserver.broker.profiles.base import (
    PlatformProfile,
    bearer_revocation,
    clean_label,
    error_only,
)

#: Slack Web API error codes (https://docs.slack.dev/reference/methods/auth.revoke, method
#: pages' "Errors") that mean our token is dead or expired: treated as an HTTP 401.
_SLACK_AUTH_ERRORS = frozenset({"token_expired", "invalid_auth", "not_authed", "token_revoked",
                                "account_inactive"})
_SLACK_FORBIDDEN_ERRORS = frozenset({"missing_scope", "no_permission", "not_allowed_token_type",
                                     "ekm_access_denied", "access_denied"})


def slack_api_status(status: int, content_type: str, body: bytes) -> int:
    """Slack Web API methods answer HTTP 200 with `{"ok": false, "error": ...}` on failure
    (https://docs.slack.dev/apis/web-api/#responses): map that to the status it stands for, so
    `token_expired` triggers the gateway's refresh-on-401 and no error passes as a success."""
    if status != 200 or not content_type.split(";")[0].strip().lower().endswith("json"):
        return status
    try:
        doc = json.loads(body[:65536]) if body else None
    except ValueError:
        return status
    if not isinstance(doc, dict) or doc.get("ok") is not False:
        return status
    error = doc.get("error")
    if error in _SLACK_AUTH_ERRORS:
        return 401
    if error in _SLACK_FORBIDDEN_ERRORS:
        return 403
    if error == "ratelimited":
        return 429
    if error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
        return 503
    return 400


def slack_revocation_succeeded(doc: dict[str, Any]) -> bool:
    """`auth.revoke` answers HTTP 200 either way; only `ok: true` means revoked
    (https://docs.slack.dev/reference/methods/auth.revoke)."""
    return doc.get("ok") is True


def slack_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """Slack answers HTTP 200 with `ok: false, error: ...` and nests the user token.

    `oauth.v2.access` puts the *bot* token at the top level and the *user* token under
    `authed_user`; we act for the user, so a code exchange without a user token is refused
    rather than silently falling back to the bot. A rotated user token's refresh response is
    flat with `token_type: "user"`.
    """
    if doc.get("ok") is False:
        error = str(doc.get("error", ""))
        spent = {"invalid_code", "code_already_used", "invalid_refresh_token", "token_revoked",
                 "token_expired", "invalid_grant_type"}
        return error_only("invalid_grant" if error in spent else error or "invalid_request")
    if grant_type == "authorization_code":
        user = doc.get("authed_user")
        if not isinstance(user, dict) or not user.get("access_token"):
            return error_only("unsupported_token_type")
        return {k: user.get(k) for k in ("access_token", "refresh_token", "expires_in", "scope")
                if user.get(k) is not None} | {"token_type": "Bearer"}
    if doc.get("token_type") != "user":
        return error_only("unsupported_token_type")
    return {**doc, "token_type": "Bearer"}


# Slack (user tokens).
def slack_account_label(doc: dict[str, Any]) -> str | None:
    """`oauth.v2.access` names the workspace (`team.name`) and the user (`authed_user.id`):
    https://docs.slack.dev/reference/methods/oauth.v2.access"""
    team = doc.get("team")
    user = doc.get("authed_user")
    team_name = clean_label(team.get("name")) if isinstance(team, dict) else None
    user_id = clean_label(user.get("id")) if isinstance(user, dict) else None
    if team_name and user_id:
        return clean_label(f"user {user_id} in workspace {team_name}")
    return clean_label(f"workspace {team_name}") if team_name else \
        clean_label(f"user {user_id}") if user_id else None


PROFILE = PlatformProfile(
    name="slack",
    # User scopes go in `user_scope`, comma-separated; the user token is nested in
    # `authed_user`: https://docs.slack.dev/reference/methods/oauth.v2.access
    scope_separator=",", scope_param="user_scope",
    token_response_quirks=slack_token_response, account_label_from=slack_account_label,
    # PKCE is a one-way switch that marks the app a public client
    # (https://docs.slack.dev/authentication/using-pkce, https://docs.slack.dev/changelog/
    # 2026/03/30/pkce). Off by default; an app marked PKCE/public sets profile_overrides
    # pkce = true, and then redeems its codes without the client secret.
    pkce=False, pkce_public_client=True,
    # Without rotation tokens never expire; with it they last 12 hours and every refresh
    # revokes the refresh token used: https://docs.slack.dev/authentication/
    # using-token-rotation (single-use refresh tokens).
    default_expires_in=None, rotates_refresh_tokens=True,
    # Errors are HTTP 200 with ok=false ("Callers should always check the value of the ok
    # params": https://api.slack.com/methods/oauth.v2.exchange), auth.revoke included
    # (https://docs.slack.dev/reference/methods/auth.revoke, the token as bearer).
    api_response_status=slack_api_status, revocation_succeeded=slack_revocation_succeeded,
    revocable_tokens=("access_token",), revocation_request=bearer_revocation,
    authorize_url="https://slack.com/oauth/v2/authorize",
    token_url="https://slack.com/api/oauth.v2.access",
    revocation_url="https://slack.com/api/auth.revoke",
    api_base_url="https://slack.com/api",
)
