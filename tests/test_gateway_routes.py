"""The gateway's routes (authserver/gateway_routes.py): resource-map compilation, the intent
resource → API path mapping, each action's methods, and the strict anti-traversal match of a
request target against the intent's path (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from authserver.broker.profiles import Platform
from authserver.gateway_routes import (
    _split_target,
    allowed_methods,
    compile_route,
    path_matches_intent,
    resolve_path,
)
from authserver.intent import ACTION_METHODS, DESTRUCTIVE
from authserver.testing.settings import crm_platform, projects_platform

CRM_RESOURCES: dict[str, Any] = {
    "deal:{id}": "deals/{id}",
    "deals?stage={stage}": "deals?stage={stage}",
    "board:{id}": "boards/{id}",
    "board:{id}/tasks": "boards/{id}/tasks",
    "note:{id}": {"path": "notes/{id}", "methods": ["GET"]},
}


def _platform(resources: dict[str, Any]) -> Platform:
    """A platform named crm whose resource map is `resources`."""
    return Platform.from_settings("crm", {
        "authorize_url": "https://crm.example/oauth/authorize",
        "token_url": "https://crm.example/oauth/token",
        "revocation_url": "https://crm.example/oauth/revoke",
        "client_id": "cid", "client_secret": "secret",
        "api_base_url": "https://crm.example/api", "resources": resources,
    })


@pytest.fixture
def crm() -> Platform:
    return _platform(CRM_RESOURCES)


# --- compiling the resource map ----------------------------------------------------------------


def test_compile_route_without_a_platform():
    route = compile_route("deal:{id}", {"path": "deals/{id}", "methods": ["GET", "PATCH"]})
    assert route.regex.fullmatch("deal:acme-123") and not route.regex.fullmatch("deal:a/b")
    assert route.template == "deals/{id}" and route.methods == {"GET", "PATCH"}
    with pytest.raises(ValueError, match=r"^platform \?: 'deal:\{id\}' needs a path template"):
        compile_route("deal:{id}", {"methods": ["GET"]})


def test_split_target_is_the_canonical_segments_and_sorted_query():
    assert _split_target("/a/b%2Dc?y=2&x=1") == (("a", "b-c"), (("x", "1"), ("y", "2")))
    assert _split_target("a/b?") is None and _split_target("a/%2e%2e") is None


def test_settings_template_with_unknown_placeholder_rejected():
    with pytest.raises(ValueError):
        _platform({"deal:{id}": "deals/{other}"})


def test_settings_template_with_dot_segment_rejected():
    with pytest.raises(ValueError):
        _platform({"deal:{id}": "deals/../{id}"})


def test_settings_repeated_placeholder_rejected():
    with pytest.raises(ValueError):
        _platform({"{id}:{id}": "deals/{id}"})


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
    platform = _platform({"deals?stage={s}&owner={o}": "deals?stage={s}&owner={o}"})
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
    platform = _platform({"deal:{id}": "deals/{id}", "deal:{key}": "legacy/{key}"})
    assert resolve_path(platform, "deal:1") is None
    assert not path_matches_intent(platform, "deal:1", "GET", "deals/1")


# --- methods: each action its own, a route may only narrow (issue 20, finding 1) --------------


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT", "PROPFIND"])
def test_settings_route_method_no_action_may_use_is_refused(method):
    with pytest.raises(ValueError) as excinfo:
        _platform({"deal:{id}": {"path": "deals/{id}", "methods": ["GET", method]}})
    message = str(excinfo.value)
    assert message.startswith("platform crm: ")
    assert "'deal:{id}'" in message and method in message


def test_settings_route_with_duplicate_methods_is_refused():
    with pytest.raises(ValueError) as excinfo:
        _platform({"deal:{id}": {"path": "deals/{id}", "methods": ["GET", "GET"]}})
    assert str(excinfo.value).startswith("platform crm: 'deal:{id}' methods")


@pytest.mark.parametrize(("action", "methods"), [
    ("read", {"GET", "HEAD"}), ("create", {"POST"}), ("update", {"PATCH", "PUT"}),
    ("delete", {"DELETE"}), ("bulk_update", {"PATCH", "PUT"}), ("bulk_delete", {"DELETE"}),
])
def test_route_without_methods_allows_each_actions_own_methods(crm, action, methods):
    assert allowed_methods(crm, "deal:acme-123", action) == methods


def test_route_methods_narrow_each_actions_methods():
    platform = _platform({
        "deal:{id}": {"path": "deals/{id}", "methods": ["GET", "PATCH", "DELETE"]}})
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
