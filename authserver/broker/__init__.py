"""The credential broker (RFC 6749, RFC 7636, RFC 7009): platform profiles, the connect flow,
the encrypted vault of downstream tokens, single-flight refresh and downstream revocation.

Only this package reads the vault or talks to platforms. It never imports Flask and takes
`now` as a parameter; the HTTP pages and the gateway call into it.
"""

from authserver.broker.profiles import (
    PROFILES,
    Platform,
    PlatformProfile,
    api_request_headers,
)
from authserver.broker.vault import Vault

__all__ = [
    "PROFILES",
    "Platform",
    "PlatformProfile",
    "Vault",
    "api_request_headers",
]
