"""JIT users and deprovisioning (authserver.identity.users) on SQLite and PostgreSQL.

Claims come from a real sign-in through the test IdP where the mapping end to end matters;
elsewhere they are the verified-claims dict that federation hands over.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from authserver.db import Database
from authserver.identity import IdentityError, IdPConfig, OIDCProvider
from authserver.identity.users import (
    deprovision_user,
    is_token_current,
    provision_user,
    user_epoch,
    user_id_for,
)
from authserver.models import Base, User
from authserver.store import Store
from authserver.store import keys as store_keys
from authserver.store.memory import MemoryStore
from authserver.testing.idp import start_idp

ISSUER = "https://login.acme.example"
CONFIG = IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                   default_tenant="acme")
REDIRECT_URI = "http://127.0.0.1:8000/login/callback"


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {"iss": ISSUER, "sub": "00u1alice", "aud": "rp", "email": "alice@acme.example",
              "name": "Alice Adams", "groups": ["sales"], "roles": ["rep"], "tenant": "acme"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    yield database
    database.engine.dispose()


# --- stable ids ------------------------------------------------------------------------------


def test_user_id_is_stable_and_not_the_email() -> None:
    first = user_id_for(CONFIG, _claims())
    assert first == user_id_for(CONFIG, _claims(email="new@acme.example", name="A. Adams"))
    assert first.startswith("usr_") and len(first) == 30
    assert "alice" not in first


def test_user_id_differs_per_issuer() -> None:
    other = IdPConfig(name="other", issuer="https://login.globex.example", client_id="rp",
                      client_secret="s")
    assert user_id_for(CONFIG, _claims()) != user_id_for(
        other, _claims(iss="https://login.globex.example"))


def test_user_id_claims_from_another_issuer() -> None:
    with pytest.raises(IdentityError) as e:
        user_id_for(CONFIG, _claims(iss="https://evil.example"))
    assert e.value.debug == "claims are not from this IdP"


# --- JIT provisioning --------------------------------------------------------------------------


def test_jit_user_from_a_real_sign_in(db: Database, now: int) -> None:
    idp, base_url, thread = start_idp(clock=lambda: now)
    try:
        idp.register_client("rp", "rp-secret", [REDIRECT_URI])
        config = IdPConfig(name="corp", issuer=base_url, client_id="rp",
                           client_secret="rp-secret", default_tenant="acme")
        provider = OIDCProvider(config, MemoryStore())
        start = provider.begin_login(redirect_uri=REDIRECT_URI, now=now, login_hint="carol")
        location = requests.get(start.url, allow_redirects=False, timeout=5).headers["Location"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        code = provider.verify_callback(params, expected_state=start.state, now=now)
        claims = provider.complete_login(code=code, redirect_uri=REDIRECT_URI,
                                         expected_nonce=start.nonce,
                                         code_verifier=start.code_verifier, now=now)
    finally:
        thread.stop()
    with db.session() as session:
        user = provision_user(session, config, claims, now=now)
        user_id = user.id
    with db.session() as session:
        stored = session.get(User, user_id)
        assert stored is not None
        assert (stored.idp_issuer, stored.idp_subject) == (base_url, idp.users["carol"]["sub"])
        assert (stored.email, stored.name) == ("carol@acme.example", "Carol Chen")
        assert (stored.groups, stored.roles, stored.tenant) == (["admins", "it"], ["admin"],
                                                                "acme")
        assert (stored.active, stored.tokens_valid_after, stored.created_at) == (True, 0, now)


def test_next_sign_in_updates_attributes(db: Database, now: int) -> None:
    with db.session() as session:
        user_id = provision_user(session, CONFIG, _claims(), now=now).id
    with db.session() as session:
        provision_user(session, CONFIG, _claims(email="a.adams@acme.example",
                                                groups=["sales", "emea"], roles=None),
                       now=now + 60)
    with db.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        assert (user.email, user.groups, user.roles) == ("a.adams@acme.example",
                                                         ["emea", "sales"], [])
        assert user.created_at == now
        assert len(session.query(User).all()) == 1


def test_claim_map_reads_the_configured_claim_names(db: Database, now: int) -> None:
    config = IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                       claim_map={"groups": "memberOf", "tenant": "org",
                                  "email": "upn"}, tenants=("default", "globex"))
    claims = _claims(groups=None, tenant=None, email=None, memberOf=["finance"], org="globex",
                     upn="alice@globex.example")
    with db.session() as session:
        user = provision_user(session, config, claims, now=now)
        assert (user.groups, user.tenant, user.email) == (["finance"], "globex",
                                                          "alice@globex.example")


def test_tenant_outside_the_idps_tenants_is_refused(db: Database, now: int) -> None:
    """Issue 20 hardening: with several IdPs, one must not assert another's tenant. By
    default an IdP's users are in its `default_tenant` only."""
    config = IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                       default_tenant="acme")
    with db.session() as session:
        with pytest.raises(IdentityError) as e:
            provision_user(session, config, _claims(tenant="globex"), now=now)
        assert e.value.error == "invalid_request"
        assert e.value.debug == "tenant 'globex' is not bound to idp corp"
        assert session.query(User).count() == 0
        assert provision_user(session, config, _claims(tenant="acme"), now=now).tenant == "acme"


