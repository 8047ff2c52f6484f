"""Platform profiles, platform settings and the intent-resource → API-path mapping (pure)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from authserver.broker.oauth_client import build_authorize_url
from authserver.broker.profiles import (
    PROFILES,
    Platform,
    allowed_methods,
    api_request_headers,
    atlassian_api_base,
    github_token_response,
    hubspot_token_response,
    microsoft_token_response,
    path_matches_intent,
    resolve_path,
    slack_token_response,
)
from authserver.intent import ACTION_METHODS, DESTRUCTIVE
from authserver.testing.settings import crm_platform, projects_platform

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


def test_atlassian_api_base_ambiguous_sites_refused():
    atlassian = Platform.from_settings("atlassian", {
        "profile": "atlassian", "client_id": "c", "client_secret": "s",
        "api_base_url": "https://api.atlassian.com/ex/jira/{cloud_id}"})
    assert atlassian_api_base([{"id": "a"}, {"id": "b"}], atlassian) is None


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


def test_settings_template_with_unknown_placeholder_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(resources={"deal:{id}": "deals/{other}"}))


def test_settings_template_with_dot_segment_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(resources={"deal:{id}": "deals/../{id}"}))


def test_settings_repeated_placeholder_rejected():
    with pytest.raises(ValueError):
        Platform.from_settings("crm", _settings(resources={"{id}:{id}": "deals/{id}"}))


# --- resolve_path ------------------------------------------------------------------------------


def test_resolve_record(crm):
    assert resolve_path(crm, "deal:acme-123") == "deals/acme-123"


def test_resolve_query(crm):
    assert resolve_path(crm, "deals?stage=stale") == "deals?stage=stale"


def test_resolve_nested(crm):
    assert resolve_path(crm, "board:42/tasks") == "boards/42/tasks"


def test_resolve_unmapped_resource_is_none(crm):
    assert resolve_path(crm, "invoice:1") is None


@pytest.mark.parametrize("resource", ["deal:..", "deal:.", "deal:a/b", "deal:a%2Fb", "deal:",
                                      "deal:a?b=c", "deal:a#b", "deal:a b", "board:42/../43"])
def test_resolve_value_that_could_navigate_is_none(crm, resource):
    assert resolve_path(crm, resource) is None


# --- path_matches_intent -----------------------------------------------------------------------


def test_match_exact_path(crm):
    assert path_matches_intent(crm, "deal:acme-123", "GET", "deals/acme-123")


def test_match_leading_slash_ignored(crm):
    assert path_matches_intent(crm, "deal:acme-123", "GET", "/deals/acme-123")


def test_match_query_in_any_order(crm):
    platform = Platform.from_settings("crm", _settings(
        resources={"deals?stage={s}&owner={o}": "deals?stage={s}&owner={o}"}))
    assert path_matches_intent(platform, "deals?stage=stale&owner=me", "GET",
                               "deals?owner=me&stage=stale")


def test_mismatch_other_record(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/globex-7")


def test_mismatch_prefix_of_mapped_path(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/acme-123/notes")


def test_mismatch_parent_of_mapped_path(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals")


def test_mismatch_dot_dot_segment(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/x/../acme-123")


def test_mismatch_encoded_dot_dot(crm):
    assert not path_matches_intent(crm, "board:42/tasks", "GET", "boards/42/%2e%2e/tasks")


def test_mismatch_encoded_slash(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals%2Facme-123")


def test_mismatch_double_encoding(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/acme%252d123")


def test_mismatch_empty_segment(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals//acme-123")


def test_mismatch_trailing_slash(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/acme-123/")


def test_mismatch_backslash(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals\\acme-123")


def test_mismatch_extra_query_parameter(crm):
    assert not path_matches_intent(crm, "deals?stage=stale", "GET", "deals?stage=stale&all=1")


def test_mismatch_repeated_query_parameter(crm):
    assert not path_matches_intent(crm, "deals?stage=stale", "GET",
                                   "deals?stage=stale&stage=won")


def test_mismatch_missing_query(crm):
    assert not path_matches_intent(crm, "deals?stage=stale", "GET", "deals")


def test_mismatch_query_on_record_path(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/acme-123?expand=all")


def test_mismatch_fragment(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "GET", "deals/acme-123#x")


def test_mismatch_method_not_allowed_by_route(crm):
    assert not path_matches_intent(crm, "note:n1", "DELETE", "notes/n1")


def test_match_method_allowed_by_route(crm):
    assert path_matches_intent(crm, "note:n1", "GET", "notes/n1")


def test_mismatch_lowercase_method(crm):
    assert not path_matches_intent(crm, "deal:acme-123", "get", "deals/acme-123")


def test_mismatch_unmapped_intent(crm):
    assert not path_matches_intent(crm, "invoice:1", "GET", "invoices/1")


def test_mismatch_ambiguous_routes():
    platform = Platform.from_settings("crm", _settings(
        resources={"deal:{id}": "deals/{id}", "deal:{key}": "legacy/{key}"}))
    assert resolve_path(platform, "deal:1") is None
    assert not path_matches_intent(platform, "deal:1", "GET", "deals/1")


# --- methods: each action its own, a route may only narrow (issue 20, finding 1) --------------


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT", "PROPFIND"])
def test_settings_route_method_no_action_may_use_is_refused(method):
    with pytest.raises(ValueError) as excinfo:
        Platform.from_settings("crm", _settings(resources={
            "deal:{id}": {"path": "deals/{id}", "methods": ["GET", method]}}))
    message = str(excinfo.value)
    assert message.startswith("platform crm: ")
    assert "'deal:{id}'" in message and method in message


def test_settings_route_with_duplicate_methods_is_refused():
    with pytest.raises(ValueError) as excinfo:
        Platform.from_settings("crm", _settings(resources={
            "deal:{id}": {"path": "deals/{id}", "methods": ["GET", "GET"]}}))
    assert str(excinfo.value).startswith("platform crm: 'deal:{id}' methods")


@pytest.mark.parametrize(("action", "methods"), [
    ("read", {"GET", "HEAD"}), ("create", {"POST"}), ("update", {"PATCH", "PUT"}),
    ("delete", {"DELETE"}), ("bulk_update", {"PATCH", "PUT"}), ("bulk_delete", {"DELETE"}),
])
def test_route_without_methods_allows_each_actions_own_methods(crm, action, methods):
    assert allowed_methods(crm, "deal:acme-123", action) == methods


def test_route_methods_narrow_each_actions_methods():
    platform = Platform.from_settings("crm", _settings(resources={
        "deal:{id}": {"path": "deals/{id}", "methods": ["GET", "PATCH", "DELETE"]}}))
    assert allowed_methods(platform, "deal:acme-123", "read") == {"GET"}
    assert allowed_methods(platform, "deal:acme-123", "update") == {"PATCH"}
    assert allowed_methods(platform, "deal:acme-123", "delete") == {"DELETE"}
    assert allowed_methods(platform, "deal:acme-123", "create") == set()


def test_allowed_methods_for_unmapped_resource_or_unknown_action_is_empty(crm):
    assert allowed_methods(crm, "invoice:1", "read") == set()
    assert allowed_methods(crm, "deal:acme-123", "admin") == set()


def test_only_destructive_actions_may_send_delete():
    for action, methods in ACTION_METHODS.items():
        assert ("DELETE" in methods) == (action in DESTRUCTIVE), action
    assert not ACTION_METHODS["read"] & {"POST", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize("settings", [
    crm_platform("http://127.0.0.1:1", "s"),
    projects_platform("http://127.0.0.1:1", "s", revocation=True),
], ids=["crm", "projects"])
def test_shipped_test_platforms_declare_methods_on_every_route(settings):
    platform = Platform.from_settings("p", settings)
    assert platform.resource_map
    assert all(route.methods is not None for route in platform.resource_map.values())


def test_shipped_crm_mapping_never_deletes_a_collection():
    platform = Platform.from_settings("crm", crm_platform("http://127.0.0.1:1", "s"))
    assert allowed_methods(platform, "deals", "bulk_delete") == set()
    assert allowed_methods(platform, "deal:acme-123", "update") == {"PATCH"}
