"""Conformance reports: a console table grouped by standard, JUnit XML, and JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

from conformance.runner import Outcome, Status

MARK = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter(o.result.status for o in outcomes)
    return {s.value: counts.get(s, 0) for s in Status} | {"total": len(outcomes)}


def exit_code(outcomes: list[Outcome]) -> int:
    """1 if any check failed; skips never count as passes, nor as failures."""
    return 1 if any(o.result.status is Status.FAIL for o in outcomes) else 0


def _groups(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.check.group, []).append(o)
    return groups


def table(outcomes: list[Outcome], issuer: str) -> str:
    width = max([len(o.check.name) for o in outcomes] + [20])
    lines = [f"Conformance report for {issuer}", ""]
    for group, items in _groups(outcomes).items():
        lines.append(f"== {group}")
        for o in items:
            reason = f"  {o.result.reason}" if o.result.reason else ""
            lines.append(f"  {MARK[o.result.status]}  {o.check.name:<{width}}{reason}")
        lines.append("")
    s = summary(outcomes)
    lines.append(f"{s['pass']} passed, {s['fail']} failed, {s['skip']} skipped "
                 f"({s['total']} checks)")
    return "\n".join(lines)


def junit_xml(outcomes: list[Outcome], issuer: str) -> str:
    suites = ET.Element("testsuites", name=f"conformance {issuer}")
    for group, items in _groups(outcomes).items():
        s = summary(items)
        suite = ET.SubElement(suites, "testsuite", name=group, tests=str(s["total"]),
                              failures=str(s["fail"]), skipped=str(s["skip"]), errors="0",
                              time=f"{sum(o.seconds for o in items):.3f}")
        for o in items:
            case = ET.SubElement(suite, "testcase", classname=group, name=o.check.name,
                                 time=f"{o.seconds:.3f}")
            if o.result.status is Status.FAIL:
                ET.SubElement(case, "failure", message=o.result.reason).text = o.result.reason
            elif o.result.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=o.result.reason)
            elif o.result.reason:
                ET.SubElement(case, "system-out").text = o.result.reason
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def json_report(outcomes: list[Outcome], issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "summary": summary(outcomes),
        "results": [
            {"id": o.check.rule_id, "title": o.check.title, "name": o.check.name,
             "group": o.check.group, "status": o.result.status.value, "reason": o.result.reason,
             "seconds": round(o.seconds, 3)}
            for o in outcomes
        ],
    }


def json_text(outcomes: list[Outcome], issuer: str) -> str:
    return json.dumps(json_report(outcomes, issuer), indent=2)
