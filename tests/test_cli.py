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


# --- one help style; config check and reference; read-only commands write nothing ---------------


def _commands(group: Any = main, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    import click

    found = [(path, group)]
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            found += _commands(command, (*path, name))
    return found


@pytest.mark.parametrize(("path", "command"), _commands(),
                         ids=[" ".join(path) or "authserver" for path, _ in _commands()])
def test_every_command_has_help_and_answers_dash_h(path: tuple[str, ...], command: Any,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert (command.help or "").strip(), f"`authserver {' '.join(path)}` has no help text"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*path, "-h"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.lower().startswith("usage:"), result.output


@pytest.mark.parametrize("args", [
    ["-h"], ["config", "check"], ["config", "reference"], ["clients", "list"], ["users", "list"],
    ["audit", "verify"], ["audit", "tail"], ["conformance", "--help"]])
def test_read_only_commands_create_no_data_dir(args: list[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTHSERVER_CONFIG", "AUTHSERVER_DATA_DIR", "AUTHSERVER_DATABASE_URL",
                 "AUTHSERVER_KEK_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert not (tmp_path / "var").exists(), (args, result.output)
    assert list(tmp_path.iterdir()) == []
    if args[0] in ("clients", "users", "audit"):  # nothing to read yet: said, not created
        assert result.exit_code == 1 and "no database at" in result.output, result.output
    else:
        assert result.exit_code == 0, result.output


def test_config_check_prints_the_effective_configuration_masked(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_ADMIN_TOKEN", "an-admin-token-value")
    monkeypatch.setenv("AUTHSERVER_REDIS_URL", "redis://:hunter2@redis:6379/0")
    shown = run("config", "check")
    assert shown["admin_token"] == "***"
    assert shown["redis_url"] == "redis://:***@redis:6379/0"
    assert shown["access_token_ttl"] == 600 and shown["local_login"] is True


def _failure(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, result.output
    return result.output.strip()


def test_config_check_fails_naming_the_setting(run: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_ACCESS_TOKEN_TTL", "10m")
    out = _failure("config", "check")
    assert "AUTHSERVER_ACCESS_TOKEN_TTL: must be a whole number of seconds, got '10m'" in out
    assert "Traceback" not in out


def test_every_command_reports_a_bad_setting_without_a_traceback(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_LOCAL_LOGIN", "flase")
    out = _failure("db", "upgrade")
    assert out == "Error: AUTHSERVER_LOCAL_LOGIN: must be true or false, got 'flase'"


def test_config_reference_is_the_generated_markdown(run: Any) -> None:
    from authserver.config import reference

    assert run("config", "reference") == reference().strip()


def test_admin_commands_do_not_warn_about_the_embedded_store(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        run("users", "create-local", "carol", "--password", "pw")
        run("keys", "rotate")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [r.getMessage() for r in records if "embedded store" in r.getMessage()] == []


def test_the_server_warns_about_the_embedded_store_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import authserver.app as app_module

    warnings: list[str] = []
    monkeypatch.setattr(app_module.log, "warning", lambda msg, *a: warnings.append(msg % a))
    monkeypatch.setattr(app_module, "_warned_embedded_store", False, raising=False)
    for _ in range(2):
        app_module.create_app({"data_dir": str(tmp_path), "testing": True})
    assert [w for w in warnings if "embedded store" in w] == [
        "embedded store in use: replay caches, nonces, locks and rate limits are held in this "
        "process only; set AUTHSERVER_REDIS_URL before running more than one process"]
