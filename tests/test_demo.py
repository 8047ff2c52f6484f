"""`authserver demo` as a CI test: run it once, as a user would, and assert its JSON report.

The demo is a subprocess (`python -m authserver.demo --json ...`): it starts its own servers
and configures logging for its own process, none of which may leak into the test process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from authserver.demo.narrate import Check, Narrator, Report, ScenarioResult, Step
from authserver.demo.stack import build_config, to_toml

#: A bound on the whole run (the demo itself takes a few seconds); never a timing assertion.
DEMO_TIMEOUT = 180


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    report_path = out / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "authserver.demo", "--json", str(report_path),
         "--data-dir", str(out / "data")],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT, env=env, check=False,
    )
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "report": report}


def _scenario(run: dict[str, Any], key: str) -> dict[str, Any]:
    for scenario in run["report"]["scenarios"]:
        if scenario["key"] == key:
            return scenario
    raise AssertionError(f"scenario {key} missing from the report")


def test_demo_exits_zero(demo_run: dict[str, Any]) -> None:
    assert demo_run["returncode"] == 0, demo_run["stdout"][-4000:] + demo_run["stderr"][-2000:]


def test_every_observation_matches_its_expectation(demo_run: dict[str, Any]) -> None:
    report = demo_run["report"]
    mismatches = [(s["key"], c["label"], c["expected"], c["observed"])
                  for s in report["scenarios"] for c in s["checks"] if not c["ok"]]
    errors = [(s["key"], s["error"]) for s in report["scenarios"] if s["error"]]
    assert (mismatches, errors) == ([], [])
    assert [s["key"] for s in report["scenarios"]] == ["1", "2", "3", "4", "5"]
    assert report["ok"] is True


def test_plain_text_output_when_not_a_tty(demo_run: dict[str, Any]) -> None:
    assert "\x1b[" not in demo_run["stdout"]
    assert "Summary" in demo_run["stdout"] and "Audit trail" in demo_run["stdout"]


def test_audit_chain_verifies(demo_run: dict[str, Any]) -> None:
    audit = demo_run["report"]["audit"]
    assert audit["verify"]["ok"] is True
    assert audit["verify"]["count"] >= len(audit["events"]) > 0


def test_read_is_enforced_by_the_platform_for_bob(demo_run: dict[str, Any]) -> None:
    checks = {c["label"]: c["observed"] for c in _scenario(demo_run, "1")["checks"]}
    assert checks["alice: gateway status"] == 200
    assert checks["bob: exchange (inside his mandate)"] == "allowed"
    assert checks["bob: CRM refuses (not his deal)"] == 403


def test_write_beyond_mandate_count_needs_and_gets_approval(demo_run: dict[str, Any]) -> None:
    scenario = _scenario(demo_run, "2")
    checks = {c["label"]: c["observed"] for c in scenario["checks"]}
    assert checks["write beyond the mandate's count"] == "approval_required"
    assert checks["exchange after approval"] == "allowed"
    assert scenario["facts"]["tasks_created"] == 2


def test_prompt_injection_is_denied_and_audited_as_intent_mismatch(
        demo_run: dict[str, Any]) -> None:
    facts = _scenario(demo_run, "3")["facts"]
    assert facts["audit_reason"] == "intent_mismatch"
    events = [e for e in demo_run["report"]["audit"]["events"]
              if e.get("correlation_id") == facts["correlation_id"]]
    assert [(e["event"], e["outcome"], e["reason"]) for e in events] == [
        ("token_exchange", "denied", "intent_mismatch")]


def test_prompt_injection_deletes_nothing(demo_run: dict[str, Any]) -> None:
    facts = _scenario(demo_run, "3")["facts"]
    assert facts["deals_after"] == facts["deals_before"]
    assert len(facts["deals_before"]) == 4


def test_concurrent_calls_after_expiry_cause_exactly_one_refresh(
        demo_run: dict[str, Any]) -> None:
    facts = _scenario(demo_run, "4")["facts"]
    assert facts["statuses"] == [200] * 20
    assert facts["crm_delta"] == {"refresh": 1, "refresh_reuse": 0, "token_error": 0}


def test_deprovisioning_kills_the_next_call(demo_run: dict[str, Any]) -> None:
    facts = _scenario(demo_run, "5")["facts"]
    assert facts["deprovision_status"] == 200
    assert facts["call_after_status"] == 401
    assert facts["exchange_after"] != "allowed"


def test_deprovisioning_revokes_grants_at_both_platforms(demo_run: dict[str, Any]) -> None:
    platforms = _scenario(demo_run, "5")["facts"]["platforms"]
    stats = demo_run["report"]["platform_stats"]
    for name in ("crm", "projects"):
        assert platforms[name]["revoked"] == 1
        before, after = platforms[name]["active_grants"]
        assert after == before - 1
        assert stats[name]["active_grants"] == after  # /_admin/stats at the end agrees


# --- output and configuration, without running the demo ----------------------------------------


def _report() -> Report:
    result = ScenarioResult("1", "t", checks=[Check("a", 1, 1), Check("b", "x", "y")],
                            steps=[Step("s", "allowed", "permit-x", "cid-1")])
    return Report(scenarios=[result], audit_verify={"ok": True, "count": 1})


def test_narrator_plain_text_has_no_escape_codes() -> None:
    out = io.StringIO()
    narrator = Narrator(out)  # a StringIO is not a TTY
    narrator.step(Step("s", "allowed", "permit-x", "cid-1"))
    narrator.summary(_report())
    assert "\x1b[" not in out.getvalue()
    assert "MISMATCH" in out.getvalue()


def test_narrator_colours_when_forced() -> None:
    out = io.StringIO()
    Narrator(out, colour=True).step(Step("s", "allowed"))
    assert "\x1b[" in out.getvalue()


def test_report_is_not_ok_when_a_check_differs() -> None:
    report = _report()
    assert report.ok is False
    assert report.as_dict()["scenarios"][0]["checks"][1]["ok"] is False


def test_report_is_not_ok_when_the_audit_chain_is_broken() -> None:
    report = Report(scenarios=[ScenarioResult("1", "t", checks=[Check("a", 1, 1)])],
                    audit_verify={"ok": False})
    assert report.ok is False


def test_config_file_round_trips_through_toml(tmp_path: Path) -> None:
    config = build_config(issuer="http://127.0.0.1:1", data_dir=tmp_path,
                          idp_url="http://127.0.0.1:2", idp_secret="a\"b\\c",
                          crm_url="http://127.0.0.1:3", crm_secret="s",
                          projects_url="http://127.0.0.1:4", projects_secret="t",
                          admin_token="adm")
    assert tomllib.loads(to_toml(config)) == json.loads(json.dumps(config))


# --- --serve: every page, the credentials, a pending approval to click through ----------------


def test_serve_prints_every_page_the_credentials_and_a_pending_approval_command(
        tmp_path: Path) -> None:
    import re
    import shlex
    import signal
    import threading
    import time

    import requests

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "authserver.demo", "--serve", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    # A reader thread: select() on a buffered pipe misses lines already read into its buffer.
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                     daemon=True).start()
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT
        while not any("authserver.demo.pending" in line for line in list(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.2)
        out = "".join(lines)
        issuer = re.search(r"ISSUER=(\S+)", out).group(1)  # type: ignore[union-attr]
        for page in ("login", "connections", "approvals", "activity", "agents"):
            assert re.search(rf"^\s+\w+\s+{re.escape(issuer)}/{page}$", out, re.M), page
            resp = requests.get(f"{issuer}/{page}", timeout=10, allow_redirects=False)
            assert resp.status_code in (200, 302), (page, resp.status_code)
        # The README agent's credentials authenticate (client_secret_basic).
        agent_id = re.search(r"AGENT_ID=(\S+)", out).group(1)  # type: ignore[union-attr]
        secret = re.search(r"AGENT_SECRET=(\S+)", out).group(1)  # type: ignore[union-attr]
        token = requests.post(f"{issuer}/token", data={"grant_type": "client_credentials"},
                              auth=(agent_id, secret), timeout=10)
        assert token.status_code == 200, token.text
        assert re.search(r"EDGE_ID=\S+", out) and re.search(r"EDGE_SECRET=\S+", out)
        # The printed command makes a pending approval for Alice.
        command = next(line for line in lines if "authserver.demo.pending" in line)
        pending = subprocess.run(shlex.split(command), capture_output=True, text=True,
                                 timeout=60, env=env, check=False)
        assert pending.returncode == 0, pending.stdout + pending.stderr
        assert re.search(rf"{re.escape(issuer)}/approvals/\S+", pending.stdout), pending.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
