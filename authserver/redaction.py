"""Credential redaction for log lines and audit records: one set of patterns, one marker.

Defence in depth: callers never log or audit tokens in the first place. Two strengths:

* `redact_credentials` (log lines, the audit intent's text): Authorization header values
  (RFC 6750 Bearer, RFC 9449 DPoP, RFC 7617 Basic), credential form/query parameters and JSON
  members, compact JWS/JWE, three long base64url segments, passwords in connection URLs.
* `redact_text` (audit `detail`): the same, plus long opaque runs of token alphabet with both
  letters and digits (access/refresh tokens, client secrets, API keys). Logs keep those: a
  path or message with a record id must stay readable there, while an audit record is
  permanent and holds ids in its own columns.

Values under credential-looking keys (`is_sensitive_key`) are replaced whole, whatever they look
like. Redaction never raises and never rejects: the line or record must still be written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"token|secret|password|passwd|assertion|authorization|cookie|credential|api[_-]?key"
    r"|verifier|private|^code$|^dpop$",
    re.IGNORECASE,
)
_PARAM_NAMES = (
    r"client_secret|refresh_token|access_token|id_token|subject_token|actor_token"
    r"|client_assertion|assertion|code_verifier|password"
)
# An authorization scheme and its value. A short all-lowercase word after the scheme is prose
# ("DPoP proof rejected", "Bearer token missing"); anything else is taken for a credential.
_AUTH_SCHEME = re.compile(r"\b(Bearer|DPoP|Basic)\s+([A-Za-z0-9._~+/-]+=*)", re.IGNORECASE)
_PROSE_WORD = re.compile(r"[a-z]{1,15}")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Compact JWS (3 segments) or JWE (5): a base64url JSON header starts with "eyJ".
    (re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){2,4}"), REDACTED),
    # Form/query parameters and JSON members that carry credentials.
    (re.compile(rf"\b({_PARAM_NAMES})=[^&\s\"',;]+", re.IGNORECASE), r"\1=" + REDACTED),
    (
        re.compile(rf"\"({_PARAM_NAMES})\"\s*:\s*\"[^\"]*\"", re.IGNORECASE),
        r'"\1": "' + REDACTED + '"',
    ),
    # Any other three long base64url segments (e.g. a JWS whose header has leading whitespace).
    (re.compile(r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"), REDACTED),
    # Passwords in connection URLs (scheme://user:password@host), e.g. in driver errors.
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
)
# Every pattern above needs one of these (the three segments: 16 characters, then a dot); text
# without any is returned as it is (most log fields: methods, paths, addresses), one search.
_MAY_HOLD_CREDENTIAL = re.compile(r'[="@]|eyj|bearer|dpop|basic|[A-Za-z0-9_-]{16}\.', re.IGNORECASE)
# Long runs of token alphabet; '/' and '.' break a run so URL paths and host names survive.
_OPAQUE = re.compile(r"(?<![A-Za-z0-9_~+=-])[A-Za-z0-9_~+=-]{32,}(?![A-Za-z0-9_~+=-])")
# Record ids are often UUIDs: long, mixed, and not secrets.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@functools.lru_cache(maxsize=1024)
def is_sensitive_key(key: str) -> bool:
    """True for a field name whose value is a credential whatever it looks like (cached: field
    names are few and are not secrets)."""
    return _SENSITIVE_KEY.search(key) is not None


def _auth_value(match: re.Match[str]) -> str:
    if _PROSE_WORD.fullmatch(match.group(2)):
        return match.group(0)
    return f"{match.group(1)} {REDACTED}"


def redact_credentials(text: str) -> str:
    """`text` with everything credential-shaped replaced by REDACTED (log lines)."""
    if _MAY_HOLD_CREDENTIAL.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _AUTH_SCHEME.sub(_auth_value, text)


def _opaque(match: re.Match[str]) -> str:
    run = match.group(0)
    if _UUID.fullmatch(run):
        return run
    mixed = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return REDACTED if mixed else run


def redact_text(text: str) -> str:
    """`redact_credentials`, and long opaque tokens too (audit records)."""
    return _OPAQUE.sub(_opaque, redact_credentials(text))


def redact_log_value(key: str | None, value: Any) -> Any:
    """A log field's value with credentials removed, recursively (containers become lists)."""
    if key is not None and is_sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_credentials(value)
    if isinstance(value, Mapping):
        return {k: redact_log_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_log_value(None, v) for v in value]
    return value


def redact_mapping(value: Mapping[Any, Any], *, max_string: int) -> dict[str, Any]:
    """`redact_record_value` for a mapping: values under credential-looking keys go whole."""
    return {
        str(k): (REDACTED if is_sensitive_key(str(k))
                 else redact_record_value(v, max_string=max_string))
        for k, v in value.items()
    }


def redact_record_value(value: Any, *, max_string: int) -> Any:
    """A copy of `value` safe to store in an audit record, strings cut to `max_string`.

    Side effect worth knowing: hex digests and other long mixed strings are stripped too;
    hashes and ids belong in the record's own columns.
    """
    if isinstance(value, Mapping):
        return redact_mapping(value, max_string=max_string)
    if isinstance(value, list | tuple):
        return [redact_record_value(v, max_string=max_string) for v in value]
    if isinstance(value, str):
        return redact_text(value)[:max_string]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))[:max_string]
