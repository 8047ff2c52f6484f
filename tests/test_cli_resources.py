"""`authserver resources add|list|remove` (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from authserver.cli import main

NEW = "https://tools.example.net/mcp"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """As tests/test_cli.py's, but a failing command returns its whole output (stderr too)."""
    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        if code:
            return result.output
        out = result.stdout.strip()
        return json.loads(out) if out.startswith(("{", "[")) else out

    return invoke


def test_resources_add_list_remove(run: Any) -> None:
    run("db", "upgrade")
    added = run("resources", "add", "HTTPS://Tools.Example.NET:443/mcp/", "--name", "Tools",
                "--scope", "read", "--accepts", "dpop")
    assert added["uri"] == NEW  # normalised
    assert added["token_types"] == ["dpop"] and added["scopes"] == ["read"]
    assert "client_secret" not in added
    assert run("resources", "list") == [added]
    assert run("resources", "remove", NEW + "/") == {"removed": NEW}
    assert run("resources", "list") == []


def test_resources_add_with_introspection_credentials(run: Any) -> None:
    added = run("resources", "add", NEW, "--name", "Tools", "--introspection")
    assert added["token_types"] == ["dpop", "bearer"]  # the default: both
    assert added["client_secret"] and added["introspection_client_id"]
    clients = {c["client_id"]: c for c in run("clients", "list")}
    assert clients[added["introspection_client_id"]]["attributes"] == {"resources": [NEW]}
    assert "client_secret" not in run("resources", "list")[0]
    run("resources", "remove", NEW)
    assert added["introspection_client_id"] not in {c["client_id"] for c in run("clients", "list")}


def test_resources_add_duplicate_is_refused(run: Any) -> None:
    run("resources", "add", NEW, "--name", "Tools")
    out = run("resources", "add", "https://TOOLS.example.net/mcp/", "--name", "Again", code=1)
    assert f"resource {NEW} is already registered" in out


def test_resources_add_malformed_is_refused(run: Any) -> None:
    assert "https" in run("resources", "add", "http://tools.example.net/", "--name", "x", code=1)
    assert "scopes" in run("resources", "add", NEW, "--name", "x", "--scope", "admin", code=1)
    assert "Invalid value" in run("resources", "add", NEW, "--name", "x", "--accepts", "mtls",
                                  code=2)


def test_resources_remove_unknown_is_refused(run: Any, tmp_path: Path) -> None:
    run("db", "upgrade")
    assert f"no resource {NEW}" in run("resources", "remove", NEW, code=1)
