"""RFC 6749 §4.4: client credentials (confidential clients only)."""

from __future__ import annotations

from authserver.clients import GRANT_CLIENT_CREDENTIALS, OAuthClient
from authserver.grants.base import (
    Grant,
    Issued,
    audience_for,
    check_dpop,
    check_resource_servers,
    checked_scope,
    issued,
    requested_resources,
)
from authserver.services import Services
from authserver.token_endpoint.request import TokenRequest
from authserver.tokens import TokenRequestContext, issue_access_token


class ClientCredentialsGrant(Grant):
    GRANT_TYPE = GRANT_CLIENT_CREDENTIALS
    PARAMETERS = frozenset({"scope", "resource"})
    AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")

    def issue(self, services: Services, req: TokenRequest, client: OAuthClient) -> Issued:
        scope = checked_scope(services, client, req.form.get("scope"))
        resources = requested_resources(services, req)
        proof = check_dpop(services, req, client, grant_type=self.GRANT_TYPE)
        check_resource_servers(services, resources, scope, bound=proof is not None)
        token = issue_access_token(
            services.keyring,
            services.settings.issuer,
            TokenRequestContext(
                sub=client.client_id,
                client_id=client.client_id,
                audience=audience_for(services, resources),
                scope=scope,
                ttl=services.settings.access_token_ttl,
                jkt=proof.jkt if proof else None,
            ),
            now=req.now,
        )
        return issued(token)
