"""The store's key families (authserver/store/keys.py): one spelling each, one hashing rule."""

from __future__ import annotations

import hashlib
import inspect

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
}


def test_each_builder_spells_its_registered_family():
    for family, key in BUILT.items():
        assert family in keys.FAMILIES
        assert key.startswith(family + ":"), key
    assert keys.rate_request("login", "alice").startswith("rl:login:")
    assert keys.rate_agent("cli_a:b") == "rl:agent:cli_a%3Ab"


def test_user_ids_are_never_written_in_clear():
    digest = hashlib.sha256(USER.encode()).hexdigest()
    for family in ("approval-lock", "force-refresh", "refresh-lock", "refresh-pending",
                   "conn-epoch", "rl", "session-gen"):
        assert USER not in BUILT[family] and digest in BUILT[family], family
    assert "alice" not in keys.rate_request("login", "alice")


def test_families_are_kebab_case_and_distinct():
    for family in keys.FAMILIES:
        assert family == family.lower() and "_" not in family and ":" not in family
    prefixes = {key.split(":")[0] for key in BUILT.values()}
    assert len(prefixes) == len(BUILT)


def test_keys_spelled_by_their_owners_use_registered_prefixes():
    assert dpop.REPLAY_KEY_PREFIX in keys.SPELLED_BY_OWNER
    assert federation.SUBJECT_TOKEN_KEY in keys.SPELLED_BY_OWNER
    assert federation.ID_JAG_KEY in keys.SPELLED_BY_OWNER
    assert users.EPOCH_KEY_PREFIX in keys.SPELLED_BY_OWNER
    assert '"oidc-nonce:"' in inspect.getsource(login)
    assert '"client-assertion:"' in inspect.getsource(clients)
    for prefix in keys.SPELLED_BY_OWNER:
        assert prefix.split(":")[0] in keys.FAMILIES, prefix
