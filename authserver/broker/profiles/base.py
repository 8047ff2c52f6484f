"""What a platform profile is: `PlatformProfile`, the request a hook builds, and the standard
(RFC 6749 / RFC 7009) behaviour every shipped profile starts from (docs/standards.md A1).

A `PlatformProfile` is the data (plus a few small hooks) that says how one provider deviates
from, or chooses within, RFC 6749: client authentication, scope syntax, extra authorization
parameters, refresh-token rotation, a missing `expires_in`, instance-scoped API URLs, header
quirks and revocation. Each shipped profile is a module of this package (`generic`,
`salesforce`, ...) that cites the public documentation its quirks come from; re-check them
there when a platform changes behaviour. A `Platform` (`platform.py`) is one configured
instance of a profile.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from authserver.broker.profiles.platform import Platform

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]
TokenKind = Literal["access_token", "refresh_token"]

# Authorization request parameters we set ourselves; a profile or config may never replace
# them (RFC 6749 §4.1.1, RFC 7636 §4.3): that would silently drop PKCE or the state binding.
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "code_challenge",
     "code_challenge_method"}
)

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
#: The raw token response of a code exchange → who the user is at the platform (a label).
AccountLabelHook = Callable[[dict[str, Any]], "str | None"]
#: The discovery document → the sites the grant covers ({"id", "name", "url"} each), or None.
SitesHook = Callable[[Any], "list[dict[str, str]] | None"]

#: The longest account label or site name we keep (they are shown, never trusted).
MAX_LABEL_CHARS = 200


def clean_label(value: object) -> str | None:
    """A platform-reported name made safe to store and show: a non-empty string without
    control or format characters, at most MAX_LABEL_CHARS; None otherwise."""
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if unicodedata.category(c)[0] != "C").strip()
    return text[:MAX_LABEL_CHARS] or None


def id_token_claims(doc: dict[str, Any]) -> dict[str, Any]:
    """The payload of the token response's `id_token`, unverified: used only for a display
    label (it came straight from the token endpoint over TLS, OIDC Core §3.1.3.7), never to
    authenticate anyone. {} when absent or malformed."""
    from authserver.encoding import b64url_decode

    token = doc.get("id_token")
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
        return {}
    try:
        claims = json.loads(b64url_decode(token.split(".")[1]))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def oidc_account_label(doc: dict[str, Any]) -> str | None:
    """OpenID Connect platforms (Google, Microsoft, Salesforce with `openid`): the id_token's
    `email`, else `preferred_username` (OIDC Core §5.1)."""
    claims = id_token_claims(doc)
    return clean_label(claims.get("email")) or clean_label(claims.get("preferred_username"))


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
    #: never. The connections page marks a connection "expires soon" before it, and
    #: `authserver connections keepalive` refreshes idle connections in time.
    refresh_idle_lifetime: int | None = None
    #: A refresh token dies this long after the grant, used or not (Atlassian: 365 days);
    #: counted from the connect. None = unknown or never. The page marks "expires soon".
    refresh_absolute_lifetime: int | None = None
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
    #: Who the user is at the platform, from the raw code-exchange response (before
    #: `token_response_quirks`); stored for the connections page. None = not reported.
    account_label_from: AccountLabelHook = oidc_account_label
    #: The sites a grant covers, from the `api_base_discovery_url` document (Atlassian): stored
    #: on the connection; the gateway then refuses an intent whose `{cloud_id}` is not one.
    sites_from_discovery: SitesHook | None = None
    #: Default endpoints, so a deployment need only configure its client credentials.
    authorize_url: str | None = None
    token_url: str | None = None
    revocation_url: str | None = None
    api_base_url: str | None = None


#: One day in seconds (refresh-token lifetimes in the vendor profiles).
DAY = 86400


def error_only(code: str) -> dict[str, Any]:
    """A token response reduced to its RFC 6749 §5.2 `error` member."""
    return {"error": code}


def bearer_revocation(platform: Platform, token: str, kind: str) -> PlatformRequest:
    """Slack `auth.revoke` takes the token as a bearer credential."""
    if platform.revocation_url is None:
        raise ValueError(f"platform {platform.name} has no revocation_url")
    return PlatformRequest("POST", platform.revocation_url,
                             headers={"Authorization": f"Bearer {token}"}, client_auth="none")


def is_error_code(value: object) -> bool:
    """True for a syntactically plausible OAuth error code (safe to log)."""
    return isinstance(value, str) and bool(_ERROR_CODE.match(value))
