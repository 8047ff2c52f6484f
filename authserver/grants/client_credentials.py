"""RFC 6749 §4.4: client credentials (confidential clients only)."""

from __future__ import annotations

from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin

from authserver.errors import UnauthorizedClientError
from authserver.grants.base import GrantMixin
from authserver.tokens import TokenRequestContext, issue_access_token


class ClientCredentialsGrant(GrantMixin, BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = "client_credentials"
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use this grant type")
        self.request.client = client
        self.request.scope_checked = self.checked_scope(client, self.request.payload.scope)
        self.request.resources = self.requested_resources()
        self.check_dpop(client)
        self.check_resource_servers(self.request.resources, self.request.scope_checked)

    def create_token_response(self):
        client = self.request.client
        proof = getattr(self.request, "dpop", None)
        token = issue_access_token(
            self.services.keyring,
            self.services.settings.issuer,
            TokenRequestContext(
                sub=client.client_id,
                client_id=client.client_id,
                audience=self.audience_for(self.request.resources),
                scope=self.request.scope_checked,
                ttl=self.services.settings.access_token_ttl,
                jkt=proof.jkt if proof else None,
            ),
            now=self.now,
        )
        return self.token_response(token)
