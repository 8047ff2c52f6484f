"""Unit tests of the conformance runner and reports (conformance/), against a tiny fake AS."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

import conformance.checks  # noqa: F401  (registers the checks)
from authserver.testing.server import ServerThread
from conformance.__main__ import main
from conformance.reports import exit_code, json_report, junit_xml, summary, table
from conformance.runner import (
    REGISTRY,
    Check,
    Context,
    Fail,
    Options,
    Result,
    Skip,
    Status,
    check,
    passed,
    run_checks,
    run_one,
)


def fake_as(issuer_override: str | None = None) -> Any:
    """A fake AS serving RFC 8414 metadata; `issuer_override` makes it lie about its issuer."""
    state: dict[str, Any] = {"paths": []}

    @Request.application
    def app(request: Request) -> Response:
        base = state["base"]
        state["paths"].append(request.path)
        if request.path == "/.well-known/oauth-authorization-server":
            doc = {"issuer": issuer_override or base, "token_endpoint": base + "/token",
                   "response_types_supported": ["code"], "authorization_endpoint": base + "/auth",
                   "grant_types_supported": ["authorization_code"],
                   "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                   "code_challenge_methods_supported": ["S256"],
                   "authorization_response_iss_parameter_supported": True}
            return Response(json.dumps(doc), content_type="application/json")
        return Response("not found", status=404)

    return app, state


@pytest.fixture
def fake_server() -> Iterator[tuple[str, dict[str, Any]]]:
    app, state = fake_as()
    with ServerThread(app) as base:
        state["base"] = base
        yield base, state


@pytest.fixture
def lying_server() -> Iterator[str]:
    app, state = fake_as(issuer_override="https://elsewhere.example")
    with ServerThread(app) as base:
        state["base"] = base
        yield base


def entry(func: Any, rule_id: str = "X-01", group: str = "G", needs: tuple[str, ...] = ()
          ) -> Check:
    return Check(rule_id, func.__name__, group, func, needs)


def offline_context() -> Context:
    return Context(Options(issuer="https://as.invalid"))


def check_passes(ctx: Context) -> Result:
    return passed("fine")


def check_fails(ctx: Context) -> Result:
    raise Fail("broke the rule")


def check_skips(ctx: Context) -> Result:
    raise Skip("cannot run here")


def check_skips_silently(ctx: Context) -> Result:
    raise Skip()


def check_returns_nothing(ctx: Context) -> Result:
    return None  # type: ignore[return-value]


def check_crashes(ctx: Context) -> Result:
    raise KeyError("boom")


def test_skip_is_reported_as_skip_with_its_reason() -> None:
    result = run_one(offline_context(), entry(check_skips))
    assert result == Result(Status.SKIP, "cannot run here")


def test_skip_without_reason_still_gets_a_reason() -> None:
    result = run_one(offline_context(), entry(check_skips_silently))
    assert result.status is Status.SKIP
    assert result.reason == "skipped without a reason"


def test_skips_are_never_counted_as_passes() -> None:
    outcomes = run_checks(offline_context(), [entry(check_skips), entry(check_passes, "X-02")])
    assert summary(outcomes) == {"pass": 1, "fail": 0, "skip": 1, "total": 2}


def test_check_returning_no_result_is_a_failure() -> None:
    result = run_one(offline_context(), entry(check_returns_nothing))
    assert result == Result(Status.FAIL, "check returned no result")


def test_crashing_check_is_a_failure() -> None:
    result = run_one(offline_context(), entry(check_crashes))
    assert result.status is Status.FAIL
    assert result.reason.startswith("check error: KeyError")


def test_unmet_need_skips_with_the_reason() -> None:
    ctx = Context(Options(issuer="https://as.invalid", subject_token_cmd=None))
    ctx._metadata = {"issuer": "https://as.invalid"}  # discovered, but no token endpoint
    result = run_one(ctx, entry(check_passes, needs=("token_endpoint",)))
    assert result == Result(Status.SKIP, "metadata has no token_endpoint")


def test_exit_code_is_non_zero_on_any_failure() -> None:
    outcomes = run_checks(offline_context(), [entry(check_passes), entry(check_fails, "X-02")])
    assert exit_code(outcomes) == 1


def test_exit_code_is_zero_with_only_passes_and_skips() -> None:
    outcomes = run_checks(offline_context(), [entry(check_passes), entry(check_skips, "X-02")])
    assert exit_code(outcomes) == 0


def test_duplicate_check_name_is_refused() -> None:
    before = list(REGISTRY)
    try:
        check("Z-01", "only once", group="G")(check_passes)
        with pytest.raises(ValueError, match="duplicate check"):
            check("Z-01", "only once", group="G")(check_passes)
    finally:
        REGISTRY[:] = before


def test_junit_xml_shape() -> None:
    outcomes = run_checks(offline_context(), [
        entry(check_passes, "A-01", "Group A"), entry(check_fails, "A-02", "Group A"),
        entry(check_skips, "B-01", "Group B"),
    ])
    root = ET.fromstring(junit_xml(outcomes, "https://as.invalid"))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"Group A", "Group B"}
    assert (suites["Group A"].get("tests"), suites["Group A"].get("failures")) == ("2", "1")
    assert suites["Group B"].get("skipped") == "1"
    failed = suites["Group A"].findall("testcase")[1]
    assert failed.get("name") == "A-02 check_fails"
    assert failed.find("failure").get("message") == "broke the rule"  # type: ignore[union-attr]
    skipped = suites["Group B"].find("testcase/skipped")
    assert skipped is not None and skipped.get("message") == "cannot run here"


def test_json_report_shape() -> None:
    outcomes = run_checks(offline_context(), [entry(check_fails, "A-02", "Group A")])
    report = json_report(outcomes, "https://as.invalid")
    assert report["issuer"] == "https://as.invalid"
    assert report["summary"] == {"pass": 0, "fail": 1, "skip": 0, "total": 1}
    (row,) = report["results"]
    assert {k: row[k] for k in ("id", "name", "group", "status", "reason")} == {
        "id": "A-02", "name": "A-02 check_fails", "group": "Group A", "status": "fail",
        "reason": "broke the rule"}


def test_table_groups_by_standard_and_shows_reasons() -> None:
    outcomes = run_checks(offline_context(), [entry(check_skips, "B-01", "Group B")])
    text = table(outcomes, "https://as.invalid")
    assert "== Group B" in text
    assert "skip  B-01 check_skips" in text and "cannot run here" in text


def test_http_loopback_issuer_fails_gen06_without_flag(fake_server: tuple[str, dict[str, Any]]
                                                       ) -> None:
    base, _ = fake_server
    ctx = Context(Options(issuer=base))
    gen06 = next(c for c in REGISTRY if c.rule_id == "GEN-06")
    result = run_one(ctx, gen06)
    assert result.status is Status.FAIL
    assert "--insecure-http-loopback" in result.reason


def test_http_loopback_issuer_is_skipped_never_passed_with_flag(
    fake_server: tuple[str, dict[str, Any]],
) -> None:
    base, _ = fake_server
    ctx = Context(Options(issuer=base, insecure_http_loopback=True))
    result = run_one(ctx, next(c for c in REGISTRY if c.rule_id == "GEN-06"))
    assert result.status is Status.SKIP


def test_without_flag_no_request_is_sent_to_plain_http(fake_server: tuple[str, dict[str, Any]]
                                                       ) -> None:
    base, state = fake_server
    ctx = Context(Options(issuer=base))
    meta01 = next(c for c in REGISTRY if c.rule_id == "META-01")
    result = run_one(ctx, meta01)
    assert result.status is Status.SKIP
    assert "GEN-06" in result.reason
    assert state["paths"] == []


def test_metadata_checks_pass_against_fake_server(fake_server: tuple[str, dict[str, Any]]
                                                  ) -> None:
    base, _ = fake_server
    ctx = Context(Options(issuer=base, insecure_http_loopback=True))
    wanted = {"META-01", "META-02", "META-03", "META-04", "META-05"}
    results = {c.rule_id: run_one(ctx, c) for c in REGISTRY if c.rule_id in wanted}
    assert {k: r.status for k, r in results.items()} == dict.fromkeys(wanted, Status.PASS)


def test_cli_exits_non_zero_and_writes_reports_on_issuer_mismatch(lying_server: str,
                                                                  tmp_path: Any) -> None:
    junit, report = tmp_path / "r.xml", tmp_path / "r.json"
    code = main(["--issuer", lying_server, "--insecure-http-loopback", "--only", "META",
                 "--junit", str(junit), "--json", str(report)])
    assert code == 1
    results = {r["id"]: r for r in json.loads(report.read_text())["results"]}
    assert results["META-01"]["status"] == "fail"
    assert ET.parse(junit).getroot().tag == "testsuites"


def test_cli_exits_zero_when_nothing_fails(fake_server: tuple[str, dict[str, Any]]) -> None:
    base, _ = fake_server
    assert main(["--issuer", base, "--insecure-http-loopback", "--only", "META"]) == 0
