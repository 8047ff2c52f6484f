"""Configured platforms: the shipped profiles by name and a `Platform` built from one
`[platforms.<name>]` table (docs/standards.md A1). Its resource map is compiled by
`authserver.gateway_routes`, which also matches gateway requests against it (A5).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authserver.broker.profiles import (
    asana,
    atlassian,
    generic,
    github,
    google,
    hubspot,
    linear,
    microsoft,
    notion,
    salesforce,
    slack,
)
from authserver.broker.profiles.base import (
    RESERVED_AUTHORIZE_PARAMS,
    PlatformProfile,
    rfc7009_revocation,
)
from authserver.gateway_routes import ResourceRoute, compile_route
from authserver.urls import is_loopback_host

_PLATFORM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

#: Every vendor value in the profile modules carries the public page it comes from. Where a
#: value is our choice (a conservative default), the comment says so. Re-check the pages when a
#: platform changes.
PROFILES: dict[str, PlatformProfile] = {
    profile.name: profile
    for profile in (generic.PROFILE, salesforce.PROFILE, hubspot.PROFILE, google.PROFILE,
                    microsoft.PROFILE, slack.PROFILE, atlassian.PROFILE, github.PROFILE,
                    linear.PROFILE, notion.PROFILE, asana.PROFILE)
}

# Profile fields a deployment may override per platform (plain data only, never hooks).
_OVERRIDABLE: dict[str, type | tuple[type, ...]] = {
    "auth_method": str, "scope_separator": str, "scope_param": str,
    "token_request_format": str, "send_scope_on_refresh": bool, "rotates_refresh_tokens": bool,
    "default_expires_in": (int, type(None)), "instance_url_field": (str, type(None)),
    "instance_api_path": str, "instance_host_suffixes": (list, tuple),
    "supports_revocation": bool, "revocation_token_type_hint": bool,
    "revocable_tokens": (list, tuple), "extra_authorize_params": dict, "extra_headers": dict,
    "token_request_headers": dict, "pkce": bool, "refresh_reuse_grace": int,
    "refresh_idle_lifetime": (int, type(None)), "refresh_scopes": (list, tuple),
    "revoke_superseded_grant": bool, "api_base_discovery_url": (str, type(None)),
}


# --- configured platforms ----------------------------------------------------------------------


#: Seconds before expiry at which the broker refreshes a platform's access token by default
#: (`[platforms.<name>] refresh_margin`); a token is never stale before half its lifetime.
DEFAULT_REFRESH_MARGIN = 60
MAX_REFRESH_MARGIN = 3600


@dataclass(frozen=True)
class Platform:
    name: str
    display_name: str
    profile: PlatformProfile
    authorize_url: str
    token_url: str
    revocation_url: str | None
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    api_base_url: str | None = None
    resource_map: Mapping[str, ResourceRoute] = field(default_factory=dict)
    #: Per-deployment additions to the profile's authorization parameters.
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: Refresh an access token this many seconds before it expires, but never earlier than
    #: halfway through its own lifetime (`connections.refresh_margin`).
    refresh_margin: int = DEFAULT_REFRESH_MARGIN

    @classmethod
    def from_settings(cls, name: str, mapping: Mapping[str, Any]) -> Platform:
        """Build from one `[platforms.<name>]` table; raises ValueError on any misconfiguration.

        Keys: profile (default "generic"), display_name, authorize_url, token_url,
        revocation_url, client_id, client_secret, scopes (list), api_base_url, resources
        (table: pattern → template or {path, methods}), extra_authorize_params (table),
        profile_overrides (table of plain profile fields), refresh_margin (seconds, an
        integer 0..MAX_REFRESH_MARGIN; default DEFAULT_REFRESH_MARGIN).
        """
        if not _PLATFORM_NAME.match(name):
            raise ValueError(f"platform name {name!r} must match {_PLATFORM_NAME.pattern}")
        known = {"profile", "display_name", "authorize_url", "token_url", "revocation_url",
                 "client_id", "client_secret", "scopes", "api_base_url", "resources",
                 "extra_authorize_params", "profile_overrides", "refresh_margin"}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(f"platform {name}: unknown settings {sorted(unknown)}")
        profile_name = str(mapping.get("profile", "generic"))
        if profile_name not in PROFILES:
            raise ValueError(f"platform {name}: unknown profile {profile_name!r}")
        profile = _apply_overrides(PROFILES[profile_name], mapping.get("profile_overrides") or {},
                                   name)
        authorize_url = mapping.get("authorize_url") or profile.authorize_url
        token_url = mapping.get("token_url") or profile.token_url
        revocation_url = mapping.get("revocation_url") or profile.revocation_url
        api_base_url = mapping.get("api_base_url") or profile.api_base_url
        if not authorize_url or not token_url:
            raise ValueError(f"platform {name}: authorize_url and token_url are required")
        for url in (authorize_url, token_url, revocation_url, api_base_url,
                    profile.api_base_discovery_url):
            if url is not None:
                _check_endpoint_url(str(url), name)
        if profile.supports_revocation and not revocation_url and \
                profile.revocation_request is rfc7009_revocation:
            raise ValueError(f"platform {name}: revocation_url is required by its profile")
        client_id = mapping.get("client_id")
        client_secret = mapping.get("client_secret")
        if not isinstance(client_id, str) or not client_id or not isinstance(client_secret, str) \
                or not client_secret:
            raise ValueError(f"platform {name}: client_id and client_secret are required")
        scopes = mapping.get("scopes") or []
        if not isinstance(scopes, list | tuple) or not all(
            isinstance(s, str) and s and " " not in s and profile.scope_separator not in s
            for s in scopes
        ):
            raise ValueError(f"platform {name}: scopes must be a list of scope tokens")
        extra = dict(mapping.get("extra_authorize_params") or {})
        _check_authorize_params({**profile.extra_authorize_params, **extra}, name)
        resources = mapping.get("resources") or {}
        if not isinstance(resources, Mapping):
            raise ValueError(f"platform {name}: resources must be a table")
        routes = {pattern: compile_route(pattern, spec, name)
                  for pattern, spec in resources.items()}
        return cls(
            name=name,
            display_name=str(mapping.get("display_name") or name),
            profile=profile,
            authorize_url=str(authorize_url),
            token_url=str(token_url),
            revocation_url=None if revocation_url is None else str(revocation_url),
            client_id=client_id,
            client_secret=client_secret,
            scopes=with_refresh_scope(profile, tuple(scopes)),
            api_base_url=None if api_base_url is None else str(api_base_url),
            resource_map=routes,
            extra_authorize_params={str(k): str(v) for k, v in extra.items()},
            refresh_margin=_check_refresh_margin(
                mapping.get("refresh_margin", DEFAULT_REFRESH_MARGIN), name),
        )


def _check_refresh_margin(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_REFRESH_MARGIN:
        raise ValueError(f"platform {name}: refresh_margin must be a whole number of seconds "
                         f"from 0 to {MAX_REFRESH_MARGIN}")
    return value


def _apply_overrides(profile: PlatformProfile, overrides: Any, name: str) -> PlatformProfile:
    if not isinstance(overrides, Mapping):
        raise ValueError(f"platform {name}: profile_overrides must be a table")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        expected = _OVERRIDABLE.get(key)
        bool_for_number = isinstance(value, bool) and expected is not bool
        if expected is None or not isinstance(value, expected) or bool_for_number:
            raise ValueError(f"platform {name}: profile override {key!r} is not allowed")
        changes[key] = tuple(value) if isinstance(value, list) else value
    result = dataclasses.replace(profile, **changes)
    if result.auth_method not in ("client_secret_basic", "client_secret_post"):
        raise ValueError(f"platform {name}: auth_method must be client_secret_basic or _post")
    if result.token_request_format not in ("form", "json"):
        raise ValueError(f"platform {name}: token_request_format must be form or json")
    if not set(result.revocable_tokens) <= {"access_token", "refresh_token"}:
        raise ValueError(f"platform {name}: revocable_tokens takes access_token/refresh_token")
    if result.default_expires_in is not None and result.default_expires_in <= 0:
        raise ValueError(f"platform {name}: default_expires_in must be positive")
    if result.refresh_reuse_grace < 0 or (result.refresh_idle_lifetime is not None
                                          and result.refresh_idle_lifetime <= 0):
        raise ValueError(f"platform {name}: refresh lifetimes must be positive")
    if not all(isinstance(s, str) and s and " " not in s for s in result.refresh_scopes):
        raise ValueError(f"platform {name}: refresh_scopes must be scope tokens")
    return result


def with_refresh_scope(profile: PlatformProfile, scopes: tuple[str, ...]) -> tuple[str, ...]:
    """`scopes` plus the profile's refresh scope when none of its refresh scopes is there
    (without one, Microsoft, Atlassian and Salesforce issue no refresh token and the
    connection dies at the first expiry)."""
    if not profile.refresh_scopes or set(profile.refresh_scopes) & set(scopes):
        return scopes
    return (*scopes, profile.refresh_scopes[0])


def _check_authorize_params(params: Mapping[str, Any], name: str) -> None:
    clash = RESERVED_AUTHORIZE_PARAMS & set(params)
    if clash:
        raise ValueError(f"platform {name}: extra_authorize_params may not set {sorted(clash)}")


def _check_endpoint_url(url: str, name: str) -> None:
    # Tokens and client secrets travel to these URLs: https only (plain http on loopback only,
    # for development and tests).
    if not is_allowed_url(url.replace("{cloud_id}", "x")):
        raise ValueError(f"platform {name}: endpoint {url!r} must be https")


def is_allowed_url(url: str, host_suffixes: tuple[str, ...] = ()) -> bool:
    """True if `url` is an absolute https URL (or http on loopback) with no userinfo, query or
    fragment, whose host ends with one of `host_suffixes` on a dot boundary (when given)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None \
            or parts.query or parts.fragment:
        return False
    loopback = is_loopback_host(host)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return False
    if host_suffixes and not loopback:
        return any(host == s or host.endswith("." + s) for s in host_suffixes)
    return True


def api_request_headers(platform: Platform, access_token: str) -> dict[str, str]:
    """Headers for an API call at the platform: the profile's header quirks plus the token."""
    return {**platform.profile.extra_headers, "Authorization": f"Bearer {access_token}"}
