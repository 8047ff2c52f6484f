"""Every family of keys the shared store holds, in one place, with one hashing rule.

A key is `<family>:<part>[:<part>...]`: the family is lower-case kebab-case, parts are joined by
":". The rule for what a part may show: a user id, a username, a client address, an OAuth
`state`, a session id or an approval id is never written in clear; it is `hashed()` (SHA-256,
hex), so a store dump or a MONITOR reveals no person and no usable value, and no ":" in an id
can make two keys collide. What is ours and public stays readable: platform names (validated
names), client ids (percent-encoded) and the `jti` of a token we signed.

`FAMILIES` names each family, its owner and its lifetime. The builders below are the only
places these keys are spelled; a few owners still spell theirs (`SPELLED_BY_OWNER`), with the
same prefixes (tests/test_store_keys.py holds them to it). A family's owner may add a suffix
to a built key for the same entry's parts (a rate window's index, a connect state's `:used`
marker). The Redis store prefixes every key with its namespace, and spells its lock and
fencing-counter keys with `lock()` and `fence()`. Keys one Redis script touches together carry
one `{…}` hash tag (Redis Cluster hashes only it, so they share a slot): a rate budget's
windows, read and written in one script, are `rl:…:{<subject>}:<index>`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple
from urllib.parse import quote


class KeyFamily(NamedTuple):
    owner: str
    lifetime: str


FAMILIES: dict[str, KeyFamily] = {
    "approval-poll": KeyFamily("approvals.check_poll_rate", "2 x the poll interval"),
    "approval-lock": KeyFamily("approvals (one card per intent, the pending cap)", "a lock, 5 s"),
    "connect-state": KeyFamily("broker.connect (the connect flow's state)", "10 minutes"),
    "force-refresh": KeyFamily("broker.refresh (forced refreshes bounded)", "seconds"),
    "refresh-lock": KeyFamily("broker.records (the connection lock: refresh, reconnect)",
                              "a lock"),
    "refresh-pending": KeyFamily("broker.refresh (refreshed tokens, sealed, the database "
                                 "could not store)", "until stored, at most 1 day"),
    "conn-epoch": KeyFamily("broker.revoke (disconnect kills capability tokens)", "30 days"),
    "capability-writes": KeyFamily("gateway (a capability token's write budget)", "its lifetime"),
    "rl": KeyFamily("ratelimit (sliding windows; the subject is the hash tag)", "2 x the window"),
    "session": KeyFamily("sessions (server-side browser sessions)", "SESSION_TTL"),
    "session-gen": KeyFamily("sessions (sign out everywhere)", "none"),
    "dpop": KeyFamily("dpop (DPOP-12 proof replay, `dpop:jti:`)", "the proof window"),
    "client-assertion": KeyFamily("clients (private_key_jwt replay)", "the assertion's exp"),
    "oidc-nonce": KeyFamily("identity.login (ID token nonce, one use)", "the login"),
    "idp-subject-token": KeyFamily("identity.federation (edge mint, one use)", "the token's exp"),
    "idp-id-jag": KeyFamily("identity.federation (ID-JAG, one use)", "the grant's exp"),
    "registry-gen": KeyFamily("client_cache (clients and resource servers changed: one "
                              "random value per change)", "none (absent: nothing cached holds)"),
    "user-epoch": KeyFamily("identity.users (deprovisioning)", "none (the database is the truth)"),
    "ssf-set": KeyFamily("ssf (a pushed SET's `jti`, one use)", "the SET's `iat` window"),
    "lock": KeyFamily("store.redis (a named lock; the name is a family key)", "its timeout"),
    "fence": KeyFamily("store.redis (a named lock's fencing counter)", "none"),
}

#: Families whose owner still builds its keys itself (modules other work is changing); their
#: prefixes are checked against this registry by tests/test_store_keys.py.
SPELLED_BY_OWNER: dict[str, str] = {
    "dpop:jti:": "authserver.dpop.REPLAY_KEY_PREFIX",
    # `client_assertion()` below is the same key; client authentication is being moved.
    "client-assertion:": "authserver.client_auth (inline)",
}


def hashed(value: str) -> str:
    """The one hashing rule for a key part: SHA-256 of the UTF-8 text, hex."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _client(client_id: str) -> str:
    return quote(client_id, safe="")


