"""scripts/conformance-stack and scripts/tls-stack pass generated secrets to argparse and click
as `--option=value`: a random value that starts with `-` (one `secrets.token_urlsafe` value in
64 does) would otherwise be read as the next option, and CI would fail at random
("argument --local-password: expected one argument", seen in a clean-clone run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [ROOT / "scripts" / "conformance-stack", ROOT / "scripts" / "tls-stack"]
#: The shell variables that hold a secret or a random value (generated here or by the server).
SECRET_VARIABLES = ("LOCAL_PASSWORD", "REGISTRATION_TOKEN", "CLIENT_SECRET")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_generated_secrets_are_passed_as_option_equals_value(script: Path) -> None:
    text = script.read_text()
    for name in SECRET_VARIABLES:
        assert f'="${name}"' in text, (script.name, name)  # it is passed, in the safe form
        spaced = re.findall(rf'--[a-z-]+\s+"\${name}"', text)
        assert spaced == [], (script.name, spaced)


def test_a_value_starting_with_a_dash_needs_the_equals_form() -> None:
    """Why: the conformance runner's argparse refuses `--client-secret -abc`, and takes
    `--client-secret=-abc`."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "conformance", "--issuer",
                               "http://127.0.0.1:1", *args, "--help"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    refused = run("--client-secret", "-abc")
    assert refused.returncode == 2
    assert "argument --client-secret: expected one argument" in refused.stderr
    assert run("--client-secret=-abc").returncode == 0
