"""`authserver demo` / `python -m authserver.demo`: play the on-behalf-of story end to end.

Exit status 0 only when every observation matches its expectation and the audit hash chain
verifies; 1 otherwise; 2 when the services could not be started at all.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from authserver.demo.narrate import Narrator, Report

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_SETUP = 2
HTTP_TIMEOUT = 10


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authserver demo",
        description="Start an IdP, a CRM, a project tool, authserver and a scripted agent on "
                    "loopback, play five scenarios, print what happened and verify the audit "
                    "trail.")
    p.add_argument("--json", metavar="PATH",
                   help="also write a machine-readable report to PATH ('-' = stdout; the "
                        "narration then goes to stderr)")
    p.add_argument("--serve", action="store_true",
                   help="leave everything running afterwards (Ctrl-C stops) and print the URLs; "
                        "Alice is not deprovisioned, so you can click through as her")
    p.add_argument("--data-dir", metavar="DIR",
                   help="authserver's data directory (default: a fresh temporary directory)")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--colour", "--color", dest="colour", action="store_true", default=None,
                        help="force colour")
    colour.add_argument("--no-colour", "--no-color", dest="colour", action="store_false",
                        help="never colour")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stream = sys.stderr if args.json == "-" else sys.stdout
    narrator = Narrator(stream, colour=args.colour, quiet=args.quiet)
    if args.data_dir:
        return _run(args, narrator, Path(args.data_dir))
    with tempfile.TemporaryDirectory(prefix="authserver-demo-") as tmp:
        return _run(args, narrator, Path(tmp))


def _run(args: argparse.Namespace, narrator: Narrator, data_dir: Path) -> int:
    from authserver.demo.scenarios import SCENARIOS, Play, run_all, scenario_deprovision
    from authserver.demo.stack import USERS, connect_users, start_stack

    started = time.monotonic()
    report = Report()
    narrator.heading("Starting the demo (everything on loopback, one process)")
    try:
        stack = start_stack(data_dir, progress=narrator.progress, done=narrator.done)
    except Exception as e:  # report, don't trace back
        narrator.failed(f"{type(e).__name__}: {e}")
        report.error = f"setup: {type(e).__name__}: {e}"
        _finish(args, narrator, report, started)
        return EXIT_SETUP
    try:
        report.urls = stack.urls()
        try:
            browsers = connect_users(stack, USERS, progress=narrator.progress,
                                     done=narrator.done)
        except Exception as e:  # reported, as above
            narrator.failed(f"{type(e).__name__}: {e}")
            report.error = f"setup: {type(e).__name__}: {e}"
            _finish(args, narrator, report, started)
            return EXIT_SETUP
        play = Play(stack, browsers, narrator)
        # --serve keeps Alice employed, so a person can still click through as her.
        to_play = tuple(s for s in SCENARIOS if not (args.serve and s is scenario_deprovision))
        report.scenarios = run_all(play, to_play)
        _collect_audit(play, report)
        report.platform_stats = stack.platform_stats()
        narrator.summary(report)
        narrator.audit_trail(report.audit_events, report.audit_verify)
        _finish(args, narrator, report, started)
        if args.serve:
            _serve(narrator, stack, data_dir)
    finally:
        stack.stop()
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _collect_audit(play: object, report: Report) -> None:
    from authserver.demo.scenarios import Play

    assert isinstance(play, Play)
    try:
        # The trail first, then the verification: the verified chain covers every shown event.
        report.audit_events = play.audit_events()
        resp = play.admin("GET", "/audit/verify")
        report.audit_verify = resp.json() if resp.status_code == 200 else {
            "ok": False, "reason": f"HTTP {resp.status_code}"}
    except (requests.RequestException, RuntimeError, ValueError) as e:
        report.audit_verify = {"ok": False, "reason": f"{type(e).__name__}: {e}"}


def _finish(args: argparse.Namespace, narrator: Narrator, report: Report,
            started: float) -> None:
    report.duration_seconds = time.monotonic() - started
    narrator.verdict(report)
    if args.json:
        report.write_json(args.json)
        if args.json != "-":
            narrator.line(f"JSON report: {args.json}")


def _serve(narrator: Narrator, stack: Any, data_dir: Path) -> None:
    import json
    import os

    from authserver.demo.stack import EDGE_REDIRECT_URI

    state = stack.serve_state()
    state_file = data_dir / "serve.json"
    # Demo secrets for loopback services that die with this process; still, owner-only.
    fd = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)
    narrator.heading("Still running — click through (Ctrl-C stops everything)")
    for name, url in stack.urls().items():
        narrator.line(f"  {name:<12} {url}")
    narrator.line("  Sign in with the corporate IdP as alice or bob (the demo IdP asks only for "
                  "a username).")
    narrator.line("")
    narrator.line("  Credentials (README \"How an agent uses it\"; docs/edge.md):")
    narrator.line(f"    ISSUER={state['issuer']}")
    narrator.line(f"    AGENT_ID={state['readme_agent']['client_id']}")
    narrator.line(f"    AGENT_SECRET={state['readme_agent']['client_secret']}")
    narrator.line(f"    EDGE_ID={state['edge']['client_id']}")
    narrator.line(f"    EDGE_SECRET={state['edge']['client_secret']}")
    narrator.line(f"    the edge at the IdP: {state['edge_at_idp']['client_id']} / "
                  f"{state['edge_at_idp']['client_secret']} (redirect URI "
                  f"{EDGE_REDIRECT_URI})")
    narrator.line(f"    all of them, as JSON: {state_file}")
    narrator.line("")
    narrator.line("  A pending approval to click through (Alice's agent asks to delete a deal):")
    narrator.line(f"    {sys.executable} -m authserver.demo.pending {state_file}")
    stop = threading.Event()
    # SIGTERM (e.g. from a process manager) stops as cleanly as Ctrl-C: servers, temp dir.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        narrator.line("stopping")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
