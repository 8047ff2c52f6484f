"""RFC 6749 §4.1 / §6 and RFC 7009 §2 client side: talking to downstream platforms.

Authorization URLs (with RFC 7636 S256 PKCE), code exchange, refresh and revocation, with each
platform's quirks applied through its profile. What a platform says in an error body is never
put in an exception's description; `debug` holds at most the HTTP status and a validated error
code. Token values are never logged.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import requests
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from authserver.broker.http_session import PLATFORM_HTTP
from authserver.broker.profiles import Platform, PlatformRequest, is_allowed_url, is_error_code
from authserver.broker.profiles.base import clean_label
from authserver.encoding import sha256_b64url
from authserver.errors import ServerError, TemporarilyUnavailableError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.05  # seconds to open a connection to a platform
READ_TIMEOUT = 10.0  # seconds to wait for a platform's answer
#: A token endpoint answer larger than this is not a token response.
MAX_RESPONSE_BYTES = 64 * 1024


class PlatformUnavailable(TemporarilyUnavailableError):
    """A transient failure: 5xx, 429, timeout or connection error.

    `request_sent` is False only when the platform certainly never saw the request (the
    connection was not established); with rotating refresh tokens only then is a retry safe.
    `status` is the HTTP status when there was one.
    """

    def __init__(self, *, debug: str, request_sent: bool, status: int | None = None) -> None:
        super().__init__("The platform is temporarily unavailable", debug=debug)
        self.request_sent = request_sent
        self.status = status


class PlatformRejected(ServerError):
    """The platform refused the request for a reason that retrying will not fix."""

    def __init__(self, *, debug: str, error_code: str | None = None) -> None:
        super().__init__("The platform rejected the request", debug=debug)
        self.error_code = error_code


class PlatformInvalidGrant(PlatformRejected):
    """RFC 6749 §5.2 `invalid_grant`: the code or refresh token is spent, expired or revoked."""


@dataclass(frozen=True)
class TokenSet:
    """A normalised token response. Token values are excluded from repr."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False, default=None)
    #: Seconds; the profile default when the platform sent none; None = does not expire.
    expires_in: int | None = None
    scope: str | None = None
    #: The API base for this grant when the response (instance_url) or discovery names one.
    api_base_url: str | None = None
    #: Who the user is at the platform (code exchange only; `account_label_from`).
    account_label: str | None = None
    #: The sites the grant covers, when the profile discovers them (`sites_from_discovery`).
    sites: tuple[Mapping[str, str], ...] | None = None


