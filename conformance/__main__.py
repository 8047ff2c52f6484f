"""CLI: `python -m conformance --issuer URL [options]` (black-box; RFC 8414 discovery)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance import checks  # noqa: F401  (registers every check)
from conformance.reports import exit_code, json_text, junit_xml, table
from conformance.runner import REGISTRY, Context, Options, run_checks, select


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Black-box OAuth 2.0 authorization server conformance checks (HTTP only).",
    )
    p.add_argument("--issuer", help="issuer identifier; metadata is discovered from it (RFC 8414)")
    p.add_argument("--insecure-http-loopback", action="store_true",
                   help="allow a plain-HTTP issuer on a loopback address (dev only; GEN-06 is "
                        "then reported as skipped, never passed)")
    p.add_argument("--registration-token", help="initial access token for DCR (RFC 7591 §3)")
    p.add_argument("--client-id", help="pre-registered confidential client (client_credentials)")
    p.add_argument("--client-secret", help="its secret")
    p.add_argument("--client-auth-method", default="client_secret_basic",
                   choices=["client_secret_basic", "client_secret_post"],
                   help="how the pre-registered client authenticates")
    p.add_argument("--authorize-cmd", help="optional hook for a browser-less test-user sign-in: "
                   "receives the authorization URL as its last argument, prints the final "
                   "redirect URL (with code, state, iss)")
    p.add_argument("--subject-token-cmd", help="optional hook for token-exchange checks: prints "
                   "JSON {subject_token, subject_token_type, dpop_private_jwk?, audience?, "
                   "resource?, intents?: {allow, deny, approval, unconnected}, "
                   "unconnected_audience?, gateway_path?}; run once per check")
    p.add_argument("--resource", help="a resource indicator (RFC 8707) the server accepts")
    p.add_argument("--rate-limit-attempts", type=int, default=0,
                   help="exchanges to send when probing the rate limit (0 = skip that check)")
    p.add_argument("--timeout", type=float, default=15.0, help="per-request timeout, seconds")
    p.add_argument("--ca-file", help="CA certificates (PEM) to trust for https, e.g. a test "
                   "deployment's own CA (default: the system's, or REQUESTS_CA_BUNDLE)")
    p.add_argument("--only", action="append", metavar="PREFIX",
                   help="run only checks whose rule ID or group starts with PREFIX (repeatable)")
    p.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    p.add_argument("--json", type=Path, help="write a JSON report here")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    selected = select(REGISTRY, args.only)
    if args.list:
        for c in selected:
            print(f"{c.group:<40} {c.name}")
        return 0
    if not args.issuer:
        parser().error("--issuer is required")
    options = Options(
        issuer=args.issuer, insecure_http_loopback=args.insecure_http_loopback,
        registration_token=args.registration_token, client_id=args.client_id,
        client_secret=args.client_secret, client_auth_method=args.client_auth_method,
        authorize_cmd=args.authorize_cmd, subject_token_cmd=args.subject_token_cmd,
        resource=args.resource, rate_limit_attempts=args.rate_limit_attempts,
        timeout=args.timeout, ca_file=args.ca_file,
    )
    outcomes = run_checks(Context(options), selected)
    print(table(outcomes, args.issuer))
    if args.junit:
        args.junit.write_text(junit_xml(outcomes, args.issuer), encoding="utf-8")
    if args.json:
        args.json.write_text(json_text(outcomes, args.issuer), encoding="utf-8")
    return exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
