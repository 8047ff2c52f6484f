"""authserver.redaction: the one set of patterns and the one marker behind log lines
(authserver.observability) and audit records (authserver.audit)."""

from __future__ import annotations

import random
import string

import pytest

from authserver import audit, observability, redaction
from authserver.redaction import REDACTED, redact_credentials, redact_text

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
OPAQUE = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7"


def test_one_marker_for_logs_and_audit() -> None:
    assert observability.REDACTED == audit.REDACTED == REDACTED
    assert observability.redact(f"saw {JWT}") == audit.redact_jwts(f"saw {JWT}")


@pytest.mark.parametrize("text", ["DPoP proof rejected", "Bearer token missing",
                                  "Basic auth is not accepted"])
def test_prose_after_a_scheme_is_kept(text: str) -> None:
    assert redact_credentials(text) == text
    assert audit.redact(text) == text


@pytest.mark.parametrize("value", ["abc.def", "Kz~8mXK1Eal", "s3cret", "ABCDEFG", OPAQUE])
def test_any_credential_after_a_scheme_is_redacted(value: str) -> None:
    for scheme in ("Bearer", "DPoP", "Basic"):
        assert redact_credentials(f"Authorization: {scheme} {value}") == (
            f"Authorization: {scheme} {REDACTED}")


def test_audit_strength_also_strips_opaque_runs_logs_keep_them() -> None:
    text = f"upstream returned {OPAQUE}"
    assert redact_credentials(text) == text
    assert redact_text(text) == f"upstream returned {REDACTED}"
    uuid = "0b7a3c1e-5d2f-4a6b-9c8d-1e2f3a4b5c6d"
    assert redact_text(uuid) == uuid


def test_sensitive_keys_are_one_list() -> None:
    for key in ("access_token", "client_secret", "code_verifier", "Authorization", "cookie",
                "Set-Cookie", "dpop", "code", "private_key", "password"):
        assert redaction.is_sensitive_key(key), key
    for key in ("path", "status", "endpoint", "codec", "grant_type", "error"):
        assert not redaction.is_sensitive_key(key), key


def test_the_prefilter_never_skips_a_match() -> None:
    """Text the fast path returns unchanged is text no pattern would have changed."""
    rng = random.Random(18)
    alphabet = string.ascii_letters + string.digits + "._~+/=-\"@: &,;'eyJ"
    samples = [JWT, f"x={OPAQUE}", "a://u:p@h", '"password": "x"', ".".join(["A" * 16] * 3)]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
                for _ in range(3000)]
    samples += [f"Bearer {s}" for s in samples[:500]]
    for text in samples:
        slow = text
        for pattern, replacement in redaction._PATTERNS:
            slow = pattern.sub(replacement, slow)
        slow = redaction._AUTH_SCHEME.sub(redaction._auth_value, slow)
        assert redact_credentials(text) == slow, text
