"""authserver's `[platforms.*]` settings for the test platforms (Acme CRM, Taskboard).

One definition for the tests, the demo and the CI conformance stack. The URL paths are the
ones `authserver.testing.crm` and `authserver.testing.projects` serve.
"""

from __future__ import annotations

from typing import Any

#: Our client id at the test platforms.
CLIENT_ID_AT_PLATFORMS = "authserver"


def crm_platform(base_url: str, client_secret: str,
                 client_id: str = CLIENT_ID_AT_PLATFORMS) -> dict[str, Any]:
    """Acme CRM: rotating refresh tokens (reuse revokes the grant), RFC 7009 revocation."""
    return {
        "profile": "generic",
        "display_name": "Acme CRM",
        "authorize_url": base_url + "/oauth/authorize",
        "token_url": base_url + "/oauth/token",
        "revocation_url": base_url + "/oauth/revoke",
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": ["deals.read", "deals.write"],
        "api_base_url": base_url + "/api/v1",
        # Each route lists the methods the CRM serves there; the gateway allows the intersection
        # with the intent's action (read: GET/HEAD, update: PATCH/PUT, delete: DELETE, ...).
        "resources": {
            "deal:{id}": {"path": "deals/{id}", "methods": ["GET", "HEAD", "PATCH", "DELETE"]},
            "deal:{id}/notes": {"path": "deals/{id}/notes", "methods": ["GET", "HEAD"]},
            "deals?stage={stage}": {"path": "deals?stage={stage}", "methods": ["GET", "HEAD"]},
            "deals": {"path": "deals", "methods": ["GET", "HEAD"]},
        },
        "profile_overrides": {"rotates_refresh_tokens": True},
    }


def projects_platform(base_url: str, client_secret: str, *, revocation: bool,
                      client_id: str = CLIENT_ID_AT_PLATFORMS) -> dict[str, Any]:
    """Taskboard: client_secret_post, an `instance_url` with the token, no `expires_in`, and
    an RFC 7009 endpoint only when started with `revocation=True`."""
    settings: dict[str, Any] = {
        "profile": "generic",
        "display_name": "Taskboard",
        "authorize_url": base_url + "/oauth2/authorize",
        "token_url": base_url + "/oauth2/token",
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": ["boards:read", "tasks:write"],
        "resources": {
            "board:{id}": {"path": "boards/{id}", "methods": ["GET", "HEAD"]},
            "board:{id}/tasks": {"path": "boards/{id}/tasks", "methods": ["GET", "POST"]},
        },
        "profile_overrides": {
            "auth_method": "client_secret_post",
            "instance_url_field": "instance_url",
            "instance_api_path": "/api",
            "default_expires_in": 300,
        },
    }
    if revocation:
        settings["revocation_url"] = base_url + "/oauth2/revoke"
    else:
        settings["profile_overrides"]["supports_revocation"] = False
    return settings
