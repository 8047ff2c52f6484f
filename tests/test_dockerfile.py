"""Static checks of the Dockerfile and its entry point (no Docker engine is needed or used).

These read the files; they do not prove the image builds. They pin the properties a reviewer
would otherwise check by eye: non-root user, health check, runtime-only install, the entry point.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "docker-entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continuation"
    result = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _args(keyword: str) -> list[str]:
    return [args for kw, args in _instructions() if kw == keyword]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _args("ENV"):
        for token in shlex.split(args):
            name, sep, value = token.partition("=")
            assert sep, f"use ENV name=value form: {token}"
            env[name] = value
    return env


def test_base_image_is_python_311_slim() -> None:
    assert _args("FROM") == ["python:3.11-slim"]


def test_runs_as_non_root_user() -> None:
    kinds = [kw for kw, _ in _instructions()]
    users = _args("USER")
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # The last USER must come before the entry point so the service runs as that user.
    assert max(i for i, kw in enumerate(kinds) if kw == "USER") < kinds.index("ENTRYPOINT")
    assert any("useradd" in args and user in args for args in _args("RUN"))


def test_healthcheck_probes_healthz_without_curl() -> None:
    (check,) = _args("HEALTHCHECK")
    assert "/healthz" in check
    assert "urllib.request" in check
    assert "curl" not in check and "wget" not in check


def test_installs_runtime_dependencies_only() -> None:
    installs = [args for args in _args("RUN") if "pip install" in args]
    assert installs, "no pip install"
    for args in installs:
        assert "[" not in args, "extras (e.g. [test]) must not be installed in the image"
        assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", args)
        assert "requirements-dev" not in args


def test_exposes_port_8000() -> None:
    assert _args("EXPOSE") == ["8000"]


def test_env_defaults() -> None:
    env = _env()
    assert env["AUTHSERVER_DATA_DIR"] == "/var/lib/authserver"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"


def test_copies_policies() -> None:
    assert any(args.split()[0] == "policies" for args in _args("COPY"))


@pytest.mark.parametrize("args", _args("COPY"))
def test_copy_sources_exist_in_repo(args: str) -> None:
    sources = [s for s in args.split()[:-1] if not s.startswith("--")]
    for source in sources:
        assert (REPO / source).exists(), f"COPY source missing from the repo: {source}"


def test_never_copies_whole_context() -> None:
    # A blanket COPY would ship .venv, var/ (local KEK, SQLite files) and tests into the image.
    for args in _args("COPY"):
        assert args.split()[0] not in (".", "./", "*")


def test_entrypoint_is_the_script() -> None:
    (entry,) = _args("ENTRYPOINT")
    assert entry == '["/app/docker-entrypoint.sh"]'
    assert any("docker-entrypoint.sh" in args for args in _args("COPY"))


def test_entrypoint_script_exists_and_is_executable() -> None:
    mode = ENTRYPOINT.stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXGRP and mode & stat.S_IXOTH
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")


def test_entrypoint_script_is_valid_sh() -> None:
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0


def test_entrypoint_migrates_then_execs_gunicorn() -> None:
    lines = [line.strip() for line in ENTRYPOINT.read_text().splitlines()]
    assert "set -eu" in lines
    upgrade = lines.index("authserver db upgrade")
    serve = lines.index("exec gunicorn -c gunicorn.conf.py wsgi:app")
    assert upgrade < serve


def test_installs_the_locked_versions_then_the_package_alone() -> None:
    (install,) = [args for args in _args("RUN") if "pip install" in args]
    assert "pip install -r /tmp/src/requirements.lock" in install
    assert "pip install --no-deps /tmp/src" in install
    assert any("requirements.lock" in args.split()[:-1] for args in _args("COPY"))


def test_the_wheel_is_built_with_its_policies_and_conformance_suite() -> None:
    # authserver/policies is a symlink to ../policies: both must sit in the build context.
    assert (REPO / "authserver" / "policies").is_symlink()
    copies = {tuple(args.split()) for args in _args("COPY")}
    assert ("authserver", "/tmp/src/authserver") in copies
    assert ("policies", "/tmp/src/policies") in copies
    assert ("conformance", "/tmp/src/conformance") in copies
    assert "AUTHSERVER_POLICY_DIR" not in _env()
