"""Demo output: plain-words narration, the summary table, the audit trail, the JSON report.

Colour only when the stream is a terminal (and `NO_COLOR` is unset, https://no-color.org/);
otherwise plain text, so CI logs and pipes stay readable. Nothing printed here is a credential:
callers pass decisions, policy ids and correlation ids, never token values.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

REPORT_VERSION = 1
#: Widest a summary-table cell may grow before it is cut (keeps the table within a terminal).
MAX_CELL = 44

_COLOURS = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
            "magenta": "35", "cyan": "36"}


@dataclass
class Check:
    """One expectation of a scenario: `ok` when what was observed equals what was expected."""

    label: str
    expected: Any
    observed: Any

    @property
    def ok(self) -> bool:
        return bool(self.expected == self.observed)


@dataclass
class Step:
    """One narrated step: what happened, the decision, the policy that decided, the cid."""

    text: str
    decision: str | None = None
    policy: str | None = None
    correlation_id: str | None = None


@dataclass
class ScenarioResult:
    key: str
    title: str
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "ok": self.ok,
            "error": self.error,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
            "steps": [asdict(s) for s in self.steps],
            "facts": self.facts,
        }


@dataclass
class Report:
    scenarios: list[ScenarioResult] = field(default_factory=list)
    audit_verify: dict[str, Any] = field(default_factory=dict)
    audit_events: list[dict[str, Any]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    platform_stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.error is None and bool(self.scenarios)
                and all(s.ok for s in self.scenarios)
                and self.audit_verify.get("ok") is True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "ok": self.ok,
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 2),
            "urls": self.urls,
            "scenarios": [s.as_dict() for s in self.scenarios],
            "audit": {"verify": self.audit_verify, "events": self.audit_events},
            "platform_stats": self.platform_stats,
        }

    def write_json(self, path: str) -> None:
        text = json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str) + "\n"
        if path == "-":
            sys.stdout.write(text)
            return
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)


def use_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


class Narrator:
    """Writes the story to `stream`; `quiet` suppresses everything (the JSON-only mode)."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.colour = use_colour(self.stream) if colour is None else colour
        self.quiet = quiet

    # --- primitives ----------------------------------------------------------------------------

    def paint(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        codes = ";".join(_COLOURS[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()

    # --- start-up progress ---------------------------------------------------------------------

    def progress(self, what: str) -> None:
        if not self.quiet:
            self.stream.write(self.paint("  … ", "dim") + what)
            self.stream.flush()

    def done(self, detail: str = "") -> None:
        suffix = f" {self.paint(detail, 'dim')}" if detail else ""
        self.line(" " + self.paint("ok", "green") + suffix)

    def failed(self, detail: str) -> None:
        self.line(" " + self.paint("FAILED", "red", "bold") + f" {detail}")

    # --- the story -----------------------------------------------------------------------------

    def heading(self, text: str) -> None:
        self.line()
        self.line(self.paint(text, "bold"))

    def scenario(self, number: str, title: str) -> None:
        self.line()
        self.line(self.paint(f"━━ {number}. {title}", "bold", "cyan"))

    def say(self, text: str) -> None:
        self.line(f"   {text}")

    def step(self, step: Step) -> None:
        parts = [f"   • {step.text}"]
        meta = []
        if step.decision:
            meta.append(self.paint(step.decision, _decision_colour(step.decision), "bold"))
        if step.policy:
            meta.append("policy " + self.paint(step.policy, "magenta"))
        if step.correlation_id:
            meta.append("cid " + self.paint(step.correlation_id, "dim"))
        if meta:
            parts.append("\n       " + " · ".join(meta))
        self.line("".join(parts))

    def outcome(self, result: ScenarioResult) -> None:
        for check in result.checks:
            mark = self.paint("✔", "green") if check.ok else self.paint("✘", "red", "bold")
            text = f"   {mark} {check.label}: {_cell(check.observed)}"
            if not check.ok:
                text += self.paint(f" (expected {_cell(check.expected)})", "red")
            self.line(text)
        if result.error:
            self.line("   " + self.paint(f"✘ error: {result.error}", "red", "bold"))

    # --- the end -------------------------------------------------------------------------------

    def summary(self, report: Report) -> None:
        self.heading("Summary")
        rows = [("scenario", "check", "expected", "observed", "")]
        for s in report.scenarios:
            for c in s.checks:
                rows.append((s.key, c.label, _cell(c.expected), _cell(c.observed),
                             "ok" if c.ok else "MISMATCH"))
            if s.error:
                rows.append((s.key, "error", "none", _cell(s.error), "MISMATCH"))
        verify = report.audit_verify
        rows.append(("audit", "hash chain verifies", "true", _cell(verify.get("ok")),
                     "ok" if verify.get("ok") is True else "MISMATCH"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for index, row in enumerate(rows):
            cells = [row[i].ljust(widths[i]) for i in range(5)]
            status = cells[4]
            if index == 0:
                self.line(self.paint("  ".join(cells).rstrip(), "bold"))
                self.line("  ".join("─" * w for w in widths))
                continue
            colour = "green" if row[4] == "ok" else "red"
            cells[4] = self.paint(status, colour, "bold")
            self.line("  ".join(cells).rstrip())

    def audit_trail(self, events: Sequence[Mapping[str, Any]], verify: Mapping[str, Any]) -> None:
        self.heading(f"Audit trail ({len(events)} events)")
        for e in events:
            policies = ",".join(e.get("policy_ids") or []) or "-"
            who = _short(e.get("user_id"))
            self.line(
                f"  #{e.get('seq', '?'):<4} {e.get('event', '')!s:<18} "
                f"{self.paint(str(e.get('outcome', '')), _decision_colour(str(e.get('outcome'))))}"
                f"{'/' + str(e['reason']) if e.get('reason') else ''}"
                f"  user={who} platform={e.get('platform') or '-'} policy={policies}"
                f"  cid={e.get('correlation_id') or '-'}"
            )
        ok = verify.get("ok") is True
        mark = (self.paint("verified", "green", "bold") if ok
                else self.paint("BROKEN", "red", "bold"))
        self.line(f"  hash chain: {mark} ({verify.get('count', '?')} records"
                  f"{'' if ok else ', first bad seq ' + str(verify.get('first_bad_seq'))})")

    def verdict(self, report: Report) -> None:
        self.line()
        if report.ok:
            self.line(self.paint(f"All observations match ({report.duration_seconds:.1f} s).",
                                 "green", "bold"))
        else:
            self.line(self.paint("Some observations differ from the expectations.", "red",
                                 "bold"))
            if report.error:
                self.line(self.paint(f"error: {report.error}", "red"))


def _short(user_id: Any) -> str:
    if not isinstance(user_id, str):
        return "-"
    return user_id if len(user_id) <= 14 else user_id[:12] + "…"


def _decision_colour(decision: str) -> str:
    lowered = decision.lower()
    if lowered.startswith(("allow", "ok", "approved", "connected", "200", "201")):
        return "green"
    if lowered.startswith(("approval", "step", "pending")):
        return "yellow"
    return "red"
