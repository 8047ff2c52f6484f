"""The one "https, or plain http on loopback" rule.

Plain http is allowed only where nothing leaves the machine (development, tests, the demo).
A host is loopback only if it is exactly `localhost` or an IP literal in 127.0.0.0/8 or ::1:
never by prefix (`localhost.example.com` and `127.0.0.1.example.com` are ordinary DNS names
anyone can point anywhere), never by DNS resolution, and never in a numeric shorthand such as
`127.1` or `2130706433` (ipaddress rejects those, so they are not loopback).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit


def is_loopback_host(host: str | None) -> bool:
    """True if `host` (a URL's hostname, brackets optional for IPv6) is exactly `localhost`
    or a loopback IP literal."""
    if not host:
        return False
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_http_url(url: str) -> bool:
    """True if `url` is an absolute http URL on a loopback host, without userinfo."""
    parts = _split(url)
    return parts is not None and parts.scheme == "http" and is_loopback_host(parts.hostname)


def is_https_url(url: str) -> bool:
    """True if `url` is an absolute https URL with a host and without userinfo. The scheme is
    case-insensitive (RFC 3986 §3.1): `HTTPS://auth.example.com` is https, which a
    `startswith("https://")` test would miss (and then, say, drop the cookies' Secure flag)."""
    parts = _split(url)
    return parts is not None and parts.scheme == "https" and bool(parts.hostname)


def is_https_or_loopback_url(url: str) -> bool:
    """True if `url` is `is_https_url` or `is_loopback_http_url`; a URL with userinfo
    (`https://user@host`) or a malformed port is neither."""
    return is_https_url(url) or is_loopback_http_url(url)


def _split(url: str) -> SplitResult | None:
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return parts


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_resource(uri: str) -> str | None:
    """The comparison form of an RFC 8707 resource indicator, or None if it is not one (an
    absolute http(s) URI with a host, no userinfo, no fragment).

    RFC 3986 §6.2.2-6.2.3: scheme and host lower-cased, a default port dropped, an empty path
    is "/". One further rule of ours: a single trailing "/" on a non-empty path is not
    significant, so `https://mcp.example.com/mcp/` names the same resource as
    `https://mcp.example.com/mcp` (clients disagree about it, and no server of ours serves two
    different APIs at the two). The query is kept as it is; percent-encoding is not decoded.
    """
    parts = _split(uri)
    if parts is None or parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname \
            or "#" in uri:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def match_resource(uri: str, known: Iterable[str]) -> str | None:
    """The entry of `known` that names the same resource as `uri` (`normalize_resource`), so
    tokens carry the resource as it was registered; None if there is none."""
    wanted = normalize_resource(uri)
    if wanted is None:
        return None
    for entry in sorted(known):
        if normalize_resource(entry) == wanted:
            return entry
    return None
