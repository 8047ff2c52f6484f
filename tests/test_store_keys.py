"""The store's key families (authserver/store/keys.py): one spelling each, one hashing rule."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json

from redis.crc import key_slot

from authserver import clients, dpop
from authserver.identity import federation, login, users
from authserver.store import keys

USER = "usr_alice:with-a-colon"
BUILT = {
    "approval-poll": keys.approval_poll("apr_1", 7),
    "approval-lock": keys.approval_lock(USER, "cli_agent"),
    "connect-state": keys.connect_state("state-value"),
    "force-refresh": keys.force_refresh(USER, "crm"),
    "refresh-lock": keys.refresh_lock(USER, "crm"),
    "refresh-pending": keys.refresh_pending(USER, "crm"),
    "conn-epoch": keys.connection_epoch(USER, "crm"),
    "capability-writes": keys.capability_writes("jti-1"),
    "rl": keys.rate_user("write", USER),
    "session": keys.session("s" * 43),
    "session-gen": keys.session_generation(USER),
    "registry-gen": keys.registry_generation(),
    "user-epoch": keys.user_epoch(USER),
    "oidc-nonce": keys.oidc_nonce("nonce-value"),
    "idp-subject-token": keys.idp_subject_token("https://idp.example", "jti-1", "h.p"),
    "idp-id-jag": keys.idp_id_jag("https://idp.example", "jti-1"),
    "client-assertion": keys.client_assertion("cli_a", "jti-1"),
    "ssf-set": keys.ssf_set("https://idp.example", "jti-1"),
    "lock": keys.lock(keys.refresh_lock(USER, "crm")),
    "fence": keys.fence(keys.refresh_lock(USER, "crm")),
}


def test_each_builder_spells_its_registered_family():
    for family, key in BUILT.items():
        assert family in keys.FAMILIES
        assert key.startswith(family + ":"), key
    assert keys.rate_request("login", "alice").startswith("rl:login:")
    assert keys.rate_agent("cli_a:b") == "rl:agent:{cli_a%3Ab}"


def test_user_ids_are_never_written_in_clear():
    digest = hashlib.sha256(USER.encode()).hexdigest()
    for family in ("approval-lock", "force-refresh", "refresh-lock", "refresh-pending",
                   "conn-epoch", "rl", "session-gen", "user-epoch", "lock", "fence"):
        assert USER not in BUILT[family] and digest in BUILT[family], family
    assert "alice" not in keys.rate_request("login", "alice")


def test_families_are_kebab_case_and_distinct():
    for family in keys.FAMILIES:
        assert family == family.lower() and "_" not in family and ":" not in family
    prefixes = {key.split(":")[0] for key in BUILT.values()}
    assert len(prefixes) == len(BUILT)


def test_keys_spelled_by_their_owners_use_registered_prefixes():
    assert dpop.REPLAY_KEY_PREFIX in keys.SPELLED_BY_OWNER
    # Client authentication is moving from clients.py to client_auth.py.
    owner = (importlib.import_module("authserver.client_auth")
             if importlib.util.find_spec("authserver.client_auth") else clients)
    assert '"client-assertion:"' in inspect.getsource(owner) \
        or "keys.client_assertion(" in inspect.getsource(owner)
    for prefix in keys.SPELLED_BY_OWNER:
        assert prefix.split(":")[0] in keys.FAMILIES, prefix


def test_identity_keys_are_built_here_and_keep_their_values():
    """The identity package's keys moved here unchanged (entries written before the move are
    still found), except the user epoch, whose user id is now hashed like every other."""
    for module in (login, users, federation):
        assert '"oidc-nonce:"' not in inspect.getsource(module)
    assert federation.SUBJECT_TOKEN_KEY == "idp-subject-token:"
    assert federation.ID_JAG_KEY == "idp-id-jag:"
    assert users.EPOCH_KEY_PREFIX == "user-epoch:"
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    assert keys.oidc_nonce("n") == "oidc-nonce:" + sha("n")
    ident = json.dumps(["https://idp.example", "j"])
    assert keys.idp_subject_token("https://idp.example", "j", "h.p") == \
        federation.SUBJECT_TOKEN_KEY + sha(ident)
    assert keys.idp_subject_token("https://idp.example", None, "h.p") == \
        federation.SUBJECT_TOKEN_KEY + sha("h.p")
    assert keys.idp_id_jag("https://idp.example", "j") == federation.ID_JAG_KEY + sha(ident)
    assert keys.client_assertion("cli_a", "j") == \
        "client-assertion:" + sha(json.dumps(["cli_a", "j"]))
    assert keys.user_epoch(USER) == users.EPOCH_KEY_PREFIX + sha(USER)


def test_a_rate_budgets_windows_share_one_cluster_slot():
    """authserver.ratelimit spends a window and reads the last in one Redis script: Redis
    Cluster refuses a script whose keys hash to different slots. The subject is the tag."""
    for key in (keys.rate_request("token", "cli_a"), keys.rate_user("write", USER),
                keys.rate_agent("cli_{a}:b"), keys.rate_agent("}{")):
        prefixed = "authserver:" + key
        assert key.count("{") == key.count("}") == 1 and key.endswith("}"), key
        assert key_slot(f"{prefixed}:41".encode()) == key_slot(f"{prefixed}:42".encode())
    # Different subjects are spread over slots, not all in one.
    assert len({key_slot(keys.rate_request("token", f"cli_{i}").encode())
                for i in range(20)}) > 1
