"""The one "https, or plain http on loopback" rule.

Plain http is allowed only where nothing leaves the machine (development, tests, the demo).
A host is loopback only if it is exactly `localhost` or an IP literal in 127.0.0.0/8 or ::1:
never by prefix (`localhost.example.com` and `127.0.0.1.example.com` are ordinary DNS names
anyone can point anywhere), never by DNS resolution, and never in a numeric shorthand such as
`127.1` or `2130706433` (ipaddress rejects those, so they are not loopback).
"""

from __future__ import annotations

import ipaddress
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


def is_https_or_loopback_url(url: str) -> bool:
    """True if `url` is an absolute https URL with a host, or `is_loopback_http_url`; a URL
    with userinfo (`https://user@host`) or a malformed port is neither."""
    parts = _split(url)
    if parts is None:
        return False
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


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
