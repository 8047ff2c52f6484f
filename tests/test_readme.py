"""The README and its guides are true: commands exist and run, code examples work as written.

A code block marked `<!-- readme-example: NAME -->` (README.md) or `<!-- example: NAME -->`
(the guides in docs/) is run by a test here; `test_every_marked_example_is_run` keeps it so.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import stat
import textwrap
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


GUIDES = ("docs/edge.md", "docs/platforms.md", "docs/policies.md", "docs/operating.md",
          "docs/user-pages.md")
_MARKER = r"<!-- (?:readme-)?example: ([a-z0-9-]+) -->"


def example(name: str, doc: str = "README.md", lang: str = "python") -> str:
    """The code of the block marked `name` in `doc` (indented blocks in lists are dedented)."""
    text = README if doc == "README.md" else (ROOT / doc).read_text()
    match = re.search(rf"<!-- (?:readme-)?example: {name} -->\n( *)```{lang}\n(.*?)\n\1```",
                      text, re.S)
    assert match, f"{doc} example {name!r} ({lang}) not found"
    return textwrap.dedent(match.group(2)) + "\n"


def run_example(name: str, doc: str = "README.md", **names: Any) -> tuple[dict[str, Any], str]:
    """Execute a Python example with `names` defined; returns its namespace and its output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(example(name, doc), names)
    return names, out.getvalue()


def test_every_marked_example_is_run() -> None:
    source = Path(__file__).read_text()
    for doc in ("README.md", *GUIDES):
        names = re.findall(_MARKER, (ROOT / doc).read_text())
        assert names or doc == "README.md", f"{doc} has no runnable example"
        for name in names:
            assert f'"{name}"' in source, f"{doc} example {name!r} is run by no test"


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


def test_mcp_server_example_is_the_example_file() -> None:
    source = (ROOT / "examples" / "mcp_server" / "server.py").read_text()
    assert example("mcp-server") in source


