"""The README is true: its commands exist and run, and its code examples work as written."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from requests_oauth2client import ClientSecretBasic, OAuth2Client
from werkzeug.datastructures import Headers

from authserver.cli import main as cli
from tests.conftest import REDIS_URL, delete_prefixed
from tests.stack import (
    ALL_ACTIONS,
    GRANT_TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    Stack,
    mandate,
    stack,
)

FIXTURES = (stack,)
ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def example(name: str) -> str:
    match = re.search(rf"<!-- readme-example: {name} -->\n```python\n(.*?)```", README, re.S)
    assert match, f"README example {name!r} not found"
    return match.group(1)


def section_commands(heading: str) -> list[str]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()
            if line.strip() and not line.startswith("#")]


def test_the_two_commands_come_first_and_exist() -> None:
    first = section_commands_top()
    assert first == ["./scripts/demo", "./scripts/test"]
    for command in first:
        mode = (ROOT / command).stat().st_mode
        assert mode & stat.S_IXUSR, f"{command} is not executable"


def section_commands_top() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command() -> None:
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_operations_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    runner = CliRunner()
    created = runner.invoke(cli, ["users", "create-local", "alice", "--password", "pw"])
    assert created.exit_code == 0, created.output
    user_id = re.search(r'"id": "([^"]+)"', created.output).group(1)  # type: ignore[union-attr]
    commands = section_commands("Operations")
    assert len(commands) >= 8
    for command in commands:
        args = shlex.split(command.replace("USER_ID", user_id))
        assert args[0] == "authserver"
        result = runner.invoke(cli, args[1:], catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)


def test_agent_example_reads_the_deal_through_the_gateway(stack: Stack) -> None:
    stack.signed_in_and_connected("alice")
    agent_id, agent_secret = stack.register(
        {"client_name": "readme agent", "token_endpoint_auth_method": "client_secret_basic",
         "grant_types": [GRANT_TOKEN_EXCHANGE, "client_credentials"]},
        {"allowed_platforms": ["crm"], "allowed_actions": list(ALL_ACTIONS)})
    dpop_key = stack.dpop_key()
    # The edge names the agent by a token the agent got for itself, bound to its key.
    own = OAuth2Client(stack.issuer + "/token", auth=ClientSecretBasic(agent_id, agent_secret),
                       testing=True).client_credentials(dpop_key=dpop_key)
    minted = stack.edge_mint_response(
        stack.idp_id_token("alice"), mandate(), actor_token=str(own.access_token),
        actor_token_type=TT_ACCESS_TOKEN, dpop_jkt=str(dpop_key.dpop_jkt))
    assert minted.status_code == 200, minted.text

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(example("agent"), {"ISSUER": stack.issuer, "AGENT_ID": agent_id,
                                "AGENT_SECRET": agent_secret, "dpop_key": dpop_key,
                                "assertion": minted.json()["access_token"]})
    assert out.getvalue().strip() == "200 Acme Corp renewal"


def test_resource_server_example_verifies_a_capability_token(stack: Stack) -> None:
    stack.signed_in_and_connected("alice")
    assertion, key = stack.edge_mint("alice")
    exchange = stack.agent_exchange(assertion, key)
    assert exchange.status_code == 200, exchange.text
    token = exchange.json()["access_token"]
    prefix = f"readme:{uuid.uuid4().hex}:"
    code = (example("resource-server")
            .replace("https://auth.example.com", stack.issuer)
            .replace("https://mcp.example.com", f"{stack.issuer}/gateway/crm")
            .replace("redis://127.0.0.1:6379/0", REDIS_URL)
            .replace('prefix="mcp:"', f'prefix="{prefix}"'))
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    url = f"{stack.issuer}/gateway/crm/deals/acme-123"
    import base64
    import hashlib

    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    try:
        headers = Headers({"Authorization": f"DPoP {token}",
                           "DPoP": stack.dpop_proof(key, "GET", url, ath=ath)})
        claims = namespace["authenticate"]("GET", url, headers)
        assert claims["sub"] == stack.user_id("alice") and claims["cnf"]["jkt"] == key.dpop_jkt
        # The same proof again is a replay: refused with the RFC 9449 challenge.
        with pytest.raises(PermissionError) as refused:
            namespace["authenticate"]("GET", url, headers)
        status, challenge = refused.value.args
        assert status == 401 and 'error="invalid_dpop_proof"' in challenge["WWW-Authenticate"]
    finally:
        delete_prefixed(REDIS_URL, prefix)


def test_every_setting_is_documented() -> None:
    import dataclasses

    from authserver.config import Settings, reference

    internal = {"testing"}  # Flask's test mode, for this test suite only
    missing = [f.name for f in dataclasses.fields(Settings) if f.name not in internal
               and f"`{f.name.upper()}`" not in README and f"[{f.name}" not in README]
    assert missing == []
    # The table is the reference generated from the settings' one definition, row for row
    # (regenerate it with `authserver config reference`).
    table = README.split("| key (`AUTHSERVER_…`) |", 1)[1].split("\n\n", 1)[0]
    assert "| key (`AUTHSERVER_…`) |" + table + "\n" == reference()


def test_platform_example_configures_and_declares_methods_on_every_route() -> None:
    import tomllib

    from authserver.broker.profiles import Platform, allowed_methods

    block = re.search(r"Structured settings live in the TOML file:\n\n```toml\n(.*?)```",
                      README, re.S)
    assert block, "README TOML example not found"
    platforms = tomllib.loads(block.group(1))["platforms"]
    assert platforms
    for name, table in platforms.items():
        platform = Platform.from_settings(name, table)
        assert platform.resource_map
        assert all(route.methods is not None for route in platform.resource_map.values())
    crm = Platform.from_settings("crm", platforms["crm"])
    assert allowed_methods(crm, "deal:006x", "update") == {"PATCH"}
    assert allowed_methods(crm, "deal:006x", "delete") == {"DELETE"}
