"""`authserver …` commands, as the README's Operations section shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from authserver.cli import main

AGENT_METADATA = ('{"client_name":"agent","grant_types":'
                  '["urn:ietf:params:oauth:grant-type:token-exchange"]}')


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        out = result.stdout.strip()
        return json.loads(out) if out.startswith(("{", "[")) else out

    return invoke


def test_db_upgrade(run: Any) -> None:
    assert "latest revision" in run("db", "upgrade")


def test_keys_rotate_keeps_the_old_key_published(run: Any, tmp_path: Path) -> None:
    from authserver.app import build_services
    from authserver.config import Settings

    first = run("keys", "rotate")["active_kid"]
    second = run("keys", "rotate")["active_kid"]
    assert first != second
    services = build_services(Settings.load({"data_dir": str(tmp_path)}))
    kids = [k["kid"] for k in services.keyring.jwks(now=0)["keys"]]
    assert first in kids and second in kids


def test_clients_create_list_delete(run: Any) -> None:
    edge = run("clients", "create", "--metadata",
               '{"client_name":"chat","grant_types":'
               '["urn:ietf:params:oauth:grant-type:token-exchange"]}', "--trusted-edge")
    assert edge["attributes"] == {"trusted_edge": True}
    assert edge["client_secret"]
    agent = run("clients", "create", "--metadata", AGENT_METADATA,
                "--allowed-platform", "crm", "--allowed-action", "read")
    assert agent["attributes"] == {"allowed_platforms": ["crm"], "allowed_actions": ["read"]}
    listed = {c["client_id"] for c in run("clients", "list")}
    assert {edge["client_id"], agent["client_id"]} <= listed
    # The secret is shown once; the listing never carries it.
    assert edge["client_secret"] not in json.dumps(run("clients", "list"))
    assert run("clients", "delete", agent["client_id"]) == {"deleted": agent["client_id"]}
    assert agent["client_id"] not in {c["client_id"] for c in run("clients", "list")}


def test_clients_create_rejects_bad_metadata(run: Any) -> None:
    from authserver.errors import InvalidClientMetadataError

    with pytest.raises(InvalidClientMetadataError):
        run("clients", "create", "--metadata", '{"grant_types":["password"]}')


def test_users_create_local_list_and_deprovision(run: Any) -> None:
    user = run("users", "create-local", "alice", "--password", "correct horse",
               "--name", "Alice")
    assert run("users", "list")[0]["active"] is True
    result = run("users", "deprovision", user["id"])
    assert result["user_id"] == user["id"]
    assert run("users", "list")[0]["active"] is False
    events = run("audit", "tail", "-n", "5")
    assert events[-1]["event"] == "deprovision"
    assert run("audit", "verify")["ok"] is True


def test_audit_verify_fails_on_tampering(run: Any, tmp_path: Path) -> None:
    import sqlite3

    user = run("users", "create-local", "bob", "--password", "pw")
    run("users", "deprovision", user["id"])
    with sqlite3.connect(tmp_path / "authserver.db") as conn:
        conn.execute("UPDATE audit_events SET outcome = 'allowed'")
    result = run("audit", "verify", code=1)
    assert result["ok"] is False and result["first_bad_seq"] == 1


def test_kms_rotate_rewraps_signing_keys(run: Any, tmp_path: Path) -> None:
    from authserver.app import build_services
    from authserver.config import Settings

    run("db", "upgrade")
    run("keys", "rotate")
    new_kek = tmp_path / "kek-2.key"
    result = run("kms", "rotate", "--new-kek-file", str(new_kek))
    assert result["signing_keys_rewrapped"] >= 1
    # With only the new KEK, the server can still sign.
    services = build_services(Settings.load({"data_dir": str(tmp_path),
                                             "kek_file": str(new_kek)}))
    token = services.keyring.sign({"sub": "x"}, typ="at+jwt")
    assert services.keyring.verify(token, typ="at+jwt", now=0)["sub"] == "x"
