"""Platform profiles, one module per platform (`generic`, `salesforce`, `hubspot`, `google`,
`microsoft`, `slack`, `atlassian`, `github`, `linear`, `notion`, `asana`), what a profile is
(`base`), and configured platforms (`platform`). Every public name is importable from here,
including the route compiler and path matcher, which live in `authserver.gateway_routes`.
"""

from authserver.broker.profiles.atlassian import (
    ATLASSIAN_API_GATEWAY,
    atlassian_api_base,
)
from authserver.broker.profiles.base import (
    RESERVED_AUTHORIZE_PARAMS,
    ApiStatusHook,
    ClientAuthMethod,
    DiscoveryHook,
    PlatformProfile,
    PlatformRequest,
    RevocationHook,
    TokenKind,
    TokenResponseHook,
    bearer_revocation,
    is_error_code,
    rfc7009_revocation,
    standard_api_status,
    standard_token_response,
)
from authserver.broker.profiles.github import (
    github_revocation,
    github_token_response,
    github_token_revocation,
)
from authserver.broker.profiles.google import (
    google_revocation,
)
from authserver.broker.profiles.hubspot import (
    hubspot_token_response,
)
from authserver.broker.profiles.linear import (
    linear_revocation,
)
from authserver.broker.profiles.microsoft import (
    microsoft_token_response,
)
from authserver.broker.profiles.notion import (
    notion_revocation,
    notion_token_response,
)
from authserver.broker.profiles.platform import (
    DEFAULT_REFRESH_MARGIN,
    MAX_REFRESH_MARGIN,
    PROFILES,
    Platform,
    api_request_headers,
    is_allowed_url,
    with_refresh_scope,
)
from authserver.broker.profiles.slack import (
    slack_api_status,
    slack_revocation_succeeded,
    slack_token_response,
)
from authserver.gateway_routes import (
    ResourceRoute,
    allowed_methods,
    compile_route,
    path_matches_intent,
    resolve_path,
)

__all__ = [
    "ATLASSIAN_API_GATEWAY",
    "DEFAULT_REFRESH_MARGIN",
    "MAX_REFRESH_MARGIN",
    "PROFILES",
    "RESERVED_AUTHORIZE_PARAMS",
    "ApiStatusHook",
    "ClientAuthMethod",
    "DiscoveryHook",
    "Platform",
    "PlatformProfile",
    "PlatformRequest",
    "ResourceRoute",
    "RevocationHook",
    "TokenKind",
    "TokenResponseHook",
    "allowed_methods",
    "api_request_headers",
    "atlassian_api_base",
    "bearer_revocation",
    "compile_route",
    "github_revocation",
    "github_token_response",
    "github_token_revocation",
    "google_revocation",
    "hubspot_token_response",
    "is_allowed_url",
    "is_error_code",
    "linear_revocation",
    "microsoft_token_response",
    "notion_revocation",
    "notion_token_response",
    "path_matches_intent",
    "resolve_path",
    "rfc7009_revocation",
    "slack_api_status",
    "slack_revocation_succeeded",
    "slack_token_response",
    "standard_api_status",
    "standard_token_response",
    "with_refresh_scope",
]