def test_mcp_server_register_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    import json

    section = README.split("## Protecting an MCP server\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block
    [command] = [c for c in re.split(r"\n(?=\S)", block.group(1).replace("\\\n", " "))
                 if c.startswith("authserver ")]
    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    result = CliRunner().invoke(cli, shlex.split(command)[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["attributes"]["resources"] == [
        "https://mcp.example.com/mcp"]


def test_mcp_server_example_serves_the_sdk_client(stack: Stack,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's MCP server, served here, and the `mcp` SDK's OAuth client against it."""
    import anyio
    from mcp.client.auth import OAuthClientProvider

    from tests.mcp_helpers import (
        Browser,
        MemoryStorage,
        client_metadata,
        loopback_socket,
        register_resource,
        serving,
        whoami,
    )

    sock = loopback_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    monkeypatch.setenv("AUTHSERVER_ISSUER", stack.issuer)
    monkeypatch.setenv("MCP_RESOURCE", url)
    names, _ = run_example("mcp-server")
    register_resource(stack, url)
    browser = Browser(stack.browser("alice"))
    provider = OAuthClientProvider(url, client_metadata("none"), MemoryStorage(),
                                   browser.redirect_handler, browser.callback_handler)
    with serving(names["app"], sock):
        identity = anyio.run(whoami, url, provider)
    assert identity["sub"] == stack.user_id("alice")


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


# --- docs/edge.md: from the user's sign-in to the agent's assertion ---------------------------


def doc_commands(doc: str, name: str) -> list[list[str]]:
    """The `authserver ...` commands of a marked bash block (a command may span lines)."""
    lines = [line for line in example(name, doc, "bash").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    commands = re.split(r"\n(?=authserver )", "\n".join(lines))
    return [shlex.split(command.split("  #", 1)[0]) for command in commands]


def test_edge_guide_registration_commands_run(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    created = []
    for args in doc_commands("docs/edge.md", "register-edge-and-agent"):
        assert args[0] == "authserver"
        result = CliRunner().invoke(cli, args[1:], catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        created.append(json.loads(result.output))
    edge, agent = created
    assert edge["attributes"]["trusted_edge"] is True
    assert "client_credentials" in agent["grant_types"]
    assert agent["attributes"]["allowed_platforms"] == ["crm"]


def test_edge_guide_mints_the_assertion_the_readme_agent_uses(stack: Stack) -> None:
    """docs/edge.md end to end: the agent names itself with its client_credentials token, the
    edge mints, and the README's agent example reads the deal with that assertion."""
    stack.signed_in_and_connected("alice")
    agent_id, agent_secret = stack.register(
        {"client_name": "sales agent", "token_endpoint_auth_method": "client_secret_basic",
         "grant_types": [GRANT_TOKEN_EXCHANGE, "client_credentials"]},
        {"allowed_platforms": ["crm"], "allowed_actions": ["read"]})
    names, _ = run_example("agent-names-itself", "docs/edge.md", ISSUER=stack.issuer,
                           AGENT_ID=agent_id, AGENT_SECRET=agent_secret)
    names, _ = run_example("edge-mint", "docs/edge.md", **names, EDGE_ID=stack.edge_id,
                           EDGE_SECRET=stack.edge_secret, id_token=stack.idp_id_token("alice"))
    _, out = run_example("agent", ISSUER=stack.issuer, AGENT_ID=agent_id,
                         AGENT_SECRET=agent_secret, dpop_key=names["dpop_key"],
                         assertion=names["assertion"])
    assert out.strip() == "200 Acme Corp renewal"


def test_edge_guide_signed_actor_token_mints_too(stack: Stack) -> None:
    stack.signed_in_and_connected("alice")
    names, _ = run_example("agent-signs-actor-token", "docs/edge.md", ISSUER=stack.issuer,
                           AGENT_ID=stack.agent.client_id, AGENT_KEY=stack.agent.private_jwk)
    names, _ = run_example("edge-mint", "docs/edge.md", **names, EDGE_ID=stack.edge_id,
                           EDGE_SECRET=stack.edge_secret, id_token=stack.idp_id_token("alice"))
    exchange = stack.agent_exchange(names["assertion"], names["dpop_key"])
    assert exchange.status_code == 200, exchange.text


# --- docs/platforms.md ---------------------------------------------------------------------------


def _platform_tables(name: str) -> dict[str, Any]:
    import tomllib

    return dict(tomllib.loads(example(name, "docs/platforms.md", "toml"))["platforms"])


def test_platform_guide_examples_pass_platforms_check(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    config = tmp_path / "authserver.toml"
    config.write_text(example("generic-platform", "docs/platforms.md", "toml")
                      + example("profiled-platform", "docs/platforms.md", "toml"))
    monkeypatch.setenv("AUTHSERVER_CONFIG", str(config))
    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path / "data"))
    for name in ("crm", "hubspot"):
        result = CliRunner().invoke(cli, ["platforms", "check", name], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"platform": name, "ok": True, "findings": []}
    keys = set(_platform_tables("generic-platform")["crm"])
    assert keys == {"profile", "display_name", "authorize_url", "token_url", "revocation_url",
                    "api_base_url", "client_id", "client_secret", "scopes", "refresh_margin",
                    "extra_authorize_params", "profile_overrides", "resources"}


def test_platform_guide_generic_example_connects_and_reads(stack: Stack,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The generic example, pointed at the test CRM, is what the broker and gateway run."""
    from authserver.broker.profiles import Platform

    running = stack.settings["platforms"]["crm"]
    crm_base = running["token_url"].removesuffix("/oauth/token")
    table = _platform_tables("generic-platform")["crm"]
    table = {**table, "client_id": running["client_id"], "client_secret": running["client_secret"],
             **{k: v.replace("https://crm.example.com", crm_base) for k, v in table.items()
                if isinstance(v, str) and v.startswith("https://crm.example.com")}}
    platform = Platform.from_settings("crm", table)
    assert platform.refresh_margin == 60 and platform.extra_authorize_params == {
        "prompt": "consent"}
    monkeypatch.setitem(stack.services.platforms, "crm", platform)
    stack.signed_in_and_connected("alice")
    assertion, key = stack.edge_mint("alice")
    exchange = stack.agent_exchange(assertion, key)
    assert exchange.status_code == 200, exchange.text
    deal = stack.gateway(exchange.json()["access_token"], key, "GET", "crm/deals/acme-123")
    assert (deal.status_code, deal.json()["name"]) == (200, "Acme Corp renewal")


# --- docs/policies.md ----------------------------------------------------------------------------


def test_policy_guide_step_up_recipe(tmp_path: Path) -> None:
    """The recipe, done as the guide says on a copy of the shipped policies: the new case is
    STEP_UP by confirm-crm-write, and the check names exactly the cases the guide lists."""
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "crm.cedar").write_text(example("confirm-crm-write", "docs/policies.md", "cedar"))
    (policies / "cases" / "STEP_UP" / "crm-update-needs-confirmation.json").write_text(
        example("crm-update-case", "docs/policies.md", "json"))
    # The check reports the cases the guide lists, with their new decisions; update them so.
    import json

    _, out = run_example("check-policy-cases", "docs/policies.md", POLICY_DIR=str(policies))
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    guide = (ROOT / "docs" / "policies.md").read_text()
    assert failures and all(f"   {line}\n" in guide for line in failures), out
    assert "ok   STEP_UP/crm-update-needs-confirmation step_up ['confirm-crm-write']" in out
    for line in failures:
        _, where, outcome, ids = line.split(" ", 3)
        old = policies / "cases" / f"{where}.json"
        case = json.loads(old.read_text())
        case["expect"]["policy_ids"] = json.loads(ids.replace("'", '"'))
        old.unlink()
        new_dir = {"step_up": "STEP_UP", "allow": "ALLOW", "deny": "DENY"}[outcome]
        (policies / "cases" / new_dir / old.name).write_text(json.dumps(case))
    _, out = run_example("check-policy-cases", "docs/policies.md", POLICY_DIR=str(policies))
    assert out.splitlines()[-1] == "0 failed", out
    # Approved, the same intent is allowed.
    from authserver.policy import PolicyEngine, policy_request_from_case

    case = json.loads(example("crm-update-case", "docs/policies.md", "json"))
    case["request"]["approved"] = True
    assert PolicyEngine.load(policies).decide(policy_request_from_case(case)).outcome == "allow"


def test_policy_guide_default_allows_a_one_record_update_without_approval() -> None:
    import json

    from authserver.policy import PolicyEngine, policy_request_from_case

    case = json.loads(example("crm-update-case", "docs/policies.md", "json"))
    decision = PolicyEngine.load(ROOT / "policies").decide(policy_request_from_case(case))
    assert (decision.outcome, list(decision.policy_ids)) == (
        "allow", ["permit-write-within-mandate"])


# --- docs/operating.md and docs/user-pages.md ---------------------------------------------------


def test_operating_guide_finds_and_deprovisions_a_user(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHSERVER_CONFIG", raising=False)
    runner = CliRunner()
    created = runner.invoke(cli, ["users", "create-local", "carol", "--password", "pw",
                                  "--email", "carol@example.com"])
    assert created.exit_code == 0, created.output
    listing, deprovision = doc_commands("docs/operating.md", "deprovision")
    listed = runner.invoke(cli, listing[1:], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    [carol] = [u for u in json.loads(listed.output) if u["email"] == "carol@example.com"]
    assert carol["id"].startswith("usr_") and carol["active"] is True
    args = [carol["id"] if a == "USER_ID" else a for a in deprovision]
    result = runner.invoke(cli, args[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["user_id"] == carol["id"]
    listed = runner.invoke(cli, listing[1:], catch_exceptions=False)
    assert [u["active"] for u in json.loads(listed.output) if u["id"] == carol["id"]] == [False]


def test_operating_guide_claim_map_reads_the_idps_role_claim() -> None:
    import tomllib

    from authserver.identity.federation import IdPConfig
    from authserver.identity.users import mapped_attributes

    table = tomllib.loads(example("claim-map", "docs/operating.md", "toml"))["idps"]["corp"]
    config = IdPConfig.from_settings("corp", table)
    claims = {"email": "a@example.com", "role": "sales", "groups": ["emea"], "org": "acme"}
    attributes = mapped_attributes(config, claims)
    assert (attributes["roles"], attributes["groups"], attributes["tenant"]) == (
        ["sales"], ["emea"], "acme")
    # Without the map, `roles` is read and `role` ignored.
    default = IdPConfig.from_settings("corp", {k: v for k, v in table.items()
                                               if k != "claim_map"})
    assert mapped_attributes(default, claims)["roles"] == []


def test_user_pages_guide_signs_in_and_connects(stack: Stack) -> None:
    from tests.stack import IDP_NAME

    assert IDP_NAME == "corp"
    _, out = run_example("browser", "docs/user-pages.md", ISSUER=stack.issuer,
                         USERNAME="alice")
    assert out.split() == ["/connections", "/connections", "200"]
    assert stack.user_id("alice")  # signed in: the user exists
    from authserver.broker.connections import user_connections

    with stack.services.db.session() as session:
        assert [c.platform for c in user_connections(session, stack.user_id("alice"))] == ["crm"]
