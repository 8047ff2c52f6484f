"""Notion: JSON token requests, `Notion-Version` on every call, errors as `{object: "error"}`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authserver.broker.profiles.base import (
    PlatformProfile,
    PlatformRequest,
    clean_label,
    error_only,
    is_error_code,
)

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform


def notion_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """Notion errors are `{"object": "error", "status", "code", "message"}` with no `error`
    member (https://developers.notion.com/reference/status-codes): `code` is the OAuth code
    (`invalid_grant` for a spent or revoked refresh token)."""
    if doc.get("object") == "error" and "error" not in doc:
        code = doc.get("code")
        return error_only(str(code) if is_error_code(code) else "invalid_request")
    return doc


def notion_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Notion: POST /v1/oauth/revoke, Basic client auth, JSON `{"token": ...}`, with the
    Notion-Version header (https://developers.notion.com/reference/revoke-token)."""
    url = platform.revocation_url or "https://api.notion.com/v1/oauth/revoke"
    return PlatformRequest("POST", url, json={"token": token}, client_auth="basic",
                             headers=dict(platform.profile.extra_headers))


# Notion: https://developers.notion.com/docs/authorization
def notion_account_label(doc: dict[str, Any]) -> str | None:
    """The token response names the workspace (`workspace_name`) and, for a user-owned
    integration, the user (`owner.user`: `person.email`, else `name`):
    https://developers.notion.com/docs/authorization#step-4-notion-responds-with-an-access_token-and-some-additional-information"""
    owner = doc.get("owner")
    user = owner.get("user") if isinstance(owner, dict) else None
    person = user.get("person") if isinstance(user, dict) else None
    who = (clean_label(person.get("email")) if isinstance(person, dict) else None) or \
        (clean_label(user.get("name")) if isinstance(user, dict) else None)
    workspace = clean_label(doc.get("workspace_name"))
    if who and workspace:
        return clean_label(f"{who} in workspace {workspace}")
    return who or (clean_label(f"workspace {workspace}") if workspace else None)


PROFILE = PlatformProfile(
    name="notion",
    # JSON token requests with Basic client auth; no scopes (the user picks pages);
    # owner=user on authorize (same page).
    token_request_format="json", extra_authorize_params={"owner": "user"},
    # The token response carries a refresh token, and each refresh returns a new access
    # AND refresh token: https://developers.notion.com/reference/refresh-a-token. No
    # lifetime is documented, so only a 401 from the API triggers a refresh.
    rotates_refresh_tokens=True, default_expires_in=None,
    # Errors as {object: "error", status, code, message}:
    # https://developers.notion.com/reference/status-codes
    token_response_quirks=notion_token_response, account_label_from=notion_account_label,
    # POST /v1/oauth/revoke, Basic auth, JSON {token}:
    # https://developers.notion.com/reference/revoke-token
    revocable_tokens=("access_token",), revocation_request=notion_revocation,
    # Every API call needs Notion-Version (required even on revoke-token, above); the
    # version we were written against.
    extra_headers={"Notion-Version": "2022-06-28"},
    authorize_url="https://api.notion.com/v1/oauth/authorize",
    token_url="https://api.notion.com/v1/oauth/token",
    revocation_url="https://api.notion.com/v1/oauth/revoke",
    api_base_url="https://api.notion.com/v1",
)
