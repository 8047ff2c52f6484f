"""Identity: OpenID Connect federation with corporate IdPs, JIT users and deprovisioning.

OpenID Connect Core 1.0 §3.1 (people: authorization code + PKCE with the IdP) and RFC 8693
§2.1 (machines: an IdP-issued token presented as a token-exchange `subject_token`).
`config` holds IdP settings, `discovery` the discovery/JWKS cache, `id_tokens` the token
checks, `login` the relying party's code flow, `federation` the registry of IdPs; `users` turns
verified claims into our users.
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
