"""The broker vault: envelope encryption bound to (user, platform, kind), and KEK rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from authserver.broker.vault import Vault, rewrap_all
from authserver.db import Database
from authserver.kms import EnvelopeIntegrityError, LocalKMS
from authserver.models import Base
from authserver.models.broker import Connection
from tests.broker_fake import add_user

TOKEN = "plat-access-token-1234567890"


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKMS(tmp_path / "kek.key"))


def test_seal_open_round_trip(vault):
    sealed = vault.seal("u1", "crm", "access_token", TOKEN)
    assert vault.open("u1", "crm", "access_token", sealed) == TOKEN


def test_sealed_envelope_holds_no_plaintext(vault):
    assert TOKEN not in vault.seal("u1", "crm", "access_token", TOKEN)


def test_open_as_another_user_rejected(vault):
    sealed = vault.seal("u1", "crm", "access_token", TOKEN)
    with pytest.raises(EnvelopeIntegrityError):
        vault.open("u2", "crm", "access_token", sealed)


def test_open_for_another_platform_rejected(vault):
    sealed = vault.seal("u1", "crm", "access_token", TOKEN)
    with pytest.raises(EnvelopeIntegrityError):
        vault.open("u1", "projects", "access_token", sealed)


def test_open_as_another_kind_rejected(vault):
    sealed = vault.seal("u1", "crm", "refresh_token", TOKEN)
    with pytest.raises(EnvelopeIntegrityError):
        vault.open("u1", "crm", "access_token", sealed)


def test_pipe_in_platform_name_refused_so_aad_fields_cannot_shift(vault):
    sealed = vault.seal("u1|crm", "x", "access_token", TOKEN)
    with pytest.raises(ValueError):
        vault.open("u1", "crm|x", "access_token", sealed)


def test_open_tampered_envelope_rejected(vault):
    sealed = vault.seal("u1", "crm", "access_token", TOKEN)
    with pytest.raises(EnvelopeIntegrityError):
        vault.open("u1", "crm", "access_token", sealed.replace('"ct":"', '"ct":"AAAA'))


def test_open_under_unknown_kek_rejected(vault, tmp_path):
    other = Vault(LocalKMS(tmp_path / "other.key"))
    with pytest.raises(EnvelopeIntegrityError):
        other.open("u1", "crm", "access_token", vault.seal("u1", "crm", "access_token", TOKEN))


def test_unknown_kind_refused(vault):
    with pytest.raises(ValueError):
        vault.seal("u1", "crm", "id_token", TOKEN)


def test_rewrap_all_moves_connections_to_the_new_kek(database_url, tmp_path, now):
    old_kms, new_kms = LocalKMS(tmp_path / "old.key"), LocalKMS(tmp_path / "new.key")
    old = Vault(old_kms)
    db = Database(database_url)
    Base.metadata.create_all(db.engine)
    add_user(db, "u1", now)
    with db.session() as session:
        session.add(Connection(
            id="con_1", user_id="u1", platform="crm", status="active",
            access_token_ciphertext=old.seal("u1", "crm", "access_token", TOKEN),
            refresh_token_ciphertext=old.seal("u1", "crm", "refresh_token", "rt-1"),
            scope="", generation=1, created_at=now, updated_at=now))
    with db.session() as session:
        assert rewrap_all(session, old_kms, new_kms) == 1
    with db.session() as session:
        assert rewrap_all(session, old_kms, new_kms) == 0  # resumable: nothing left to do
        row = session.scalars(select(Connection)).one()
    new_only = Vault(new_kms)
    assert new_only.open("u1", "crm", "access_token", row.access_token_ciphertext) == TOKEN
    assert row.refresh_token_ciphertext is not None
    assert new_only.open("u1", "crm", "refresh_token", row.refresh_token_ciphertext) == "rt-1"
    with pytest.raises(EnvelopeIntegrityError):
        old.open("u1", "crm", "access_token", row.access_token_ciphertext)
    db.engine.dispose()


def test_vault_with_previous_kek_opens_old_envelopes(tmp_path):
    old_kms, new_kms = LocalKMS(tmp_path / "old.key"), LocalKMS(tmp_path / "new.key")
    sealed = Vault(old_kms).seal("u1", "crm", "access_token", TOKEN)
    assert Vault(new_kms, previous=[old_kms]).open("u1", "crm", "access_token", sealed) == TOKEN
