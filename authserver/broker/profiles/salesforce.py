"""Salesforce: client credentials in the body, a per-org `instance_url`, rotation as an app
setting, five approvals per user and app."""

from __future__ import annotations

import re
from typing import Any

from authserver.broker.profiles.base import PlatformProfile, clean_label, oidc_account_label

# https://login.salesforce.com/id/<org id>/<user id>
_IDENTITY_URL = re.compile(r"^https://[^/]+/id/([A-Za-z0-9]{15,18})/([A-Za-z0-9]{15,18})$")


def salesforce_account_label(doc: dict[str, Any]) -> str | None:
    """The id_token's e-mail when `openid` was granted, else the user and org ids from the
    token response's `id` (the identity URL): https://help.salesforce.com/s/articleView?id=
    xcloud.remoteaccess_oauth_web_server_flow.htm ("id: Identity URL ... the user's ID and
    org ID")."""
    label = oidc_account_label(doc)
    if label:
        return label
    match = _IDENTITY_URL.match(str(doc.get("id") or ""))
    return clean_label(f"user {match.group(2)} (org {match.group(1)})") if match else None


# Salesforce.
PROFILE = PlatformProfile(
    name="salesforce",
    # Client credentials in the body: https://developer.salesforce.com/docs/atlas.en-us.
    # 216.0.api_rest.meta/api_rest/intro_understanding_refresh_token_oauth.htm
    auth_method="client_secret_post",
    # No expires_in (the session policy decides); 15 minutes, the shortest session
    # timeout, is our assumption.
    default_expires_in=900,
    # `instance_url` names the org's API host (same page); our API version choice.
    account_label_from=salesforce_account_label,
    instance_url_field="instance_url", instance_api_path="/services/data/v62.0",
    instance_host_suffixes=("salesforce.com", "force.com", "salesforce.mil"),
    # A refresh token only with the `refresh_token` (alias `offline_access`) scope, which
    # the connected app must also allow ("Perform requests on your behalf at any time
    # (refresh_token, offline_access)"): https://auth0.com/ai/docs/connections/salesforce
    # (Salesforce's own scopes page is not in our stored copy).
    refresh_scopes=("refresh_token", "offline_access"),
    # Rotation is an app setting; when on, "the previous refresh token is automatically
    # invalidated": https://help.salesforce.com/apex/HTViewHelpDoc?id=
    # remoteaccess_oauth_refresh_token_flow.htm. We cannot see the setting, so we assume
    # it is on (never replay a refresh of unknown outcome); a returned refresh token is
    # stored either way, and a response without one keeps the old token.
    rotates_refresh_tokens=True,
    # "Every connected application permits five distinctive approvals per user. Once a
    # sixth approval is created, the oldest approval is revoked":
    # https://docs.oracle.com/en/cloud/paas/integration-cloud/sforce-adapter/error-when-
    # connected-app-attempts-access-your-salesforce-data.html: revoke the superseded grant
    # on reconnect. /services/oauth2/revoke with `token`: https://developer.salesforce.com/
    # docs/atlas.en-us.api.meta/api/sforce_api_objects_oauthtoken.htm
    revoke_superseded_grant=True, revocation_token_type_hint=False,
    # login.salesforce.com is production. Sandboxes and My Domain orgs override the three
    # URLs in their [platforms.<name>] table, e.g. https://test.salesforce.com/services/
    # oauth2/{authorize,token,revoke} or https://MyDomainName.my.salesforce.com/services/
    # oauth2/... (`authorize_url`, `token_url`, `revocation_url`).
    authorize_url="https://login.salesforce.com/services/oauth2/authorize",
    token_url="https://login.salesforce.com/services/oauth2/token",
    revocation_url="https://login.salesforce.com/services/oauth2/revoke",
)
