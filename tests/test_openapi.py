"""docs/openapi.yaml against the app (issue 13, "Prove it stays that way").

1. Every public route in the app's url_map is described, every described path is served, and
   the methods agree. What is deliberately not described (user pages, admin API, SCIM,
   /metrics, static files) is listed in NOT_DESCRIBED with why.
2. Schemathesis generates requests from the description for every operation and sends them to
   the app through its WSGI interface (no server): no 5xx (`not_a_server_error`), and each
   answer's status code, content type, headers and body fit what the description says.
   Derandomized, with tests/fuzz_helpers.py's profile (`HYPOTHESIS_PROFILE=long` for a
   release); 25 examples per operation in CI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
import yaml
from flask import Flask
from hypothesis import given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from authserver.testing.settings import crm_platform
from tests.conftest import base_settings, running_app
from tests.fuzz_helpers import PROFILE, PROFILE_NAME
from tests.http_helpers import ISSUER, RESOURCE

# A SET travels as its compact JWS, a string (RFC 8935 §2).
schemathesis.serializer.alias("application/secevent+jwt", "text/plain")

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
#: Every operation; `.ok()` raises if schemathesis found one invalid.
OPERATIONS = [cast(Any, result).ok() for result in SCHEMA.get_all_operations()]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

#: Routes the description leaves out on purpose (a prefix of the rule, and why).
NOT_DESCRIBED = {
    "/static/": "the stylesheet and images of the user's pages",
    "/favicon.ico": "the user's pages' icon",
    "/admin/": "the operator's API, only with admin_token (README: Endpoints)",
    "/scim/v2/": "SCIM 2.0 for IdPs (RFC 7644); it describes itself at /scim/v2/Schemas",
    "/metrics": "Prometheus, for the operator's scraper",
    # The user's pages (HTML, a browser session): /authorize is described, these are not.
    "/login": "sign-in pages", "/logout": "sign-out forms", "/connections": "a user page",
    "/approvals": "a user page", "/activity": "a user page", "/agents": "a user page",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    settings = {
        **base_settings(tmp_path_factory.mktemp("openapi"), None, "", issuer=ISSUER),
        "resources": (RESOURCE,),
        "platforms": {"crm": crm_platform("http://127.0.0.1:9", "s3cret")},
    }
    with running_app(settings) as application:
        yield application


def _openapi_path(rule: str) -> str:
    """Flask's `/gateway/<platform>/<path:path>` as OpenAPI's `/gateway/{platform}/{path}`."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def _app_routes(app: Flask) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule == "/" or any(rule.rule.startswith(p) for p in NOT_DESCRIBED):
            continue
        # HEAD comes with every GET and OPTIONS with every route (Werkzeug adds them).
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        routes.setdefault(_openapi_path(rule.rule), set()).update(methods)
    return routes


def _described_routes() -> dict[str, set[str]]:
    return {path: {m for m in item if m in HTTP_METHODS} - {"head", "options"}
            for path, item in SPEC["paths"].items()}


def test_description_is_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    assert len(OPERATIONS) == sum(len({m for m in item if m in HTTP_METHODS})
                                  for item in SPEC["paths"].values())


def test_every_public_route_is_described_and_nothing_else(app: Flask) -> None:
    served, described = _app_routes(app), _described_routes()
    assert sorted(set(served) - set(described)) == [], "routes missing from docs/openapi.yaml"
    assert sorted(set(described) - set(served)) == [], "described paths the app does not serve"
    assert {p: m for p, m in served.items() if described[p] != m} == {}, (
        "methods differ", {p: described[p] for p in served if described[p] != served[p]})


def test_the_gateway_describes_head_because_it_routes_it(app: Flask) -> None:
    [rule] = [r for r in app.url_map.iter_rules() if r.rule.startswith("/gateway/")]
    assert "HEAD" in (rule.methods or ())
    assert "head" in SPEC["paths"]["/gateway/{platform}/{path}"]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
#: 25 examples per operation in CI (18 operations); the long profile keeps its own number.
SCHEMATHESIS_SETTINGS = (settings(PROFILE, max_examples=25) if PROFILE_NAME == "ci"
                         else PROFILE)


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_schemathesis(app: Flask, operation: Any) -> None:
    @SCHEMATHESIS_SETTINGS
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(app=app)
        case.validate_response(response, checks=CHECKS)

    run()
