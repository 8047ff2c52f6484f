"""Atlassian Cloud 3LO: JSON token requests, rotating refresh tokens with a 10-minute leeway, the
API base discovered per grant (cloud ids)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from authserver.broker.profiles.base import DAY, PlatformProfile

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform


_CLOUD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
ATLASSIAN_API_GATEWAY = "https://api.atlassian.com/ex"


def atlassian_api_base(discovered: Any, platform: Platform) -> str | None:
    """`accessible-resources` lists every site the user authorised the app for, each with its
    cloud id (https://developer.atlassian.com/cloud/oauth/getting-started/making-calls-to-api/).

    The default API base is the gateway root https://api.atlassian.com/ex: the resource map
    names the product and the site, e.g. `"jira:{cloud_id}/issue/{key}" =
    "jira/{cloud_id}/rest/api/3/issue/{key}"` or `"confluence:{cloud_id}/page/{id}" =
    "confluence/{cloud_id}/wiki/api/v2/pages/{id}"`, so the intent chooses the site and
    Atlassian enforces that the grant covers it. Any number of sites connects. A configured
    base with a `{cloud_id}` placeholder (one site per platform) is filled only when the grant
    covers exactly one site: with several it is ambiguous and refused, never guessed.
    """
    if not isinstance(discovered, list) or not discovered:
        return None
    ids = [site.get("id") if isinstance(site, dict) else None for site in discovered]
    if not all(isinstance(i, str) and _CLOUD_ID.fullmatch(i) for i in ids):
        return None
    template = platform.api_base_url or ATLASSIAN_API_GATEWAY
    if "{cloud_id}" not in template:
        return template
    if len(set(ids)) != 1:
        return None
    return template.replace("{cloud_id}", str(ids[0]))


# Atlassian Cloud 3LO: https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/
PROFILE = PlatformProfile(
    name="atlassian", auth_method="client_secret_post", token_request_format="json",
    # audience=api.atlassian.com and prompt=consent on authorize (same page).
    extra_authorize_params={"audience": "api.atlassian.com", "prompt": "consent"},
    # `offline_access` for a refresh token (same page).
    refresh_scopes=("offline_access",),
    # Rotating refresh tokens: 90 days' inactivity expiry, 365 days absolute, and a reused
    # token is accepted within a 10-minute leeway: https://community.developer.atlassian.
    # com/t/updated-31-january-2022-action-required-deprecating-persistent-refresh-tokens/
    # 54172. The leeway makes retrying a refresh of unknown outcome safe.
    rotates_refresh_tokens=True, refresh_reuse_grace=600,
    refresh_idle_lifetime=90 * DAY,
    # No documented revocation endpoint: users revoke in their Atlassian account settings.
    supports_revocation=False,
    # Every site the user authorised, with its cloud id:
    # https://developer.atlassian.com/cloud/oauth/getting-started/making-calls-to-api/
    api_base_discovery_url="https://api.atlassian.com/oauth/token/accessible-resources",
    api_base_from_discovery=atlassian_api_base,
    authorize_url="https://auth.atlassian.com/authorize",
    token_url="https://auth.atlassian.com/oauth/token",
    # Jira at /ex/jira/{cloud_id}, Confluence at /ex/confluence/{cloud_id}: the resource
    # map chooses (see atlassian_api_base).
    api_base_url=ATLASSIAN_API_GATEWAY,
)