def test_tenants_bound_to_an_idp_in_configuration(db: Database, now: int) -> None:
    config = IdPConfig.from_settings("corp", {
        "issuer": ISSUER, "client_id": "rp", "client_secret": "s", "default_tenant": "acme",
        "tenants": ["acme", "acme-emea"]})
    assert config.tenants == ("acme", "acme-emea")
    with db.session() as session:
        assert provision_user(session, config, _claims(tenant="acme-emea"),
                              now=now).tenant == "acme-emea"
        with pytest.raises(IdentityError):
            provision_user(session, config, _claims(sub="00u2bob", tenant="globex"), now=now)


def test_default_tenant_must_be_one_of_the_idps_tenants() -> None:
    with pytest.raises(ValueError, match="default_tenant"):
        IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                  default_tenant="acme", tenants=("globex",))


def test_missing_tenant_uses_the_default_tenant(db: Database, now: int) -> None:
    config = IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                       default_tenant="acme-default")
    with db.session() as session:
        assert provision_user(session, config, _claims(tenant=None),
                              now=now).tenant == "acme-default"


def test_single_string_group_becomes_a_list(db: Database, now: int) -> None:
    with db.session() as session:
        assert provision_user(session, CONFIG, _claims(groups="sales"), now=now).groups == [
            "sales"]


def test_groups_source_scim_leaves_groups_to_scim(db: Database, now: int) -> None:
    # SCIM Groups membership is the IdP's word: a later token with another groups claim (or
    # none) does not reset what SCIM set.
    config = IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                       default_tenant="acme", scim_token_sha256="0" * 64,
                       groups_source="scim")
    with db.session() as session:
        user = provision_user(session, config, _claims(groups=["sales"]), now=now)
        assert user.groups == []  # a new user: groups arrive through SCIM only
        user.groups = ["engineering"]
        session.flush()
        again = provision_user(session, config, _claims(groups=["sales"]), now=now)
        assert again.groups == ["engineering"]


def test_groups_source_must_be_token_or_scim() -> None:
    with pytest.raises(ValueError, match="groups_source must be token or scim"):
        IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                  groups_source="ldap")


def test_groups_source_scim_needs_scim() -> None:
    with pytest.raises(ValueError, match="needs scim_token_sha256"):
        IdPConfig(name="corp", issuer=ISSUER, client_id="rp", client_secret="s",
                  groups_source="scim")


