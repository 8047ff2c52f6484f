"""Platform profiles and platform settings (pure); the resource map's routes and the gateway's
path matcher are tested in tests/test_gateway_routes.py."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from authserver.broker.oauth_client import build_authorize_url
from authserver.broker.profiles import (
    PROFILES,
    Platform,
    api_request_headers,
    atlassian_api_base,
    github_token_response,
    hubspot_token_response,
    microsoft_token_response,
    slack_token_response,
)

SHIPPED = ("generic", "salesforce", "hubspot", "google", "microsoft", "slack", "atlassian",
           "github", "linear", "notion", "asana")


def _settings(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "authorize_url": "https://crm.example/oauth/authorize",
        "token_url": "https://crm.example/oauth/token",
        "revocation_url": "https://crm.example/oauth/revoke",
        "client_id": "cid",
        "client_secret": "secret",
        "scopes": ["deals.read"],
        "api_base_url": "https://crm.example/api",
        "resources": {
            "deal:{id}": "deals/{id}",
            "deals?stage={stage}": "deals?stage={stage}",
            "board:{id}": "boards/{id}",
            "board:{id}/tasks": "boards/{id}/tasks",
            "note:{id}": {"path": "notes/{id}", "methods": ["GET"]},
        },
    }
    base.update(overrides)
    return base


@pytest.fixture
def crm() -> Platform:
    return Platform.from_settings("crm", _settings())


# --- profiles ----------------------------------------------------------------------------------


def test_every_documented_platform_has_a_profile():
    assert set(SHIPPED) <= set(PROFILES)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_configures_with_credentials_only(name):
    mapping: dict[str, object] = {"profile": name, "client_id": "cid", "client_secret": "s"}
    if name == "generic":
        mapping.update(authorize_url="https://p.example/a", token_url="https://p.example/t",
                       revocation_url="https://p.example/r")
    platform = Platform.from_settings(name if name != "generic" else "generic-one", mapping)
    assert platform.profile.name == name


def test_google_authorize_url_asks_for_offline_access_and_consent():
    google = Platform.from_settings("google", {"profile": "google", "client_id": "c",
                                               "client_secret": "s", "scopes": ["openid"]})
    query = parse_qs(urlsplit(build_authorize_url(
        google, redirect_uri="https://as.example/cb", state="st", code_challenge="cc")).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"] and query["state"] == ["st"]


def test_slack_user_scopes_are_comma_separated_in_user_scope():
    slack = Platform.from_settings("slack", {"profile": "slack", "client_id": "c",
                                             "client_secret": "s",
                                             "scopes": ["chat:write", "users:read"]})
    query = parse_qs(urlsplit(build_authorize_url(
        slack, redirect_uri="https://as.example/cb", state="st", code_challenge="cc")).query)
    assert query["user_scope"] == ["chat:write,users:read"] and "scope" not in query


def test_slack_code_exchange_uses_the_nested_user_token():
    doc = {"ok": True, "access_token": "xoxb-bot", "token_type": "bot",
           "authed_user": {"id": "U1", "access_token": "xoxp-user", "refresh_token": "xoxe-r",
                           "expires_in": 43200, "scope": "chat:write"}}
    out = slack_token_response(doc, "authorization_code")
    assert out["access_token"] == "xoxp-user" and out["refresh_token"] == "xoxe-r"


def test_slack_code_exchange_without_user_token_is_refused():
    doc = {"ok": True, "access_token": "xoxb-bot", "token_type": "bot", "authed_user": {"id": "U"}}
    assert slack_token_response(doc, "authorization_code") == {"error": "unsupported_token_type"}


def test_slack_ok_false_invalid_refresh_token_is_invalid_grant():
    doc = {"ok": False, "error": "invalid_refresh_token"}
    assert slack_token_response(doc, "refresh_token") == {"error": "invalid_grant"}


def test_github_http_200_error_is_invalid_grant():
    assert github_token_response({"error": "bad_refresh_token"}, "refresh_token") == {
        "error": "invalid_grant"}


def test_hubspot_bad_refresh_token_status_is_invalid_grant():
    doc = {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}
    assert hubspot_token_response(doc, "refresh_token") == {"error": "invalid_grant"}


def test_microsoft_interaction_required_is_invalid_grant():
    doc = {"error": "interaction_required", "error_description": "AADSTS50076: MFA"}
    assert microsoft_token_response(doc, "refresh_token") == {"error": "invalid_grant"}


def test_atlassian_api_base_from_the_single_accessible_site():
    # A {cloud_id} template (one site per platform) is filled from the single site; the
    # default base is the gateway root, the resource map naming the site (issue 19).
    atlassian = Platform.from_settings("atlassian", {
        "profile": "atlassian", "client_id": "c", "client_secret": "s",
        "api_base_url": "https://api.atlassian.com/ex/jira/{cloud_id}"})
    base = atlassian_api_base([{"id": "1324a887-45db", "url": "https://x.atlassian.net"}],
                              atlassian)
    assert base == "https://api.atlassian.com/ex/jira/1324a887-45db"


def test_atlassian_api_base_with_several_sites_keeps_the_placeholder():
    # Several sites: the gateway fills {cloud_id} per call from the intent, never a guess.
    atlassian = Platform.from_settings("atlassian", {
        "profile": "atlassian", "client_id": "c", "client_secret": "s",
        "api_base_url": "https://api.atlassian.com/ex/jira/{cloud_id}"})
    assert atlassian_api_base([{"id": "a"}, {"id": "b"}], atlassian) == \
        "https://api.atlassian.com/ex/jira/{cloud_id}"
    assert atlassian_api_base([{"id": "a"}, {"id": "../x"}], atlassian) is None


def test_notion_api_headers_carry_the_version():
    notion = Platform.from_settings("notion", {"profile": "notion", "client_id": "c",
                                               "client_secret": "s"})
    headers = api_request_headers(notion, "tok")
    assert headers["Notion-Version"] and headers["Authorization"] == "Bearer tok"


# --- settings validation -----------------------------------------------------------------------


def test_platform_repr_hides_the_client_secret(crm):
    assert "secret" not in repr(crm).replace("client_secret", "")


def test_settings_unknown_key_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(clientsecret="typo"))


def test_settings_unknown_profile_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(profile="myspace"))


def test_settings_plain_http_endpoint_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(token_url="http://crm.example/oauth/token"))


def test_settings_missing_client_secret_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(client_secret=""))


def test_settings_extra_authorize_params_cannot_replace_state():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(extra_authorize_params={"state": "fixed"}))


def test_settings_hook_override_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(profile_overrides={"token_response_quirks": 1}))


def test_settings_bad_platform_name_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("CRM|x", _settings())
