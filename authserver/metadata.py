"""RFC 8414 authorization server metadata, also served as OpenID Connect Discovery 1.0 (MCP-03):
the members OIDC requires are present and `scope=openid` yields an ID token."""

from __future__ import annotations

from typing import Any

from authserver.clients import (
    AUTH_METHODS,
    AUTHORIZATION_DETAILS_TYPES,
    CLIENT_ASSERTION_ALGS,
    SUPPORTED_GRANT_TYPES,
)
from authserver.dpop import DPOP_SIGNING_ALGS
from authserver.keys import SIGNING_ALG
from authserver.services import Services

TOKEN_TYPES_SUPPORTED = (
    "urn:ietf:params:oauth:token-type:access_token",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
)


def authorization_server_metadata(services: Services) -> dict[str, Any]:
    issuer = services.settings.issuer
    endpoint_auth = [m for m in AUTH_METHODS if m != "none"]
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "registration_endpoint": f"{issuer}/register",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "scopes_supported": list(services.settings.scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(SUPPORTED_GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "introspection_endpoint_auth_methods_supported": endpoint_auth,
        "introspection_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": list(DPOP_SIGNING_ALGS),
        "authorization_details_types_supported": list(AUTHORIZATION_DETAILS_TYPES),
        "authorization_response_iss_parameter_supported": True,
        # draft-ietf-oauth-client-id-metadata-document §5 (CIMD-01): https URL client ids.
        "client_id_metadata_document_supported": services.cimd is not None,
        "access_token_signing_alg_values_supported": [SIGNING_ALG],
        # OIDC Discovery §3 (the same document is /.well-known/openid-configuration):
        # scope=openid issues an ID token at the token endpoint, `sub` is the user id.
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [SIGNING_ALG],
        "token_exchange_token_types_supported": list(TOKEN_TYPES_SUPPORTED),
        "protected_resources": sorted(
            f"{issuer}/gateway/{name}" for name in services.platforms
        ) or None,
    }


def compact(document: dict[str, Any]) -> dict[str, Any]:
    """RFC 8414 §3.2: omit members whose value would be empty."""
    return {k: v for k, v in document.items() if v not in (None, [], "")}