def test_malformed_groups_claim(db: Database, now: int) -> None:
    with db.session() as session, pytest.raises(IdentityError) as e:
        provision_user(session, CONFIG, _claims(groups=[{"name": "sales"}]), now=now)
    assert e.value.debug == "claim 'groups' is not a list of strings"


def test_overlong_email_claim(db: Database, now: int) -> None:
    with db.session() as session, pytest.raises(IdentityError) as e:
        provision_user(session, CONFIG, _claims(email="a" * 400), now=now)
    assert e.value.debug == "claim 'email' is not a string of at most 320 characters"


def test_deprovisioned_user_cannot_sign_in_again(db: Database, store: Store,
                                                 now: int) -> None:
    with db.session() as session:
        user_id = provision_user(session, CONFIG, _claims(), now=now).id
        deprovision_user(session, store, user_id, now=now + 10)
    with db.session() as session, pytest.raises(IdentityError) as e:
        provision_user(session, CONFIG, _claims(), now=now + 20)
    assert e.value.error == "invalid_request"
    assert e.value.debug == f"user {user_id} is deprovisioned"


# --- deprovisioning and the revocation epoch -------------------------------------------------


def _provisioned(db: Database, now: int) -> str:
    with db.session() as session:
        return provision_user(session, CONFIG, _claims(), now=now).id


def test_deprovision_marks_the_epoch_in_database_and_store(db: Database, store: Store,
                                                           now: int) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        deprovision_user(session, store, user_id, now=now + 100)
    with db.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        assert (user.active, user.tokens_valid_after) == (False, now + 100)
    assert store.get(store_keys.user_epoch(user_id)) == str(now + 100)


def test_token_issued_before_the_epoch_is_not_current(db: Database, store: Store,
                                                      now: int) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        assert is_token_current(session, store, user_id, now + 50)
        deprovision_user(session, store, user_id, now=now + 100)
    with db.session() as session:
        assert not is_token_current(session, store, user_id, now + 50)


def test_token_issued_in_the_epoch_second_is_not_current(db: Database, store: Store,
                                                         now: int) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        deprovision_user(session, store, user_id, now=now + 100)
        assert not is_token_current(session, store, user_id, now + 100)


def test_token_after_the_epoch_of_a_deprovisioned_user_is_not_current(
    db: Database, store: Store, now: int
) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        deprovision_user(session, store, user_id, now=now + 100)
        assert not is_token_current(session, store, user_id, now + 200)


def test_epoch_falls_back_to_the_database(db: Database, store: Store, now: int) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        deprovision_user(session, store, user_id, now=now + 100)
    store.delete(store_keys.user_epoch(user_id))  # e.g. Redis lost its data
    with db.session() as session:
        assert user_epoch(session, store, user_id) == now + 100
        assert not is_token_current(session, store, user_id, now + 50)


def test_store_epoch_is_read_without_the_database(db: Database, store: Store,
                                                  now: int) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        deprovision_user(session, store, user_id, now=now + 100)
    # The row is gone (or unreachable): the store alone still answers for the epoch.
    with db.session() as session:
        session.delete(session.get(User, user_id))
    with db.session() as session:
        assert user_epoch(session, store, user_id) == now + 100


def test_active_user_has_no_epoch(db: Database, store: Store, now: int) -> None:
    user_id = _provisioned(db, now)
    with db.session() as session:
        assert user_epoch(session, store, user_id) == 0
        assert is_token_current(session, store, user_id, now)


def test_unknown_user_token_is_not_current(db: Database, store: Store, now: int) -> None:
    with db.session() as session:
        assert not is_token_current(session, store, "usr_nobody", now)
        with pytest.raises(LookupError):
            user_epoch(session, store, "usr_nobody")


def test_deprovision_unknown_user(db: Database, store: Store, now: int) -> None:
    with db.session() as session, pytest.raises(LookupError):
        deprovision_user(session, store, "usr_nobody", now=now)
    assert store.get(store_keys.user_epoch("usr_nobody")) is None
