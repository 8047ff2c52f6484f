"""The audit refusal reasons (issue 17, item 5): every reason code the token endpoint's checks
raise is a stable snake_case code documented in docs/operating.md "Audit refusal reasons", and
the table names no code nothing raises.

The codes are collected from the source (AST): every string literal in a `reason=` argument and
in an `OAuthError.with_reason(...)` call in authserver/grants, authserver/token_endpoint and
authserver/client_auth.py, plus the composed `<what>_<TokenNotLiveError.code>` codes of our own
subject and actor tokens.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from authserver import errors
from authserver.errors import InvalidRequestError, OAuthError, PolicyDeniedError
from authserver.policy import REASON_INTENT_MISMATCH, REASON_NO_MANDATE, REASON_NO_PERMIT
from authserver.tokens import TOKEN_NOT_LIVE_CODES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "authserver" / "grants").rglob("*.py")),
           *sorted((ROOT / "authserver" / "token_endpoint").rglob("*.py")),
           ROOT / "authserver" / "client_auth.py"]
DOC = ROOT / "docs" / "operating.md"
SECTION = "## Audit refusal reasons"
CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: `_verify_our_token(..., what=...)`: the composed `<what>_<code>` reasons.
OUR_TOKENS = ("subject_token", "actor_token")


def _literals(node: ast.AST) -> set[str]:
    """The codes an argument can be: a literal, either branch of a conditional. A name or an
    attribute is passed through (a policy's `@reason`, a client assertion's reason); an
    f-string is composed (`composed_reasons`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    return set()


def raised_reasons() -> dict[str, set[str]]:
    """Each reason code literal in the sources, with the files that raise it."""
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            values: set[str] = set()
            for keyword in node.keywords:
                if keyword.arg == "reason":
                    values |= _literals(keyword.value)
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "with_reason":
                for arg in node.args:
                    values |= _literals(arg)
            if isinstance(func, ast.Name) and func.id == "failed":  # check_basic_credentials
                for arg in node.args:
                    values |= _literals(arg)
            for value in values:
                found.setdefault(value, set()).add(str(path.relative_to(ROOT)))
        # A function that works the reason out (client_auth._failure_reason): what it returns.
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_reason"):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        for value in _literals(ret.value):
                            found.setdefault(value, set()).add(str(path.relative_to(ROOT)))
    return found


def composed_reasons() -> set[str]:
    return {f"{what}_{code}" for what in OUR_TOKENS
            for code in (*TOKEN_NOT_LIVE_CODES.values(), "not_live")}


def documented_reasons() -> dict[str, str]:
    """code -> the rest of its row, from the table under SECTION."""
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|(.*)$", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is in the table twice"
            rows[match.group(1)] = match.group(2)
    return rows


def oauth_error_codes() -> set[str]:
    """The OAuth error codes: the default reason of an error raised without one."""
    return {cls.error for cls in vars(errors).values()
            if isinstance(cls, type) and issubclass(cls, OAuthError)}


def test_the_sources_raise_reasons() -> None:
    reasons = raised_reasons()
    # The collector sees the cases issue 17 found indistinguishable.
    for code in ("subject_token_expired_in_leeway", "subject_token_no_lifetime_left",
                 "delegation_too_long_chain", "designee_chain_too_long",
                 "client_auth_missing_assertion", "client_auth_bad_secret",
                 "mandate_widened", "mandate_other_request"):
        assert code in reasons, code
    assert len(reasons) > 80


def test_every_reason_code_is_snake_case() -> None:
    bad = [code for code in [*raised_reasons(), *composed_reasons()] if not CODE.match(code)]
    assert not bad


def test_every_raised_reason_is_documented() -> None:
    documented = documented_reasons()
    missing = {code: sorted(paths) for code, paths in raised_reasons().items()
               if code not in documented}
    missing.update({code: ["composed"] for code in composed_reasons() if code not in documented})
    assert not missing, f"add these to {SECTION!r} in docs/operating.md: {missing}"


def test_the_table_documents_only_reasons_that_exist() -> None:
    """A row is a raised or composed code, an OAuth error code (the default) or a policy
    reason (the `@reason` of a Cedar forbid)."""
    known = {*raised_reasons(), *composed_reasons(), *oauth_error_codes(),
             REASON_INTENT_MISMATCH, REASON_NO_MANDATE, REASON_NO_PERMIT}
    stale = sorted(set(documented_reasons()) - known)
    assert not stale
    for code, rest in documented_reasons().items():
        cells = [c.strip() for c in rest.split("|")]
        assert len(cells) >= 2 and cells[0] and cells[1], f"{code}: meaning and check needed"


def test_reason_defaults_to_the_error_code() -> None:
    assert InvalidRequestError("x").reason == "invalid_request"
    assert InvalidRequestError("x", reason="subject_token_missing").reason == \
        "subject_token_missing"
    assert PolicyDeniedError("x", debug="free text").reason == "access_denied"


@pytest.mark.parametrize("reason", ["mandate_invalid", "intent_invalid"])
def test_with_reason_names_the_step_unless_the_raiser_did(reason: str) -> None:
    plain = InvalidRequestError("x")
    assert plain.with_reason(reason) is plain and plain.reason == reason
    specific = InvalidRequestError("x", reason="subject_token_missing")
    assert specific.with_reason(reason).reason == "subject_token_missing"


def test_reason_is_never_on_the_wire() -> None:
    error = InvalidRequestError("Unknown actor", debug="free", reason="actor_unknown")
    assert error.body() == {"error": "invalid_request", "error_description": "Unknown actor"}
    assert "actor_unknown" not in str(error.headers())
