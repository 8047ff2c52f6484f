"""RFC 6749 as platforms actually speak it: profiles of the "OAuth zoo", configured platforms,
and the mapping from intent resources to API paths (docs/standards.md A1, A5).

A `PlatformProfile` is the data (plus a few small hooks) that says how one provider deviates
from, or chooses within, RFC 6749: client authentication, scope syntax, extra authorization
parameters, refresh-token rotation, a missing `expires_in`, instance-scoped API URLs, header
quirks and revocation. A `Platform` is one configured instance of a profile (our client id,
endpoints, scopes and resource map). Each shipped profile cites the public documentation its
quirks come from; re-check them there when a platform changes behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from authserver.intent import ACTION_METHODS, GATEWAY_METHODS
from authserver.urls import is_loopback_host

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]
TokenKind = Literal["access_token", "refresh_token"]

# Authorization request parameters we set ourselves; a profile or config may never replace
# them (RFC 6749 §4.1.1, RFC 7636 §4.3): that would silently drop PKCE or the state binding.
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "code_challenge",
     "code_challenge_method"}
)

_PLATFORM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# A placeholder value: RFC 3986 unreserved characters only, so it can never smuggle a path
# separator, a query delimiter, a fragment or a percent-escape into the API path.
_VALUE = "[A-Za-z0-9._~-]+"
_METHOD = re.compile(r"^[A-Z]{1,16}$")
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class PlatformRequest:
    """One request to a platform's OAuth endpoints (token, revocation, discovery).

    `client_auth`: "profile" = the profile's token-endpoint method; "basic" / "none" force one.
    """

    method: str
    url: str
    data: Mapping[str, str] | None = None
    json: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    client_auth: Literal["profile", "basic", "none"] = "profile"


TokenResponseHook = Callable[[dict[str, Any], str], dict[str, Any]]
RevocationHook = Callable[["Platform", str, str], PlatformRequest]
DiscoveryHook = Callable[[Any, "Platform"], "str | None"]
#: (HTTP status, Content-Type, body bytes) of an API response → the status it stands for.
ApiStatusHook = Callable[[int, str, bytes], int]


def standard_api_status(status: int, content_type: str, body: bytes) -> int:
    """An RFC 9110 platform means what its status says."""
    return status


def standard_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """RFC 6749 §5.1/§5.2 responses need no translation."""
    return doc


def rfc7009_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """RFC 7009 §2.1: POST token + token_type_hint, authenticated like the token endpoint."""
    if platform.revocation_url is None:
        raise ValueError(f"platform {platform.name} has no revocation_url")
    data = {"token": token}
    if platform.profile.revocation_token_type_hint:
        data["token_type_hint"] = kind
    return PlatformRequest("POST", platform.revocation_url, data=data)


@dataclass(frozen=True)
class PlatformProfile:
    name: str
    #: RFC 6749 §2.3.1: how the token (and, by default, revocation) endpoint authenticates us.
    auth_method: ClientAuthMethod = "client_secret_basic"
    #: RFC 6749 §3.3 says space; several platforms use commas.
    scope_separator: str = " "
    #: The authorization parameter that carries the scopes (Slack: `user_scope` for user tokens).
    scope_param: str = "scope"
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: "form" (RFC 6749 §4.1.3) or "json" (Notion, Atlassian document JSON bodies).
    token_request_format: Literal["form", "json"] = "form"
    #: Headers on every token-endpoint request (e.g. GitHub needs Accept: application/json).
    token_request_headers: Mapping[str, str] = field(default_factory=dict)
    #: Some platforms want `scope` repeated on refresh (Microsoft identity platform).
    send_scope_on_refresh: bool = False
    #: Each refresh returns a new refresh token and invalidates the old one. What it changes:
    #: only `connections._refresh_with_retries` reads it, and there it forbids retrying a
    #: refresh whose outcome is unknown (a timeout after the request was sent: the old token
    #: may be spent, and a replay can make the platform revoke the whole grant), unless
    #: `refresh_reuse_grace` covers the retries. Persisting a returned refresh token before the
    #: new access token is used happens for every profile, flag or not.
    rotates_refresh_tokens: bool = False
    #: Seconds during which a just-rotated refresh token may still be redeemed (Atlassian's
    #: documented 10-minute leeway): a retry inside it is safe even with rotation. 0 = none.
    refresh_reuse_grace: int = 0
    #: A refresh token unused this long dies (Microsoft, Atlassian: 90 days); None = unknown or
    #: never. Documentation only so far: nothing refreshes idle grants before it yet.
    refresh_idle_lifetime: int | None = None
    #: RFC 7636 PKCE on the code flow. Off where the platform's PKCE mode is a one-way switch to
    #: a public client that rejects a confidential exchange carrying a verifier (Slack).
    pkce: bool = True
    #: With `pkce` on, redeem the code as a public client (client_id, no secret).
    pkce_public_client: bool = False
    #: Scopes without which the platform issues no refresh token; unless one of them is
    #: configured, the first is added to the requested scopes (and `platforms check` says so).
    refresh_scopes: tuple[str, ...] = ()
    #: On reconnect, revoke the tokens of the superseded grant (platforms that cap live grants
    #: per user and app silently revoke the oldest instead).
    revoke_superseded_grant: bool = False
    #: How to revoke one superseded token without touching the new grant; None = as on
    #: disconnect (`revocation_request`).
    superseded_revocation_request: RevocationHook | None = None
    #: Lifetime assumed when a token response has no `expires_in` (conservative); None = the
    #: platform's tokens do not expire, so only a 401 from the API triggers a refresh.
    default_expires_in: int | None = 3600
    #: Token-response member holding a per-grant API host (e.g. Salesforce `instance_url`).
    instance_url_field: str | None = None
    #: Path appended to the instance URL to form the API base (e.g. "/services/data/v62.0").
    instance_api_path: str = ""
    #: Hosts an instance URL may name (suffix match on a dot boundary); empty = any https host.
    instance_host_suffixes: tuple[str, ...] = ()
    #: For platforms that reveal the API base only after the grant (Atlassian): GET this URL
    #: with the new access token and pass the JSON to `api_base_from_discovery`.
    api_base_discovery_url: str | None = None
    api_base_from_discovery: DiscoveryHook | None = None
    #: Headers the gateway adds to every API call (e.g. Notion-Version).
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    supports_revocation: bool = True
    revocation_token_type_hint: bool = True
    #: Which of our tokens to revoke, in order of preference; the first success ends it.
    revocable_tokens: tuple[TokenKind, ...] = ("refresh_token", "access_token")
    revocation_request: RevocationHook = rfc7009_revocation
    #: Whether a 200/204 revocation answer (parsed body) really revoked (Slack: `ok`).
    revocation_succeeded: Callable[[dict[str, Any]], bool] = lambda _doc: True
    #: Normalises a parsed token response (success or error) to RFC 6749 §5.1/§5.2 members.
    token_response_quirks: TokenResponseHook = standard_token_response
    #: The HTTP status an API response stands for (Slack answers errors with 200 + ok=false):
    #: a 401 here makes the gateway refresh once, like a real 401.
    api_response_status: ApiStatusHook = standard_api_status
    #: Default endpoints, so a deployment need only configure its client credentials.
    authorize_url: str | None = None
    token_url: str | None = None
    revocation_url: str | None = None
    api_base_url: str | None = None


# --- hooks for the shipped profiles ------------------------------------------------------------


def _error_only(code: str) -> dict[str, Any]:
    return {"error": code}


#: Slack Web API error codes (https://docs.slack.dev/reference/methods/auth.revoke, method
#: pages' "Errors") that mean our token is dead or expired: treated as an HTTP 401.
_SLACK_AUTH_ERRORS = frozenset({"token_expired", "invalid_auth", "not_authed", "token_revoked",
                                "account_inactive"})
_SLACK_FORBIDDEN_ERRORS = frozenset({"missing_scope", "no_permission", "not_allowed_token_type",
                                     "ekm_access_denied", "access_denied"})


def slack_api_status(status: int, content_type: str, body: bytes) -> int:
    """Slack Web API methods answer HTTP 200 with `{"ok": false, "error": ...}` on failure
    (https://docs.slack.dev/apis/web-api/#responses): map that to the status it stands for, so
    `token_expired` triggers the gateway's refresh-on-401 and no error passes as a success."""
    if status != 200 or not content_type.split(";")[0].strip().lower().endswith("json"):
        return status
    try:
        doc = json.loads(body[:65536]) if body else None
    except ValueError:
        return status
    if not isinstance(doc, dict) or doc.get("ok") is not False:
        return status
    error = doc.get("error")
    if error in _SLACK_AUTH_ERRORS:
        return 401
    if error in _SLACK_FORBIDDEN_ERRORS:
        return 403
    if error == "ratelimited":
        return 429
    if error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
        return 503
    return 400


def slack_revocation_succeeded(doc: dict[str, Any]) -> bool:
    """`auth.revoke` answers HTTP 200 either way; only `ok: true` means revoked
    (https://docs.slack.dev/reference/methods/auth.revoke)."""
    return doc.get("ok") is True


def slack_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """Slack answers HTTP 200 with `ok: false, error: ...` and nests the user token.

    `oauth.v2.access` puts the *bot* token at the top level and the *user* token under
    `authed_user`; we act for the user, so a code exchange without a user token is refused
    rather than silently falling back to the bot. A rotated user token's refresh response is
    flat with `token_type: "user"`.
    """
    if doc.get("ok") is False:
        error = str(doc.get("error", ""))
        spent = {"invalid_code", "code_already_used", "invalid_refresh_token", "token_revoked",
                 "token_expired", "invalid_grant_type"}
        return _error_only("invalid_grant" if error in spent else error or "invalid_request")
    if grant_type == "authorization_code":
        user = doc.get("authed_user")
        if not isinstance(user, dict) or not user.get("access_token"):
            return _error_only("unsupported_token_type")
        return {k: user.get(k) for k in ("access_token", "refresh_token", "expires_in", "scope")
                if user.get(k) is not None} | {"token_type": "Bearer"}
    if doc.get("token_type") != "user":
        return _error_only("unsupported_token_type")
    return {**doc, "token_type": "Bearer"}


def github_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """GitHub reports token errors with HTTP 200 and an `error` member."""
    error = doc.get("error")
    if error in ("bad_verification_code", "bad_refresh_token", "unverified_user_email"):
        return _error_only("invalid_grant")
    if error == "incorrect_client_credentials":
        return _error_only("invalid_client")
    return doc


def hubspot_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """HubSpot errors carry the RFC 6749 `error` member and, for compatibility, the legacy
    `status` (https://developers.hubspot.com/changelog/new-oauth-v3-api-endpoints-and-
    standardized-error-responses): `error` wins; `status` alone is mapped."""
    if "access_token" not in doc and is_error_code(doc.get("error")):
        return _error_only(str(doc["error"]))
    status = doc.get("status")
    if "access_token" not in doc and isinstance(status, str):
        if status in ("BAD_REFRESH_TOKEN", "BAD_AUTH_CODE", "EXPIRED_AUTH_CODE"):
            return _error_only("invalid_grant")
        if status == "BAD_CLIENT_ID":
            return _error_only("invalid_client")
        return _error_only("invalid_request")
    return doc


def notion_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """Notion errors are `{"object": "error", "status", "code", "message"}` with no `error`
    member (https://developers.notion.com/reference/status-codes): `code` is the OAuth code
    (`invalid_grant` for a spent or revoked refresh token)."""
    if doc.get("object") == "error" and "error" not in doc:
        code = doc.get("code")
        return _error_only(str(code) if is_error_code(code) else "invalid_request")
    return doc


def microsoft_token_response(doc: dict[str, Any], grant_type: str) -> dict[str, Any]:
    """Microsoft uses `interaction_required` / `consent_required` / `login_required` when only
    the user can restore the grant (MFA, Conditional Access, consent): same as invalid_grant."""
    if doc.get("error") in ("interaction_required", "consent_required", "login_required"):
        return _error_only("invalid_grant")
    return doc


_CLOUD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
ATLASSIAN_API_GATEWAY = "https://api.atlassian.com/ex"


def atlassian_api_base(discovered: Any, platform: Platform) -> str | None:
    """`accessible-resources` lists every site the user authorised the app for, each with its
    cloud id (https://developer.atlassian.com/cloud/oauth/getting-started/making-calls-to-api/).

    The default API base is the gateway root https://api.atlassian.com/ex: the resource map
    names the product and the site, e.g. `"jira:{cloud_id}/issue/{key}" =
    "jira/{cloud_id}/rest/api/3/issue/{key}"` or `"confluence:{cloud_id}/page/{id}" =
    "confluence/{cloud_id}/wiki/api/v2/pages/{id}"`, so the intent chooses the site and
    Atlassian enforces that the grant covers it. Any number of sites connects. A configured
    base with a `{cloud_id}` placeholder (one site per platform) is filled only when the grant
    covers exactly one site: with several it is ambiguous and refused, never guessed.
    """
    if not isinstance(discovered, list) or not discovered:
        return None
    ids = [site.get("id") if isinstance(site, dict) else None for site in discovered]
    if not all(isinstance(i, str) and _CLOUD_ID.fullmatch(i) for i in ids):
        return None
    template = platform.api_base_url or ATLASSIAN_API_GATEWAY
    if "{cloud_id}" not in template:
        return template
    if len(set(ids)) != 1:
        return None
    return template.replace("{cloud_id}", str(ids[0]))


def google_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Google's endpoint takes only `token` (no client authentication); revoking the refresh
    token revokes the whole grant."""
    url = platform.revocation_url or "https://oauth2.googleapis.com/revoke"
    return PlatformRequest("POST", url, data={"token": token}, client_auth="none")


def notion_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Notion: POST /v1/oauth/revoke, Basic client auth, JSON `{"token": ...}`, with the
    Notion-Version header (https://developers.notion.com/reference/revoke-token)."""
    url = platform.revocation_url or "https://api.notion.com/v1/oauth/revoke"
    return PlatformRequest("POST", url, json={"token": token}, client_auth="basic",
                             headers=dict(platform.profile.extra_headers))


def linear_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Linear: POST /oauth/revoke. A refresh token goes in the `refresh_token` form field with
    our client credentials (access tokens live 24 h, so a bearer revoke of a day-old access
    token fails); an access token is sent as the bearer credential."""
    if platform.revocation_url is None:
        raise ValueError(f"platform {platform.name} has no revocation_url")
    if kind == "refresh_token":
        return PlatformRequest("POST", platform.revocation_url, data={"refresh_token": token})
    return bearer_revocation(platform, token, kind)


def github_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """GitHub: DELETE /applications/{client_id}/grant, Basic client auth, JSON body; deleting
    the grant revokes every token of the authorization."""
    base = platform.revocation_url or "https://api.github.com/applications"
    return PlatformRequest(
        "DELETE", f"{base.rstrip('/')}/{quote(platform.client_id, safe='')}/grant",
        json={"access_token": token}, client_auth="basic",
        headers={"Accept": "application/vnd.github+json"},
    )


def github_token_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """GitHub: DELETE /applications/{client_id}/token revokes one token and leaves the rest of
    the authorization (the new grant after a reconnect) alive (REST "Delete an app token",
    https://docs.github.com/en/rest/apps/oauth-applications; not in our stored copy)."""
    base = platform.revocation_url or "https://api.github.com/applications"
    return PlatformRequest(
        "DELETE", f"{base.rstrip('/')}/{quote(platform.client_id, safe='')}/token",
        json={"access_token": token}, client_auth="basic",
        headers={"Accept": "application/vnd.github+json"},
    )


def bearer_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Slack `auth.revoke` takes the token as a bearer credential."""
    if platform.revocation_url is None:
        raise ValueError(f"platform {platform.name} has no revocation_url")
    return PlatformRequest("POST", platform.revocation_url,
                             headers={"Authorization": f"Bearer {token}"}, client_auth="none")


# --- the shipped profiles ----------------------------------------------------------------------
#
# Every vendor value below carries the public page it comes from. Where a value is our choice
# (a conservative default), the comment says so. Re-check the pages when a platform changes.

_DAY = 86400

PROFILES: dict[str, PlatformProfile] = {
    # RFC 6749 + RFC 7009 as written: Basic client auth, space-separated scopes, expires_in
    # honoured (10 minutes assumed when absent: our choice), rotation tolerated either way.
    "generic": PlatformProfile(name="generic", default_expires_in=600),
    # Salesforce.
    "salesforce": PlatformProfile(
        name="salesforce",
        # Client credentials in the body: https://developer.salesforce.com/docs/atlas.en-us.
        # 216.0.api_rest.meta/api_rest/intro_understanding_refresh_token_oauth.htm
        auth_method="client_secret_post",
        # No expires_in (the session policy decides); 15 minutes, the shortest session
        # timeout, is our assumption.
        default_expires_in=900,
        # `instance_url` names the org's API host (same page); our API version choice.
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
    ),
    # HubSpot: the v1 OAuth endpoints are sunset on 2027-02-16; the date-versioned API is
    # https://developers.hubspot.com/changelog/v1-oauth-api-deprecation and
    # https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/
    # migration-guide (form-encoded bodies, client credentials in the body).
    "hubspot": PlatformProfile(
        name="hubspot", auth_method="client_secret_post",
        # Access tokens expire after 30 minutes: https://developers.hubspot.com/docs/
        # api-reference/latest/authentication/manage-oauth-tokens
        default_expires_in=1800,
        # Errors carry `error` (RFC 6749) and legacy `status`: https://developers.hubspot.com/
        # changelog/new-oauth-v3-api-endpoints-and-standardized-error-responses
        token_response_quirks=hubspot_token_response,
        # POST /oauth/2026-03/token/revoke replaces DELETE /oauth/v1/refresh-tokens/{token}
        # (changelog above): form `token` + client credentials, refresh tokens only.
        revocable_tokens=("refresh_token",),
        authorize_url="https://app.hubspot.com/oauth/authorize",
        token_url="https://api.hubapi.com/oauth/2026-03/token",
        revocation_url="https://api.hubapi.com/oauth/2026-03/token/revoke",
        api_base_url="https://api.hubapi.com",
    ),
    # Google (https://developers.google.com/identity/protocols/oauth2/web-server).
    "google": PlatformProfile(
        name="google", auth_method="client_secret_post",
        # A refresh token only with access_type=offline, again on re-consent only with
        # prompt=consent (#offline); refresh responses omit refresh_token (keep the old one).
        extra_authorize_params={"access_type": "offline", "prompt": "consent",
                                "include_granted_scopes": "true"},
        # Unused refresh tokens die after six months; past the per-client and per-user caps
        # the oldest stop working: https://developers.google.com/identity/protocols/oauth2
        refresh_idle_lifetime=183 * _DAY,
        # Revoke at oauth2.googleapis.com/revoke (#tokenrevoke). Revoking a token ends the
        # app's grant for the account, so a reconnect does NOT revoke the superseded token
        # (it would kill the new one); Google drops the oldest past its per-client cap instead.
        revocable_tokens=("refresh_token", "access_token"), revocation_request=google_revocation,
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        revocation_url="https://oauth2.googleapis.com/revoke",
        api_base_url="https://www.googleapis.com",
    ),
    # Microsoft identity platform. Replace "organizations" with the tenant id in the
    # configured URLs.
    "microsoft": PlatformProfile(
        name="microsoft", auth_method="client_secret_post",
        # `offline_access` is needed for a refresh token; `scope` is sent again on refresh:
        # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
        refresh_scopes=("offline_access",), send_scope_on_refresh=True,
        # "Refresh tokens replace themselves with a fresh token upon every use. The Microsoft
        # identity platform doesn't revoke old refresh tokens when used"; 90-day lifetime:
        # https://learn.microsoft.com/entra/identity-platform/refresh-tokens. Each refresh
        # returns a new token that we store; the old one is not invalidated, so a replayed
        # refresh is harmless: no rotation flag.
        refresh_idle_lifetime=90 * _DAY,
        # interaction_required / consent_required / login_required: only the user can fix it.
        token_response_quirks=microsoft_token_response,
        # No per-grant revocation endpoint (Graph revokeSignInSessions ends every session):
        # same page.
        supports_revocation=False,
        authorize_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
        token_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
        api_base_url="https://graph.microsoft.com/v1.0",
    ),
    # Slack (user tokens).
    "slack": PlatformProfile(
        name="slack",
        # User scopes go in `user_scope`, comma-separated; the user token is nested in
        # `authed_user`: https://docs.slack.dev/reference/methods/oauth.v2.access
        scope_separator=",", scope_param="user_scope",
        token_response_quirks=slack_token_response,
        # PKCE is a one-way switch that marks the app a public client
        # (https://docs.slack.dev/authentication/using-pkce, https://docs.slack.dev/changelog/
        # 2026/03/30/pkce). Off by default; an app marked PKCE/public sets profile_overrides
        # pkce = true, and then redeems its codes without the client secret.
        pkce=False, pkce_public_client=True,
        # Without rotation tokens never expire; with it they last 12 hours and every refresh
        # revokes the refresh token used: https://docs.slack.dev/authentication/
        # using-token-rotation (single-use refresh tokens).
        default_expires_in=None, rotates_refresh_tokens=True,
        # Errors are HTTP 200 with ok=false ("Callers should always check the value of the ok
        # params": https://api.slack.com/methods/oauth.v2.exchange), auth.revoke included
        # (https://docs.slack.dev/reference/methods/auth.revoke, the token as bearer).
        api_response_status=slack_api_status, revocation_succeeded=slack_revocation_succeeded,
        revocable_tokens=("access_token",), revocation_request=bearer_revocation,
        authorize_url="https://slack.com/oauth/v2/authorize",
        token_url="https://slack.com/api/oauth.v2.access",
        revocation_url="https://slack.com/api/auth.revoke",
        api_base_url="https://slack.com/api",
    ),
    # Atlassian Cloud 3LO: https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/
    "atlassian": PlatformProfile(
        name="atlassian", auth_method="client_secret_post", token_request_format="json",
        # audience=api.atlassian.com and prompt=consent on authorize (same page).
        extra_authorize_params={"audience": "api.atlassian.com", "prompt": "consent"},
        # `offline_access` for a refresh token (same page).
        refresh_scopes=("offline_access",),
        # Rotating refresh tokens: 90 days' inactivity expiry, 365 days absolute, and a reused
        # token is accepted within a 10-minute leeway: https://community.developer.atlassian.
        # com/t/updated-31-january-2022-action-required-deprecating-persistent-refresh-tokens/
        # 54172. The leeway makes retrying a refresh of unknown outcome safe.
        rotates_refresh_tokens=True, refresh_reuse_grace=600,
        refresh_idle_lifetime=90 * _DAY,
        # No documented revocation endpoint: users revoke in their Atlassian account settings.
        supports_revocation=False,
        # Every site the user authorised, with its cloud id:
        # https://developer.atlassian.com/cloud/oauth/getting-started/making-calls-to-api/
        api_base_discovery_url="https://api.atlassian.com/oauth/token/accessible-resources",
        api_base_from_discovery=atlassian_api_base,
        authorize_url="https://auth.atlassian.com/authorize",
        token_url="https://auth.atlassian.com/oauth/token",
        # Jira at /ex/jira/{cloud_id}, Confluence at /ex/confluence/{cloud_id}: the resource
        # map chooses (see atlassian_api_base).
        api_base_url=ATLASSIAN_API_GATEWAY,
    ),
    # GitHub OAuth apps.
    "github": PlatformProfile(
        name="github", auth_method="client_secret_post",
        # Form-encoded token response unless Accept: application/json; errors with HTTP 200:
        # https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
        token_request_headers={"Accept": "application/json"},
        token_response_quirks=github_token_response,
        # OAuth-app tokens never expire; GitHub-app user tokens last 8 h with rotating refresh
        # tokens: https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-
        # github-app/refreshing-user-access-tokens
        rotates_refresh_tokens=True, default_expires_in=None,
        # Disconnect deletes the whole authorization (DELETE /applications/{client_id}/grant):
        # https://docs.github.com/en/rest/apps/oauth-applications#delete-an-app-authorization
        revocable_tokens=("access_token",), revocation_request=github_revocation,
        # Ten tokens per user, app and scope; more revoke the oldest:
        # https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/
        # token-expiration-and-revocation. A reconnect revokes the superseded token only.
        revoke_superseded_grant=True, superseded_revocation_request=github_token_revocation,
        extra_headers={"Accept": "application/vnd.github+json",
                       "X-GitHub-Api-Version": "2022-11-28"},
        authorize_url="https://github.com/login/oauth/authorize",
        token_url="https://github.com/login/oauth/access_token",
        revocation_url="https://api.github.com/applications",
        api_base_url="https://api.github.com",
    ),
    # Linear: https://linear.app/developers/oauth-2-0-authentication
    "linear": PlatformProfile(
        name="linear", auth_method="client_secret_post", scope_separator=",",
        # Every app uses (rotating) refresh tokens since 2026-04-01 (same page).
        rotates_refresh_tokens=True,
        # Access tokens live 24 hours (issue 19; not on the stored page): revoke with the
        # refresh token in the `refresh_token` form field, the access token as a fallback.
        revocable_tokens=("refresh_token", "access_token"),
        revocation_request=linear_revocation,
        authorize_url="https://linear.app/oauth/authorize",
        token_url="https://api.linear.app/oauth/token",
        revocation_url="https://api.linear.app/oauth/revoke",
        api_base_url="https://api.linear.app",
    ),
    # Notion: https://developers.notion.com/docs/authorization
    "notion": PlatformProfile(
        name="notion",
        # JSON token requests with Basic client auth; no scopes (the user picks pages);
        # owner=user on authorize (same page).
        token_request_format="json", extra_authorize_params={"owner": "user"},
        # The token response carries a refresh token, and each refresh returns a new access
        # AND refresh token: https://developers.notion.com/reference/refresh-a-token. No
        # lifetime is documented, so only a 401 from the API triggers a refresh.
        rotates_refresh_tokens=True, default_expires_in=None,
        # Errors as {object: "error", status, code, message}:
        # https://developers.notion.com/reference/status-codes
        token_response_quirks=notion_token_response,
        # POST /v1/oauth/revoke, Basic auth, JSON {token}:
        # https://developers.notion.com/reference/revoke-token
        revocable_tokens=("access_token",), revocation_request=notion_revocation,
        # Every API call needs Notion-Version (required even on revoke-token, above); the
        # version we were written against.
        extra_headers={"Notion-Version": "2022-06-28"},
        authorize_url="https://api.notion.com/v1/oauth/authorize",
        token_url="https://api.notion.com/v1/oauth/token",
        revocation_url="https://api.notion.com/v1/oauth/revoke",
        api_base_url="https://api.notion.com/v1",
    ),
    # Asana (https://developers.asana.com/docs/oauth): credentials in the form body;
    # expires_in 3600; refresh responses carry no refresh_token (keep the old one); revoke with
    # POST /-/oauth_revoke (token + client credentials in the body) using the refresh token.
    "asana": PlatformProfile(
        name="asana", auth_method="client_secret_post", revocable_tokens=("refresh_token",),
        revocation_token_type_hint=False,
        authorize_url="https://app.asana.com/-/oauth_authorize",
        token_url="https://app.asana.com/-/oauth_token",
        revocation_url="https://app.asana.com/-/oauth_revoke",
        api_base_url="https://app.asana.com/api/1.0",
    ),
}

# Profile fields a deployment may override per platform (plain data only, never hooks).
_OVERRIDABLE: dict[str, type | tuple[type, ...]] = {
    "auth_method": str, "scope_separator": str, "scope_param": str,
    "token_request_format": str, "send_scope_on_refresh": bool, "rotates_refresh_tokens": bool,
    "default_expires_in": (int, type(None)), "instance_url_field": (str, type(None)),
    "instance_api_path": str, "instance_host_suffixes": (list, tuple),
    "supports_revocation": bool, "revocation_token_type_hint": bool,
    "revocable_tokens": (list, tuple), "extra_authorize_params": dict, "extra_headers": dict,
    "token_request_headers": dict, "pkce": bool, "refresh_reuse_grace": int,
    "refresh_idle_lifetime": (int, type(None)), "refresh_scopes": (list, tuple),
    "revoke_superseded_grant": bool, "api_base_discovery_url": (str, type(None)),
}


# --- configured platforms and the resource map -------------------------------------------------


@dataclass(frozen=True)
class ResourceRoute:
    """One entry of a platform's resource map: intent resource pattern → API path template."""

    pattern: str
    template: str
    regex: re.Pattern[str]
    #: None = no narrowing: each action's own methods (`intent.ACTION_METHODS`). Otherwise a
    #: subset of `intent.GATEWAY_METHODS` that narrows them (`allowed_methods`).
    methods: frozenset[str] | None = None


#: Seconds before expiry at which the broker refreshes a platform's access token by default
#: (`[platforms.<name>] refresh_margin`); a token is never stale before half its lifetime.
DEFAULT_REFRESH_MARGIN = 60
MAX_REFRESH_MARGIN = 3600


@dataclass(frozen=True)
class Platform:
    name: str
    display_name: str
    profile: PlatformProfile
    authorize_url: str
    token_url: str
    revocation_url: str | None
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    api_base_url: str | None = None
    resource_map: Mapping[str, ResourceRoute] = field(default_factory=dict)
    #: Per-deployment additions to the profile's authorization parameters.
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: Refresh an access token this many seconds before it expires, but never earlier than
    #: halfway through its own lifetime (`connections.refresh_margin`).
    refresh_margin: int = DEFAULT_REFRESH_MARGIN

    @classmethod
    def from_settings(cls, name: str, mapping: Mapping[str, Any]) -> Platform:
        """Build from one `[platforms.<name>]` table; raises ValueError on any misconfiguration.

        Keys: profile (default "generic"), display_name, authorize_url, token_url,
        revocation_url, client_id, client_secret, scopes (list), api_base_url, resources
        (table: pattern → template or {path, methods}), extra_authorize_params (table),
        profile_overrides (table of plain profile fields), refresh_margin (seconds, an
        integer 0..MAX_REFRESH_MARGIN; default DEFAULT_REFRESH_MARGIN).
        """
        if not _PLATFORM_NAME.match(name):
            raise ValueError(f"platform name {name!r} must match {_PLATFORM_NAME.pattern}")
        known = {"profile", "display_name", "authorize_url", "token_url", "revocation_url",
                 "client_id", "client_secret", "scopes", "api_base_url", "resources",
                 "extra_authorize_params", "profile_overrides", "refresh_margin"}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(f"platform {name}: unknown settings {sorted(unknown)}")
        profile_name = str(mapping.get("profile", "generic"))
        if profile_name not in PROFILES:
            raise ValueError(f"platform {name}: unknown profile {profile_name!r}")
        profile = _apply_overrides(PROFILES[profile_name], mapping.get("profile_overrides") or {},
                                   name)
        authorize_url = mapping.get("authorize_url") or profile.authorize_url
        token_url = mapping.get("token_url") or profile.token_url
        revocation_url = mapping.get("revocation_url") or profile.revocation_url
        api_base_url = mapping.get("api_base_url") or profile.api_base_url
        if not authorize_url or not token_url:
            raise ValueError(f"platform {name}: authorize_url and token_url are required")
        for url in (authorize_url, token_url, revocation_url, api_base_url,
                    profile.api_base_discovery_url):
            if url is not None:
                _check_endpoint_url(str(url), name)
        if profile.supports_revocation and not revocation_url and \
                profile.revocation_request is rfc7009_revocation:
            raise ValueError(f"platform {name}: revocation_url is required by its profile")
        client_id = mapping.get("client_id")
        client_secret = mapping.get("client_secret")
        if not isinstance(client_id, str) or not client_id or not isinstance(client_secret, str) \
                or not client_secret:
            raise ValueError(f"platform {name}: client_id and client_secret are required")
        scopes = mapping.get("scopes") or []
        if not isinstance(scopes, list | tuple) or not all(
            isinstance(s, str) and s and " " not in s and profile.scope_separator not in s
            for s in scopes
        ):
            raise ValueError(f"platform {name}: scopes must be a list of scope tokens")
        extra = dict(mapping.get("extra_authorize_params") or {})
        _check_authorize_params({**profile.extra_authorize_params, **extra}, name)
        resources = mapping.get("resources") or {}
        if not isinstance(resources, Mapping):
            raise ValueError(f"platform {name}: resources must be a table")
        routes = {pattern: compile_route(pattern, spec, name)
                  for pattern, spec in resources.items()}
        return cls(
            name=name,
            display_name=str(mapping.get("display_name") or name),
            profile=profile,
            authorize_url=str(authorize_url),
            token_url=str(token_url),
            revocation_url=None if revocation_url is None else str(revocation_url),
            client_id=client_id,
            client_secret=client_secret,
            scopes=with_refresh_scope(profile, tuple(scopes)),
            api_base_url=None if api_base_url is None else str(api_base_url),
            resource_map=routes,
            extra_authorize_params={str(k): str(v) for k, v in extra.items()},
            refresh_margin=_check_refresh_margin(
                mapping.get("refresh_margin", DEFAULT_REFRESH_MARGIN), name),
        )


def _check_refresh_margin(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_REFRESH_MARGIN:
        raise ValueError(f"platform {name}: refresh_margin must be a whole number of seconds "
                         f"from 0 to {MAX_REFRESH_MARGIN}")
    return value


def _apply_overrides(profile: PlatformProfile, overrides: Any, name: str) -> PlatformProfile:
    if not isinstance(overrides, Mapping):
        raise ValueError(f"platform {name}: profile_overrides must be a table")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        expected = _OVERRIDABLE.get(key)
        bool_for_number = isinstance(value, bool) and expected is not bool
        if expected is None or not isinstance(value, expected) or bool_for_number:
            raise ValueError(f"platform {name}: profile override {key!r} is not allowed")
        changes[key] = tuple(value) if isinstance(value, list) else value
    result = dataclasses.replace(profile, **changes)
    if result.auth_method not in ("client_secret_basic", "client_secret_post"):
        raise ValueError(f"platform {name}: auth_method must be client_secret_basic or _post")
    if result.token_request_format not in ("form", "json"):
        raise ValueError(f"platform {name}: token_request_format must be form or json")
    if not set(result.revocable_tokens) <= {"access_token", "refresh_token"}:
        raise ValueError(f"platform {name}: revocable_tokens takes access_token/refresh_token")
    if result.default_expires_in is not None and result.default_expires_in <= 0:
        raise ValueError(f"platform {name}: default_expires_in must be positive")
    if result.refresh_reuse_grace < 0 or (result.refresh_idle_lifetime is not None
                                          and result.refresh_idle_lifetime <= 0):
        raise ValueError(f"platform {name}: refresh lifetimes must be positive")
    if not all(isinstance(s, str) and s and " " not in s for s in result.refresh_scopes):
        raise ValueError(f"platform {name}: refresh_scopes must be scope tokens")
    return result


def with_refresh_scope(profile: PlatformProfile, scopes: tuple[str, ...]) -> tuple[str, ...]:
    """`scopes` plus the profile's refresh scope when none of its refresh scopes is there
    (without one, Microsoft, Atlassian and Salesforce issue no refresh token and the
    connection dies at the first expiry)."""
    if not profile.refresh_scopes or set(profile.refresh_scopes) & set(scopes):
        return scopes
    return (*scopes, profile.refresh_scopes[0])


def _check_authorize_params(params: Mapping[str, Any], name: str) -> None:
    clash = RESERVED_AUTHORIZE_PARAMS & set(params)
    if clash:
        raise ValueError(f"platform {name}: extra_authorize_params may not set {sorted(clash)}")


def _check_endpoint_url(url: str, name: str) -> None:
    # Tokens and client secrets travel to these URLs: https only (plain http on loopback only,
    # for development and tests).
    if not is_allowed_url(url.replace("{cloud_id}", "x")):
        raise ValueError(f"platform {name}: endpoint {url!r} must be https")


def is_allowed_url(url: str, host_suffixes: tuple[str, ...] = ()) -> bool:
    """True if `url` is an absolute https URL (or http on loopback) with no userinfo, query or
    fragment, whose host ends with one of `host_suffixes` on a dot boundary (when given)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None \
            or parts.query or parts.fragment:
        return False
    loopback = is_loopback_host(host)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return False
    if host_suffixes and not loopback:
        return any(host == s or host.endswith("." + s) for s in host_suffixes)
    return True


def compile_route(pattern: str, spec: Any, platform_name: str = "?") -> ResourceRoute:
    """Validate and compile one resource-map entry; raises ValueError when misconfigured."""
    if isinstance(spec, str):
        template, methods = spec, None
    elif isinstance(spec, Mapping) and isinstance(spec.get("path"), str):
        template = spec["path"]
        raw_methods = spec.get("methods")
        if not isinstance(raw_methods, list | tuple) or not raw_methods or not all(
            isinstance(m, str) and _METHOD.match(m) for m in raw_methods
        ) or len(set(raw_methods)) != len(raw_methods):
            raise ValueError(f"platform {platform_name}: {pattern!r} methods must be a list "
                             "of distinct upper-case HTTP methods")
        methods = frozenset(raw_methods)
        # A route may only narrow what the actions allow, never add a method none of them may
        # use (the gateway would refuse it anyway; refusing here says so at start-up).
        unusable = methods - GATEWAY_METHODS
        if unusable:
            per_action = "; ".join(f"{action}: {', '.join(sorted(allowed))}"
                                   for action, allowed in ACTION_METHODS.items())
            raise ValueError(f"platform {platform_name}: {pattern!r} methods {sorted(unusable)} "
                             f"are not allowed for any action ({per_action})")
    else:
        raise ValueError(f"platform {platform_name}: {pattern!r} needs a path template")
    names = _PLACEHOLDER.findall(pattern)
    if len(names) != len(set(names)):
        raise ValueError(f"platform {platform_name}: {pattern!r} repeats a placeholder")
    if not set(_PLACEHOLDER.findall(template)) <= set(names):
        raise ValueError(f"platform {platform_name}: {template!r} uses an unknown placeholder")
    literal = _PLACEHOLDER.sub("", pattern) + _PLACEHOLDER.sub("", template)
    if "{" in literal or "}" in literal:
        raise ValueError(f"platform {platform_name}: malformed placeholder in {pattern!r}")
    filled = _PLACEHOLDER.sub("x", template)
    if _split_target(filled) is None:
        raise ValueError(f"platform {platform_name}: {template!r} is not a normalised path")
    regex_parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        regex_parts.append(re.escape(pattern[position:match.start()]))
        regex_parts.append(f"(?P<{match.group(1)}>{_VALUE})")
        position = match.end()
    regex_parts.append(re.escape(pattern[position:]))
    return ResourceRoute(pattern, template, re.compile("".join(regex_parts)), methods)


def _match(platform: Platform, resource: str) -> tuple[ResourceRoute, str] | None:
    """The one route `resource` fits and the API path it maps to; None if none or ambiguous."""
    found: dict[str, ResourceRoute] = {}
    for route in platform.resource_map.values():
        m = route.regex.fullmatch(resource)
        if m is None:
            continue
        values = m.groupdict()
        if any(set(v) == {"."} for v in values.values()):
            continue  # "." and ".." are path navigation, never identifiers
        path = _fill(route.template, values)
        found[path] = route
    if len(found) != 1:
        return None
    path, route = next(iter(found.items()))
    return route, path


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda p: quote(values[p.group(1)], safe=""), template)


def resolve_path(platform: Platform, resource: str) -> str | None:
    """The API path (relative to the API base, may carry a query) an intent resource maps to,
    or None if it fits no route, or fits several that disagree."""
    matched = _match(platform, resource)
    return None if matched is None else matched[1]


def allowed_methods(platform: Platform, resource: str, action: str) -> frozenset[str]:
    """The methods an intent (`action` on `resource`) may use: the action's own methods
    (`intent.ACTION_METHODS`), narrowed by the route's `methods` when it lists some. Empty for
    an unknown action or a resource that fits no route (or several that disagree)."""
    matched = _match(platform, resource)
    own = ACTION_METHODS.get(action, frozenset())
    if matched is None:
        return frozenset()
    route = matched[0]
    return own if route.methods is None else own & route.methods


def path_matches_intent(platform: Platform, intent_resource: str, method: str, path: str) -> bool:
    """True only if `method path` is exactly the call the intent's resource maps to.

    `path` is the request target after /gateway/<platform>/ (a leading "/" is ignored). The
    segments are compared after percent-decoding; empty segments ("//"), "." / "..", encoded
    slashes or backslashes, fragments and malformed escapes never match. The query is compared
    as a multiset of decoded name=value pairs: nothing added, nothing missing.
    """
    matched = _match(platform, intent_resource)
    if matched is None or not _METHOD.match(method):
        return False
    route, expected = matched
    if route.methods is not None and method not in route.methods:
        return False
    want, got = _split_target(expected), _split_target(path)
    return want is not None and got is not None and want == got


def _split_target(target: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None:
    """Canonical (segments, sorted query pairs) of a relative request target, or None if it is
    not strictly normalised."""
    if "#" in target or "\\" in target or any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
        return None
    raw_path, _, raw_query = target.partition("?")
    if raw_path.startswith("/"):
        raw_path = raw_path[1:]
    segments: list[str] = []
    for raw in raw_path.split("/"):
        decoded = _strict_unquote(raw)
        if decoded is None or decoded in ("", ".", "..") or "/" in decoded or "\\" in decoded:
            return None
        segments.append(decoded)
    pairs: list[tuple[str, str]] = []
    if raw_query:
        try:
            raw_pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return None
        for key, value in raw_pairs:
            if "%" in key or "%" in value:
                return None  # double encoding
            pairs.append((key, value))
    elif "?" in target:
        return None  # a dangling "?" is not the same request as none
    return tuple(segments), tuple(sorted(pairs))


def _strict_unquote(segment: str) -> str | None:
    if re.search(r"%(?![0-9A-Fa-f]{2})", segment):
        return None
    decoded = unquote(segment, errors="strict") if "%" in segment else segment
    if "%" in decoded:
        return None  # double encoding (%252e → %2e) is a classic traversal bypass
    return decoded


def api_request_headers(platform: Platform, access_token: str) -> dict[str, str]:
    """Headers for an API call at the platform: the profile's header quirks plus the token."""
    return {**platform.profile.extra_headers, "Authorization": f"Bearer {access_token}"}


def is_error_code(value: object) -> bool:
    """True for a syntactically plausible OAuth error code (safe to log)."""
    return isinstance(value, str) and bool(_ERROR_CODE.match(value))
