"""Wire encodings, one copy each.

**Strict JSON** (`loads_strict_json`) for every JSON document a peer sends us to act on
(`intent`, `authorization_details`, client metadata documents): no repeated member at any depth
(RFC 8259 §4 leaves the value to the parser, so another parser could read another document) and
no NaN/Infinity.

**base64url** without padding (RFC 4648 §5, as RFC 7515 §2 uses it), for JOSE members (`ath`,
`at_hash`), PKCE S256 challenges (RFC 7636 §4.2), DPoP nonces, mandate hashes, refresh-token
successors and envelope-encryption fields.

Decoding is strict: no padding, no `+` or `/`, nothing outside the alphabet, and no unused
non-zero bits in the last character, so each byte string has exactly one accepted encoding.

The fakes in `authserver/testing/` and the demo's edge and agent (`authserver/demo/`) keep their
own few lines: they play third parties (an IdP, platforms, a client) and check us from the
outside, so they do not share our code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

# The last character of a 2- or 3-character final quantum may only carry zero padding bits.
_SAFE_LAST = {3: b"AEIMQUYcgkosw048", 2: b"AQgw"}


def b64url_encode(data: bytes) -> str:
    """base64url of `data`, without `=` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """The bytes `text` (unpadded base64url) encodes; raises `binascii.Error` (a ValueError)
    for anything but the canonical encoding."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    if b"+" in raw or b"/" in raw or b"=" in raw:
        raise binascii.Error("not unpadded base64url")
    remainder = len(raw) % 4
    if remainder == 1:
        raise binascii.Error("impossible base64url length")
    if remainder and raw[-1] not in _SAFE_LAST[remainder]:
        raise binascii.Error("non-canonical base64url")
    return base64.b64decode(raw + b"=" * (-len(raw) % 4), b"-_", validate=True)


def sha256_b64url(data: bytes) -> str:
    """base64url (no padding) of SHA-256 over `data` (RFC 7636 S256, RFC 9449 `ath`)."""
    return b64url_encode(hashlib.sha256(data).digest())


def _no_repeated_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"repeated JSON member {name!r}")
        result[name] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON constant {name} not allowed")


def loads_strict_json(text: str | bytes) -> Any:
    """`json.loads`, refusing repeated members and NaN/Infinity; raises ValueError (also for
    malformed JSON or bytes that are not UTF-8)."""
    return json.loads(text, object_pairs_hook=_no_repeated_members,
                      parse_constant=_no_constants)
