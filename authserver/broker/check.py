"""`authserver platforms check NAME`: configuration a vendor will reject, found before a user
connects (issue 19). No network unless a metadata URL is given.

Each finding is a sentence that says what is wrong and what to change; none contains a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from authserver.broker.profiles import Platform, is_allowed_url
from authserver.outbound import Outbound, OutboundError
from authserver.urls import is_loopback_http_url

#: HubSpot's v1 OAuth endpoints stop working on this date
#: (https://developers.hubspot.com/changelog/v1-oauth-api-deprecation).
HUBSPOT_V1_SUNSET = "2027-02-16"
_SALESFORCE_HOSTS = ("salesforce.com", "force.com", "salesforce.mil")
#: Largest authorization server metadata document read.
METADATA_MAX_BYTES = 256 * 1024


def check_platform(name: str, mapping: Mapping[str, Any], *,
                   metadata_url: str | None = None) -> list[str]:
    """Findings for the `[platforms.NAME]` table `mapping`; [] when nothing is wrong."""
    try:
        platform = Platform.from_settings(name, mapping)
    except ValueError as e:
        return [str(e)]
    findings = _refresh_scope(platform, mapping) + _vendor(platform, mapping)
    if metadata_url is not None:
        findings += _against_metadata(platform, metadata_url)
    return findings


def _refresh_scope(platform: Platform, mapping: Mapping[str, Any]) -> list[str]:
    wanted = platform.profile.refresh_scopes
    configured = set(mapping.get("scopes") or [])
    if not wanted or configured & set(wanted):
        return []
    return [f"platform {platform.name}: scopes lack {' or '.join(wanted)}; without it "
            f"{platform.profile.name} issues no refresh token and the connection dies at the "
            f"first expiry. It is added to the authorization request; add "
            f"{wanted[0]!r} to scopes (and allow it for the app at the vendor)."]


def _vendor(platform: Platform, mapping: Mapping[str, Any]) -> list[str]:
    p, name, findings = platform.profile, platform.name, []
    params = {**p.extra_authorize_params, **platform.extra_authorize_params}
    if p.name == "google" and params.get("access_type") != "offline":
        findings.append(f"platform {name}: access_type must be offline, or Google issues no "
                        "refresh token")
    if p.name == "atlassian":
        if params.get("audience") != "api.atlassian.com":
            findings.append(f"platform {name}: audience must be api.atlassian.com")
        if platform.api_base_url and "{cloud_id}" in platform.api_base_url:
            findings.append(f"platform {name}: api_base_url holds {{cloud_id}}: users who "
                            "authorised several sites cannot connect; use "
                            "https://api.atlassian.com/ex and put {cloud_id} in the resources")
    if p.name == "hubspot":
        for key in ("token_url", "revocation_url"):
            url = getattr(platform, key) or ""
            if "/oauth/v1/" in url:
                findings.append(f"platform {name}: {key} uses HubSpot's v1 OAuth API, sunset "
                                f"on {HUBSPOT_V1_SUNSET}; use /oauth/2026-03/token"
                                + ("/revoke" if key == "revocation_url" else ""))
    if p.name == "salesforce":
        for key in ("authorize_url", "token_url", "revocation_url"):
            url = getattr(platform, key)
            if url and not is_allowed_url(url, _SALESFORCE_HOSTS):
                findings.append(f"platform {name}: {key} is not a Salesforce login host "
                                "(login/test.salesforce.com or <MyDomain>.my.salesforce.com)")
    if p.name == "slack":
        if p.scope_param != "user_scope":
            findings.append(f"platform {name}: scope_param must be user_scope: the broker acts "
                            "with user tokens and refuses a bot-only grant")
        if p.pkce:
            findings.append(f"platform {name}: pkce is on: the Slack app must have PKCE "
                            "enabled (a one-way switch to a public client); codes are then "
                            "redeemed without the client secret")
    if p.scope_separator == "," and any("," in s for s in platform.scopes):
        findings.append(f"platform {name}: a scope contains the separator ','")
    if p.name == "notion" and "Notion-Version" not in p.extra_headers:
        findings.append(f"platform {name}: Notion rejects API calls without Notion-Version")
    return findings


def _against_metadata(platform: Platform, url: str) -> list[str]:
    """RFC 8414: compare our endpoints with the platform's published metadata, fetched by
    the one outbound fetcher (internal addresses only for a loopback-http URL)."""
    name = platform.name
    if not is_allowed_url(url):
        return [f"platform {name}: metadata URL must be https"]
    try:
        fetcher = Outbound(allow_internal=is_loopback_http_url(url))
        doc = json.loads(fetcher.get(url, max_bytes=METADATA_MAX_BYTES).body)
    except (OutboundError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        return [f"platform {name}: metadata at {urlsplit(url).netloc} could not be read"]
    findings = []
    for ours, theirs in (("authorize_url", "authorization_endpoint"),
                         ("token_url", "token_endpoint"),
                         ("revocation_url", "revocation_endpoint")):
        mine, published = getattr(platform, ours), doc.get(theirs)
        if mine and isinstance(published, str) and mine != published:
            findings.append(f"platform {name}: {ours} differs from the published {theirs}")
    methods = doc.get("code_challenge_methods_supported")
    if platform.profile.pkce and isinstance(methods, list) and "S256" not in methods:
        findings.append(f"platform {name}: the platform does not list PKCE S256")
    auth_methods = doc.get("token_endpoint_auth_methods_supported")
    if isinstance(auth_methods, list) and platform.profile.auth_method not in auth_methods:
        findings.append(f"platform {name}: the platform does not list "
                        f"{platform.profile.auth_method}")
    return findings
