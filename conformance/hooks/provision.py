"""Plumbing for scripts/conformance-stack: the authserver config file, the agent's key, the
hooks' state file, and a browser-less platform connection (HTTP_CONTRACT "Connections").

    python -m conformance.hooks.provision config    --cast C --issuer I --data-dir D \
        --database-url U --redis-url R --redis-key-prefix P --out CONFIG.toml --secrets S.json
    python -m conformance.hooks.provision agent-key --out KEY.json        (prints client metadata)
    python -m conformance.hooks.provision state     --cast C --issuer I --edge E.json \
        --agent A.json --agent-key KEY.json --local-user NAME --local-password PW --out STATE
    python -m conformance.hooks.provision connect   --state STATE --platform crm

Every file holding a secret is written mode 0600.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from typing import Any
from urllib.parse import urlsplit

import requests
from joserfc.jwk import ECKey

from authserver.testing.settings import crm_platform, projects_platform
from conformance.hooks.common import (
    HTTP_TIMEOUT,
    HookError,
    csrf_from,
    load_json,
    write_private_json,
)

IDP_USER = "alice"  # a user the test IdP and both test platforms know
#: Client registrations per address and hour for the suite's stack.
REGISTER_LIMIT = 500


def platforms(cast: dict[str, Any]) -> dict[str, Any]:
    """The CRM and Taskboard as authserver platforms (Platform.from_settings keys)."""
    crm, projects = cast["crm"], cast["projects"]
    return {
        "crm": crm_platform(crm["url"], crm["client_secret"], client_id=crm["client_id"]),
        "projects": projects_platform(projects["url"], projects["client_secret"],
                                      revocation=False, client_id=projects["client_id"]),
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the values we write
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(doc: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """A minimal TOML writer: scalars and lists first, then each sub-table."""
    lines = []
    if path:
        lines.append("[" + ".".join(json.dumps(p) for p in path) + "]")
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items()
              if not isinstance(v, dict)]
    out = "\n".join(lines) + "\n"
    for k, v in doc.items():
        if isinstance(v, dict):
            out += "\n" + to_toml(v, (*path, k))
    return out


def cmd_config(args: argparse.Namespace) -> None:
    cast = load_json(args.cast)
    idp = cast["idp"]
    tokens = {"registration_token": secrets.token_urlsafe(32),
              "admin_token": secrets.token_urlsafe(32)}
    config = {
        "issuer": args.issuer, "data_dir": args.data_dir, "database_url": args.database_url,
        "redis_url": args.redis_url, "redis_key_prefix": args.redis_key_prefix,
        "secret_key": secrets.token_urlsafe(48), "auto_migrate": False, **tokens,
        "idps": {idp["name"]: {"issuer": idp["issuer"], "client_id": idp["client_id"],
                               "client_secret": idp["client_secret"],
                               "scopes": ["openid", "email", "profile"],
                               "trusted_audiences": [idp["edge_client_id"]],
                               "default_tenant": "acme"}},
        "platforms": platforms(cast),
        # The suite registers a few dozen clients, all from the host's one address: the
        # default /register budget (20 an hour per address) is production policy, not a
        # conformance rule, and would turn later checks into skips.
        "rate_limits": {"register": {"limit": REGISTER_LIMIT, "window": 3600}},
    }
    text = to_toml(config)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    write_private_json(args.secrets, tokens)


def cmd_agent_key(args: argparse.Namespace) -> None:
    key = ECKey.generate_key("P-256")
    kid = key.thumbprint()
    write_private_json(args.out, dict(key.as_dict(private=True), kid=kid, alg="ES256"))
    public = dict(key.as_dict(private=False), kid=kid, alg="ES256", use="sig")
    # The agent authenticates with a secret (the suite's --client-id) and signs its actor
    # tokens with this key (edge mint).
    print(json.dumps({"client_name": "conformance agent",
                      "token_endpoint_auth_method": "client_secret_basic",
                      "grant_types": ["client_credentials",
                                      "urn:ietf:params:oauth:grant-type:token-exchange"],
                      "jwks": {"keys": [public]}}))


def cmd_state(args: argparse.Namespace) -> None:
    cast, edge, agent = load_json(args.cast), load_json(args.edge), load_json(args.agent)
    write_private_json(args.out, {
        "issuer": args.issuer,
        "idp": cast["idp"],
        "idp_user": IDP_USER,
        "edge": {"client_id": edge["client_id"], "client_secret": edge["client_secret"]},
        "agent": {"client_id": agent["client_id"], "client_secret": agent["client_secret"],
                  "private_jwk": load_json(args.agent_key)},
        "local_user": {"username": args.local_user, "password": args.local_password},
    })


def cmd_connect(args: argparse.Namespace) -> None:
    """Sign the IdP user in at authserver (login_hint) and connect one platform."""
    state = load_json(args.state)
    issuer, http = state["issuer"], requests.Session()
    page = http.get(issuer + "/login", timeout=HTTP_TIMEOUT)
    resp = http.post(f"{issuer}/login/{state['idp']['name']}", data={
        "csrf_token": csrf_from(page.text), "next": "/connections",
        "login_hint": state["idp_user"]}, timeout=HTTP_TIMEOUT)
    if resp.status_code != 200 or urlsplit(resp.url).path != "/connections":
        raise HookError(f"sign-in ended at {urlsplit(resp.url).path} ({resp.status_code})")
    resp = http.post(f"{issuer}/connections/{args.platform}/connect", data={
        "csrf_token": csrf_from(resp.text), "login_hint": state["idp_user"]},
        timeout=HTTP_TIMEOUT)
    if resp.status_code != 200 or urlsplit(resp.url).path != "/connections":
        raise HookError(f"connecting {args.platform} ended at {urlsplit(resp.url).path} "
                        f"({resp.status_code})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    for name in ("cast", "issuer", "data-dir", "database-url", "redis-url",
                 "redis-key-prefix", "out", "secrets"):
        c.add_argument(f"--{name}", required=True)
    k = sub.add_parser("agent-key")
    k.add_argument("--out", required=True)
    s = sub.add_parser("state")
    for name in ("cast", "issuer", "edge", "agent", "agent-key", "local-user",
                 "local-password", "out"):
        s.add_argument(f"--{name}", required=True)
    n = sub.add_parser("connect")
    n.add_argument("--state", required=True)
    n.add_argument("--platform", required=True)
    args = p.parse_args(argv)
    try:
        {"config": cmd_config, "agent-key": cmd_agent_key, "state": cmd_state,
         "connect": cmd_connect}[args.cmd](args)
    except (HookError, requests.RequestException) as e:
        print(f"provision {args.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
