"""The gateway's routes: compiling a platform's resource map (intent resource pattern → API path
template, optional methods) and the strict, anti-traversal match of a gateway request against
the path an intent maps to (docs/standards.md A5).

`compile_route` validates one `[platforms.<name>.resources]` entry at start-up. `resolve_path`
and `allowed_methods` say what an intent may call; `path_matches_intent` says whether a request
target is exactly that call: segments compared after strict percent-decoding, no empty, "." or
".." segment, no encoded slash or backslash, no double encoding, the query as a multiset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

from authserver.intent import ACTION_METHODS, GATEWAY_METHODS

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# A placeholder value: RFC 3986 unreserved characters only, so it can never smuggle a path
# separator, a query delimiter, a fragment or a percent-escape into the API path.
_VALUE = "[A-Za-z0-9._~-]+"
_METHOD = re.compile(r"^[A-Z]{1,16}$")


@dataclass(frozen=True)
class ResourceRoute:
    """One entry of a platform's resource map: intent resource pattern → API path template."""

    pattern: str
    template: str
    regex: re.Pattern[str]
    #: None = no narrowing: each action's own methods (`intent.ACTION_METHODS`). Otherwise a
    #: subset of `intent.GATEWAY_METHODS` that narrows them (`allowed_methods`).
    methods: frozenset[str] | None = None


def compile_route(pattern: str, spec: Any, platform_name: str = "?") -> ResourceRoute:
    """Validate and compile one resource-map entry; raises ValueError when misconfigured."""
    if isinstance(spec, str):
        template, methods = spec, None
    elif isinstance(spec, Mapping) and isinstance(spec.get("path"), str):
        template = spec["path"]
        raw_methods = spec.get("methods")
        if not isinstance(raw_methods, list | tuple) or not raw_methods or not all(
            isinstance(m, str) and _METHOD.match(m) for m in raw_methods
        ) or len(set(raw_methods)) != len(raw_methods):
            raise ValueError(f"platform {platform_name}: {pattern!r} methods must be a list "
                             "of distinct upper-case HTTP methods")
        methods = frozenset(raw_methods)
        # A route may only narrow what the actions allow, never add a method none of them may
        # use (the gateway would refuse it anyway; refusing here says so at start-up).
        unusable = methods - GATEWAY_METHODS
        if unusable:
            per_action = "; ".join(f"{action}: {', '.join(sorted(allowed))}"
                                   for action, allowed in ACTION_METHODS.items())
            raise ValueError(f"platform {platform_name}: {pattern!r} methods {sorted(unusable)} "
                             f"are not allowed for any action ({per_action})")
    else:
        raise ValueError(f"platform {platform_name}: {pattern!r} needs a path template")
    names = _PLACEHOLDER.findall(pattern)
    if len(names) != len(set(names)):
        raise ValueError(f"platform {platform_name}: {pattern!r} repeats a placeholder")
    if not set(_PLACEHOLDER.findall(template)) <= set(names):
        raise ValueError(f"platform {platform_name}: {template!r} uses an unknown placeholder")
    literal = _PLACEHOLDER.sub("", pattern) + _PLACEHOLDER.sub("", template)
    if "{" in literal or "}" in literal:
        raise ValueError(f"platform {platform_name}: malformed placeholder in {pattern!r}")
    filled = _PLACEHOLDER.sub("x", template)
    if _split_target(filled) is None:
        raise ValueError(f"platform {platform_name}: {template!r} is not a normalised path")
    regex_parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        regex_parts.append(re.escape(pattern[position:match.start()]))
        regex_parts.append(f"(?P<{match.group(1)}>{_VALUE})")
        position = match.end()
    regex_parts.append(re.escape(pattern[position:]))
    return ResourceRoute(pattern, template, re.compile("".join(regex_parts)), methods)


