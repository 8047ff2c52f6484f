"""RFC 9449 §4.3 (9) `htu` comparison: the RFC 3986 §6.2.2/§6.2.3 normal form of an http(s) URI.

Pure functions, re-exported by `authserver.dpop` (DPOP-09 in docs/standards.md).
"""

from __future__ import annotations

import re
import string
from urllib.parse import quote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
#: RFC 3986 pchar and "/" (plus "%", whose triplets are normalized separately). Anything else,
#: e.g. a space or a non-ASCII character from a decoded path, is percent-encoded as UTF-8.
_PATH_SAFE = "/:@!$&'()*+,;=%"
_PERCENT_TRIPLET = re.compile(r"%(..)?", re.DOTALL)
_HEX_DIGITS = frozenset(string.hexdigits)


def normalize_htu(url: str) -> str:
    """RFC 3986 §6.2.2 and §6.2.3 normal form of an http(s) URI, without query and fragment.

    Lowercases scheme and host, drops the default port, upper-cases percent-encoding hex and
    decodes unreserved characters (and encodes characters a path may not hold raw), removes dot
    segments, and turns an empty path into "/". Raises ValueError for anything that is not an
    absolute http(s) URI.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("htu scheme is not http or https")
    host = parts.hostname  # already lower-cased by urlsplit
    if not host:
        raise ValueError("htu has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("htu has userinfo")
    port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        authority = f"{authority}:{port}"
    path = _remove_dot_segments(_normalize_percent_encoding(quote(parts.path, safe=_PATH_SAFE)))
    return f"{scheme}://{authority}{path or '/'}"


def _normalize_percent_encoding(path: str) -> str:
    def fix(match: re.Match[str]) -> str:
        hex_pair = match.group(1)
        if hex_pair is None or not _HEX_DIGITS.issuperset(hex_pair):
            raise ValueError("htu has a malformed percent-encoding")
        char = chr(int(hex_pair, 16))
        return char if char in _UNRESERVED else "%" + hex_pair.upper()

    return _PERCENT_TRIPLET.sub(fix, path)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, for an absolute path."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if path.split("/")[-1] in (".", ".."):
        output.append("")  # "/a/b/.." → "/a/", as §5.2.4 keeps the trailing slash
    return "/" + "/".join(output) if path else ""
