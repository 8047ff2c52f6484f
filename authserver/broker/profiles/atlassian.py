"""Atlassian Cloud 3LO: JSON token requests, rotating refresh tokens with a 10-minute leeway, the
API base discovered per grant (cloud ids)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from authserver.broker.profiles.base import DAY, PlatformProfile, clean_label

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
    Atlassian enforces that the grant covers it, and so does the gateway (the connection
    stores every site, `atlassian_sites`). Any number of sites connects. A configured base
    with a `{cloud_id}` placeholder (e.g. https://api.atlassian.com/ex/confluence/{cloud_id})
    is filled when the grant covers exactly one site; with several it is kept as it is, and
    the gateway fills it from the intent's `{cloud_id}` (an intent without one is refused:
    the site is never guessed).
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
        return template
    return template.replace("{cloud_id}", str(ids[0]))


def atlassian_sites(discovered: Any) -> list[dict[str, str]] | None:
    """Every site in `accessible-resources` (`id`, `name`, `url`; same page as above), each
    id once; None if the document is not a list of sites with valid cloud ids."""
    if not isinstance(discovered, list) or not discovered:
        return None
    sites: dict[str, dict[str, str]] = {}
    for site in discovered:
        cloud_id = site.get("id") if isinstance(site, dict) else None
        if not isinstance(cloud_id, str) or not _CLOUD_ID.fullmatch(cloud_id):
            return None
        assert isinstance(site, dict)
        url = clean_label(site.get("url")) or ""
        sites.setdefault(cloud_id, {
            "id": cloud_id, "name": clean_label(site.get("name")) or "",
            "url": url if url.startswith("https://") else ""})
    return list(sites.values())


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
    refresh_idle_lifetime=90 * DAY, refresh_absolute_lifetime=365 * DAY,
    # No documented revocation endpoint: users revoke in their Atlassian account settings.
    supports_revocation=False,
    # Every site the user authorised, with its cloud id:
    # https://developer.atlassian.com/cloud/oauth/getting-started/making-calls-to-api/
    api_base_discovery_url="https://api.atlassian.com/oauth/token/accessible-resources",
    api_base_from_discovery=atlassian_api_base, sites_from_discovery=atlassian_sites,
    authorize_url="https://auth.atlassian.com/authorize",
    token_url="https://auth.atlassian.com/oauth/token",
    # Jira at /ex/jira/{cloud_id}, Confluence at /ex/confluence/{cloud_id}: the resource
    # map chooses (see atlassian_api_base).
    api_base_url=ATLASSIAN_API_GATEWAY,
)