def _match(platform: Platform, resource: str) -> tuple[ResourceRoute, str] | None:
    """The one route `resource` fits and the API path it maps to; None if none or ambiguous."""
    found: dict[str, ResourceRoute] = {}
    for route in platform.resource_map.values():
        m = route.regex.fullmatch(resource)
        if m is None:
            continue
        values = m.groupdict()
        if any(set(v) == {"."} for v in values.values()):
            continue  # "." and ".." are path navigation, never identifiers
        path = _fill(route.template, values)
        found[path] = route
    if len(found) != 1:
        return None
    path, route = next(iter(found.items()))
    return route, path


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda p: quote(values[p.group(1)], safe=""), template)


#: The placeholder that names a site (an Atlassian cloud id) in a resource pattern: the gateway
#: checks its value against the sites stored on the connection, and fills an API base's
#: `{cloud_id}` with it.
SITE_PLACEHOLDER = "cloud_id"


def resource_site(platform: Platform, resource: str) -> str | None:
    """The `{cloud_id}` value of the one route `resource` fits; None if the route has none
    (or `resource` fits no route)."""
    matched = _match(platform, resource)
    if matched is None:
        return None
    m = matched[0].regex.fullmatch(resource)
    return None if m is None else m.groupdict().get(SITE_PLACEHOLDER)


def resolve_path(platform: Platform, resource: str) -> str | None:
    """The API path (relative to the API base, may carry a query) an intent resource maps to,
    or None if it fits no route, or fits several that disagree."""
    matched = _match(platform, resource)
    return None if matched is None else matched[1]


def allowed_methods(platform: Platform, resource: str, action: str) -> frozenset[str]:
    """The methods an intent (`action` on `resource`) may use: the action's own methods
    (`intent.ACTION_METHODS`), narrowed by the route's `methods` when it lists some. Empty for
    an unknown action or a resource that fits no route (or several that disagree)."""
    matched = _match(platform, resource)
    own = ACTION_METHODS.get(action, frozenset())
    if matched is None:
        return frozenset()
    route = matched[0]
    return own if route.methods is None else own & route.methods


def path_matches_intent(platform: Platform, intent_resource: str, method: str, path: str) -> bool:
    """True only if `method path` is exactly the call the intent's resource maps to.

    `path` is the request target after /gateway/<platform>/ (a leading "/" is ignored). The
    segments are compared after percent-decoding; empty segments ("//"), "." / "..", encoded
    slashes or backslashes, fragments and malformed escapes never match. The query is compared
    as a multiset of decoded name=value pairs: nothing added, nothing missing.
    """
    matched = _match(platform, intent_resource)
    if matched is None or not _METHOD.match(method):
        return False
    route, expected = matched
    if route.methods is not None and method not in route.methods:
        return False
    want, got = _split_target(expected), _split_target(path)
    return want is not None and got is not None and want == got


def _split_target(target: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None:
    """Canonical (segments, sorted query pairs) of a relative request target, or None if it is
    not strictly normalised."""
    if "#" in target or "\\" in target or any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
        return None
    raw_path, _, raw_query = target.partition("?")
    if raw_path.startswith("/"):
        raw_path = raw_path[1:]
    segments: list[str] = []
    for raw in raw_path.split("/"):
        decoded = _strict_unquote(raw)
        if decoded is None or decoded in ("", ".", "..") or "/" in decoded or "\\" in decoded:
            return None
        segments.append(decoded)
    pairs: list[tuple[str, str]] = []
    if raw_query:
        try:
            raw_pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return None
        for key, value in raw_pairs:
            if "%" in key or "%" in value:
                return None  # double encoding
            pairs.append((key, value))
    elif "?" in target:
        return None  # a dangling "?" is not the same request as none
    return tuple(segments), tuple(sorted(pairs))


def _strict_unquote(segment: str) -> str | None:
    if re.search(r"%(?![0-9A-Fa-f]{2})", segment):
        return None
    decoded = unquote(segment, errors="strict") if "%" in segment else segment
    if "%" in decoded:
        return None  # double encoding (%252e → %2e) is a classic traversal bypass
    return decoded