def approval_poll(approval_id: str, window: int) -> str:
    return f"approval-poll:{hashed(approval_id)}:{window}"


def approval_lock(user_id: str, agent_id: str) -> str:
    return f"approval-lock:{hashed(user_id)}:{_client(agent_id)}"


def connect_state(state: str) -> str:
    return f"connect-state:{hashed(state)}"


def force_refresh(user_id: str, platform: str) -> str:
    return f"force-refresh:{hashed(user_id)}:{platform}"


def refresh_lock(user_id: str, platform: str) -> str:
    return f"refresh-lock:{hashed(user_id)}:{platform}"


def refresh_pending(user_id: str, platform: str) -> str:
    return f"refresh-pending:{hashed(user_id)}:{platform}"


def connection_epoch(user_id: str, platform: str) -> str:
    return f"conn-epoch:{hashed(user_id)}:{platform}"


def capability_writes(jti: str) -> str:
    return f"capability-writes:{jti}"


def rate_request(name: str, subject: str) -> str:
    """A front-door budget (`name`) of a username, a client address or a client id.

    The rate keys end in a `{…}` hash tag: a budget's windows (the limiter appends `:<index>`)
    share a Redis Cluster slot, so one script spends this window and reads the last."""
    return f"rl:{name}:{{{hashed(subject)}}}"


def rate_user(budget: str, user_id: str) -> str:
    return f"rl:user:{budget}:{{{hashed(user_id)}}}"


def rate_agent(agent_id: str) -> str:
    # `_client` percent-encodes "{" and "}": an id cannot end the hash tag early.
    return f"rl:agent:{{{_client(agent_id)}}}"


def session(sid: str) -> str:
    return f"session:{hashed(sid)}"


def session_generation(user_id: str) -> str:
    return f"session-gen:{hashed(user_id)}"


def ssf_set(issuer: str, jti: str) -> str:
    """A SET already received from `issuer` (RFC 8417 §2.2: `jti` is unique per issuer)."""
    return f"ssf-set:{hashed(json.dumps([issuer, jti]))}"


def user_epoch(user_id: str) -> str:
    """A user's revocation epoch (authserver.identity.users)."""
    return f"user-epoch:{hashed(user_id)}"


def registry_generation() -> str:
    """The one generation of the clients and resource servers (authserver.client_cache): a new
    random value after every change to either table, so an instance's cached snapshots hold
    only while it is unchanged."""
    return "registry-gen:all"


def oidc_nonce(nonce: str) -> str:
    """An ID token `nonce` already used for a login (OIDC Core §15.5.2)."""
    return f"oidc-nonce:{hashed(nonce)}"


def idp_subject_token(iss: Any, jti: str | None, signed_part: str) -> str:
    """An IdP token spent as a subject token: by (`iss`, `jti`), or without a `jti` by its
    signed part (header and payload: a malleable signature must not make it new)."""
    return f"idp-subject-token:{hashed(json.dumps([iss, jti]) if jti else signed_part)}"


def idp_id_jag(iss: Any, jti: Any) -> str:
    """An ID-JAG spent at the jwt-bearer grant (RFC 7523 §3 item 7: `iss` + `jti`)."""
    return f"idp-id-jag:{hashed(json.dumps([iss, jti]))}"


def client_assertion(client_id: str, jti: Any) -> str:
    """A private_key_jwt assertion spent (JWTB-05), by (client, `jti`)."""
    return f"client-assertion:{hashed(json.dumps([client_id, jti]))}"


def lock(name: str) -> str:
    return f"lock:{name}"


def fence(name: str) -> str:
    return f"fence:{name}"