def s256(code_verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return sha256_b64url(code_verifier.encode("ascii"))


def build_authorize_url(platform: Platform, *, redirect_uri: str, state: str,
                        code_challenge: str) -> str:
    """RFC 6749 §4.1.1 + RFC 7636 §4.3 authorization request URL."""
    profile = platform.profile
    params: dict[str, str] = {
        **profile.extra_authorize_params,
        **platform.extra_authorize_params,
        "response_type": "code",
        "client_id": platform.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    if profile.pkce:
        params.update(code_challenge=code_challenge, code_challenge_method="S256")
    if platform.scopes:
        params[profile.scope_param] = profile.scope_separator.join(platform.scopes)
    separator = "&" if "?" in platform.authorize_url else "?"
    return platform.authorize_url + separator + urlencode(params, quote_via=quote)


def exchange_code(platform: Platform, code: str, code_verifier: str,
                  redirect_uri: str) -> TokenSet:
    """RFC 6749 §4.1.3: redeem an authorization code (with the PKCE verifier, when the profile
    uses PKCE; as a public client when its PKCE mode is one).

    Raises PlatformRejected when a profile with `refresh_scopes` got no refresh token: the
    connection would die at the first expiry, so it is refused now.
    """
    profile = platform.profile
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    auth = "profile"
    if profile.pkce:
        data["code_verifier"] = code_verifier
        if profile.pkce_public_client:
            data["client_id"] = platform.client_id
            auth = "none"
    if profile.send_scope_on_refresh and platform.scopes:
        data["scope"] = profile.scope_separator.join(platform.scopes)
    tokens = _token_request(platform, data, "authorization_code", auth=auth)
    if profile.refresh_scopes and tokens.refresh_token is None:
        raise PlatformRejected(debug=f"platform {platform.name}: no refresh token issued (is "
                               f"{profile.refresh_scopes[0]} allowed for the app?)")
    if tokens.api_base_url is None and profile.api_base_discovery_url:
        tokens = _with_discovered_api_base(platform, tokens)
    return tokens


def refresh(platform: Platform, refresh_token: str) -> TokenSet:
    """RFC 6749 §6: a new access token (and maybe a new refresh token) for a refresh token."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if platform.profile.send_scope_on_refresh and platform.scopes:
        data["scope"] = platform.profile.scope_separator.join(platform.scopes)
    return _token_request(platform, data, "refresh_token")


def revoke(platform: Platform, token: str, hint: str) -> None:
    """Revoke `token` (an `access_token` or `refresh_token`, per `hint`) at the platform.

    RFC 7009 §2.2: 200 means revoked (or already invalid). Raises PlatformUnavailable or
    PlatformRejected otherwise; callers decide whether that is fatal.
    """
    if not platform.profile.supports_revocation:
        raise PlatformRejected(debug=f"platform {platform.name}: no revocation support")
    send_revocation(platform, platform.profile.revocation_request(platform, token, hint))


def send_revocation(platform: Platform, req: PlatformRequest) -> None:
    """Send one revocation request; returns only if the platform says it revoked."""
    response = _send(platform, req)
    # RFC 7009 §2.2 says 200; REST-style platforms (HubSpot, GitHub) answer 204. Slack answers
    # 200 whatever happened: the profile judges the body.
    doc = _parse_body(response)
    if response.status_code in (200, 204):
        if platform.profile.revocation_succeeded(doc):
            return
        raise PlatformRejected(debug=f"platform {platform.name}: revocation refused "
                               f"(status {response.status_code})")
    _raise_for_error(platform, response, doc)


# --- internals ---------------------------------------------------------------------------------


def _client_auth(platform: Platform, mode: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, body fields) that authenticate us, per RFC 6749 §2.3.1."""
    method = platform.profile.auth_method if mode == "profile" else mode
    if method == "none":
        return {}, {}
    if method in ("basic", "client_secret_basic"):
        # RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
        raw = f"{quote(platform.client_id, safe='')}:{quote(platform.client_secret, safe='')}"
        return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}, {}
    return {}, {"client_id": platform.client_id, "client_secret": platform.client_secret}


def _token_request(platform: Platform, data: dict[str, str], grant_type: str, *,
                   auth: str = "profile") -> TokenSet:
    headers, auth_fields = _client_auth(platform, auth)
    body = {**data, **auth_fields}
    fmt = platform.profile.token_request_format
    req = PlatformRequest(
        "POST", platform.token_url,
        data=body if fmt == "form" else None, json=body if fmt == "json" else None,
        headers={"Accept": "application/json", **platform.profile.token_request_headers,
                 **headers},
        client_auth="none",
    )
    response = _send(platform, req)
    raw = _parse_body(response)
    doc = platform.profile.token_response_quirks(raw, grant_type)
    if response.status_code != 200 or "error" in doc:
        _raise_for_error(platform, response, doc)
    tokens = _token_set(platform, doc)
    if grant_type == "authorization_code":
        tokens = dataclasses.replace(tokens, account_label=_account_label(platform, raw))
    return tokens


def _account_label(platform: Platform, raw: dict[str, Any]) -> str | None:
    """Who the user is at the platform, from the raw response; a label is never worth
    failing a connect for (a hook that trips over an odd response gives none)."""
    try:
        return clean_label(platform.profile.account_label_from(raw))
    except (AttributeError, KeyError, TypeError, ValueError):
        log.info("platform %s: no usable account label in the token response", platform.name)
        return None


def _send(platform: Platform, req: PlatformRequest) -> requests.Response:
    headers, auth_fields = _client_auth(platform, req.client_auth)
    data = None if req.data is None else {**req.data, **auth_fields}
    json_body = None if req.json is None else {**req.json, **auth_fields}
    if data is None and json_body is None and auth_fields:
        data = auth_fields
    try:
        return PLATFORM_HTTP.request(
            req.method, req.url, data=data, json=json_body, headers={**req.headers, **headers},
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            # A redirect would replay client credentials and tokens to another URL.
            allow_redirects=False,
        )
    except requests.RequestException as e:
        sent = not _never_sent(e)
        raise PlatformUnavailable(
            debug=f"platform {platform.name}: {type(e).__name__}", request_sent=sent
        ) from e


def _never_sent(error: requests.RequestException) -> bool:
    """True if the connection was never established (so the platform saw nothing)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        return isinstance(reason, NewConnectionError | NameResolutionError | ConnectTimeoutError)
    return False


def _parse_body(response: requests.Response) -> dict[str, Any]:
    """The response as a dict (JSON, or form-encoded like GitHub's default); {} if neither."""
    content = response.content[:MAX_RESPONSE_BYTES + 1]
    if not content or len(content) > MAX_RESPONSE_BYTES:
        return {}
    ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    try:
        if ctype == "application/x-www-form-urlencoded":
            return dict(parse_qsl(content.decode("utf-8"), keep_blank_values=True))
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {"_list": doc}


def _raise_for_error(platform: Platform, response: requests.Response,
                     doc: dict[str, Any]) -> None:
    status = response.status_code
    code = doc.get("error")
    safe_code = code if is_error_code(code) else None
    debug = f"platform {platform.name}: status {status}" + (
        f" error={safe_code}" if safe_code else "")
    if status >= 500 or status == 429:
        raise PlatformUnavailable(debug=debug, request_sent=True, status=status)
    if safe_code == "invalid_grant":
        raise PlatformInvalidGrant(debug=debug, error_code=safe_code)
    if safe_code == "temporarily_unavailable":
        raise PlatformUnavailable(debug=debug, request_sent=True, status=status)
    raise PlatformRejected(debug=debug, error_code=safe_code)


def _token_set(platform: Platform, doc: dict[str, Any]) -> TokenSet:
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise PlatformRejected(debug=f"platform {platform.name}: token response lacks a token")
    refresh_token = doc.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        refresh_token = None
    expires_in = _expires_in(doc.get("expires_in"), platform.profile.default_expires_in)
    scope = doc.get("scope")
    if isinstance(scope, list):
        scope = " ".join(str(s) for s in scope)
    api_base = None
    field_name = platform.profile.instance_url_field
    if field_name and doc.get(field_name) is not None:
        api_base = _instance_api_base(platform, doc.get(field_name))
    return TokenSet(access_token, refresh_token, expires_in,
                    scope if isinstance(scope, str) else None, api_base)


def _expires_in(value: Any, default: int | None) -> int | None:
    # Some platforms send a numeric string; anything unparseable falls back to the default.
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return max(0, int(value))
    return default


def _instance_api_base(platform: Platform, value: Any) -> str:
    """The API base from an instance URL, which must be a plain https URL on an allowed host:
    the user's access token will be sent there."""
    url = value.rstrip("/") if isinstance(value, str) else ""
    if not url or not is_allowed_url(url, platform.profile.instance_host_suffixes):
        raise PlatformRejected(debug=f"platform {platform.name}: unacceptable instance URL")
    return url + platform.profile.instance_api_path


def _with_discovered_api_base(platform: Platform, tokens: TokenSet) -> TokenSet:
    profile = platform.profile
    assert profile.api_base_discovery_url is not None and profile.api_base_from_discovery
    req = PlatformRequest(
        "GET", profile.api_base_discovery_url, client_auth="none",
        headers={"Accept": "application/json", "Authorization": f"Bearer {tokens.access_token}"},
    )
    response = _send(platform, req)
    doc = _parse_body(response)
    if response.status_code != 200:
        _raise_for_error(platform, response, doc)
    discovered = doc.get("_list", doc)
    base = profile.api_base_from_discovery(discovered, platform)
    # A `{cloud_id}` left in the base is filled per call from the intent (atlassian_api_base).
    if base is None or not is_allowed_url(base.replace("{cloud_id}", "x")):
        raise PlatformRejected(debug=f"platform {platform.name}: API base not discoverable")
    sites = None
    if profile.sites_from_discovery is not None:
        found = profile.sites_from_discovery(discovered)
        if found is None:
            raise PlatformRejected(debug=f"platform {platform.name}: sites not discoverable")
        sites = tuple(found)
    return dataclasses.replace(tokens, api_base_url=base, sites=sites)
