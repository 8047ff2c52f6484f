"""Identity: OpenID Connect federation with corporate IdPs, JIT users and deprovisioning.

OpenID Connect Core 1.0 §3.1 (people: authorization code + PKCE with the IdP) and RFC 8693
§2.1 (machines: an IdP-issued token presented as a token-exchange `subject_token`).
`federation` is the relying party; `users` turns verified claims into our users.
"""

from authserver.identity.federation import (
    ID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    Federation,
    IdentityError,
    IdPConfig,
    IdPUnavailableError,
    LoginStart,
    OIDCProvider,
)

__all__ = [
    "ID_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "Federation",
    "IdPConfig",
    "IdPUnavailableError",
    "IdentityError",
    "LoginStart",
    "OIDCProvider",
]
