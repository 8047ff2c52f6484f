"""`--subject-token-cmd` hook: a real user assertion from the edge mint (HTTP_CONTRACT "Edge
mint"; RFC 8693 with an OIDC ID token as subject, RFC 9449 §10 `dpop_jkt`).

    python -m conformance.hooks.subject_token --state STATE.json

1. The chat edge signs the test user in at the IdP (OIDC code flow with PKCE and nonce; the
   TEST-ONLY IdP honours `login_hint` without a password) and gets an ID token.
2. A fresh DPoP key is made for the agent; the agent signs an actor_token (its client
   assertion JWT); the edge exchanges ID token + actor_token + dpop_jkt + a mandate for a user
   assertion bound to the agent's key.
3. Prints the fixture JSON the suite reads: subject_token (+ type), the key's private JWK,
   audience (platform), intents allowed / denied / needing approval under the mandate, and the
   gateway path the allowed intent maps to.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import ECKey

from conformance.hooks.common import HTTP_TIMEOUT, HookError, load_json

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
ACTOR_TOKEN_LIFETIME = 60
PLATFORM = "crm"
UNCONNECTED = "projects"  # configured, allowlisted for the agent, never connected by the user
REQUEST = ("What's the latest on the Acme deal? Delete it if it is dead. "
           "And what is on the launch board?")
CHANNEL = "chat"
DEAL = "deal:acme-123"
GATEWAY_PATH = "deals/acme-123"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def intent(action: str, resource: str = DEAL) -> dict[str, Any]:
    return {"action": action, "resource": resource, "count": 1,
            "context": {"request": REQUEST, "channel": CHANNEL, "environment": "conformance"}}


def mandate() -> list[dict[str, Any]]:
    """Part A2: the user asked to read the deal and, if dead, delete it (delete steps up), and
    to look at a board on a platform they have not connected."""
    return [{"type": "agent_mandate",
             "platforms": [{"platform": PLATFORM, "actions": ["read", "delete"],
                            "resources": ["deal:*"], "max_count": 1},
                           {"platform": UNCONNECTED, "actions": ["read"],
                            "resources": ["board:*"], "max_count": 1}],
             "channel": CHANNEL, "request": REQUEST,
             "request_hash": b64url(hashlib.sha256(REQUEST.encode()).digest())}]


def idp_id_token(state: dict[str, Any]) -> str:
    """The edge's own OIDC code flow at the IdP (PKCE S256, state, nonce)."""
    idp = state["idp"]
    discovery = requests.get(idp["issuer"] + "/.well-known/openid-configuration",
                             timeout=HTTP_TIMEOUT).json()
    verifier, st, nonce = (secrets.token_urlsafe(48), secrets.token_urlsafe(12),
                           secrets.token_urlsafe(12))
    query = {"response_type": "code", "client_id": idp["edge_client_id"],
             "redirect_uri": idp["edge_redirect_uri"], "scope": "openid email profile",
             "state": st, "nonce": nonce, "login_hint": state["idp_user"],
             "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
             "code_challenge_method": "S256"}
    resp = requests.get(discovery["authorization_endpoint"] + "?" + urlencode(query),
                        allow_redirects=False, timeout=HTTP_TIMEOUT)
    if resp.status_code not in (302, 303):
        raise HookError(f"IdP authorize answered {resp.status_code}")
    params = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
    if params.get("state") != st or "code" not in params:
        raise HookError(f"IdP redirect without code/state (error={params.get('error')!r})")
    resp = requests.post(discovery["token_endpoint"], data={
        "grant_type": "authorization_code", "code": params["code"],
        "redirect_uri": idp["edge_redirect_uri"], "code_verifier": verifier,
    }, auth=(idp["edge_client_id"], idp["edge_client_secret"]), timeout=HTTP_TIMEOUT)
    body = resp.json()
    if resp.status_code != 200 or "id_token" not in body:
        raise HookError(f"IdP token endpoint answered {resp.status_code} {body.get('error')}")
    return str(body["id_token"])


def actor_token(state: dict[str, Any]) -> str:
    """The agent's client assertion (RFC 7523 §3 claims; aud = issuer)."""
    agent = state["agent"]
    key = ECKey.import_key(agent["private_jwk"])
    now = int(time.time())
    claims = {"iss": agent["client_id"], "sub": agent["client_id"], "aud": state["issuer"],
              "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + ACTOR_TOKEN_LIFETIME}
    return str(jwt.encode({"alg": "ES256", "kid": agent["private_jwk"]["kid"]}, claims, key))


def fixture(state: dict[str, Any]) -> dict[str, Any]:
    dpop_key = ECKey.generate_key("P-256")
    edge = state["edge"]
    resp = requests.post(state["issuer"] + "/token", data={
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": idp_id_token(state), "subject_token_type": TT_ID_TOKEN,
        "actor_token": actor_token(state), "actor_token_type": TT_JWT,
        "dpop_jkt": dpop_key.thumbprint(),
        "authorization_details": json.dumps(mandate(), separators=(",", ":")),
    }, auth=(edge["client_id"], edge["client_secret"]), timeout=HTTP_TIMEOUT)
    body = resp.json()
    if resp.status_code != 200 or "access_token" not in body:
        raise HookError(f"edge mint answered {resp.status_code} {body.get('error')} "
                        f"{body.get('error_description', '')}")
    return {
        "subject_token": body["access_token"],
        "subject_token_type": TT_ACCESS_TOKEN,
        "dpop_private_jwk": dict(dpop_key.as_dict(private=True), alg="ES256"),
        "audience": PLATFORM,
        "intents": {
            "allow": intent("read"),
            # Outside the mandate (update was not asked for): a hard deny (intent_mismatch).
            "deny": intent("update"),
            # Inside the mandate but destructive: the policies ask the user first.
            "approval": intent("delete"),
            # Allowed, but the user has no connection to that platform.
            "unconnected": intent("read", "board:42"),
        },
        "unconnected_audience": UNCONNECTED,
        "gateway_path": GATEWAY_PATH,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", required=True)
    args = p.parse_args(argv)
    try:
        print(json.dumps(fixture(load_json(args.state))))
    except (HookError, requests.RequestException, ValueError) as e:
        print(f"subject-token hook: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
