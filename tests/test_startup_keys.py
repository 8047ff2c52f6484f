"""An instance that could not serve refuses to start, naming what is wrong (issue 13, item 2):
a missing KEK file over a database that already holds keys (never a silently created new KEK),
a different KEK, a KEK file that is not base64 or not 32 bytes, and a SECRET_KEY that differs
from the one the database was first started with.

On SQLite and PostgreSQL; each instance has its own data dir, as separate hosts would.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import pytest

from authserver.app import build_services
from authserver.config import ConfigError, Settings
from authserver.kms import KEKError, LocalKMS

NOW = 1_800_000_000


def settings(tmp_path: Path, database_url: str, name: str, **overrides: Any) -> Settings:
    data = {
        "data_dir": str(tmp_path / name),
        "database_url": database_url,
        "kek_file": str(tmp_path / "kek.key"),
        "secret_key": "s" * 40,
        **overrides,
    }
    return Settings.load(data)


def start(s: Settings) -> Any:
    services = build_services(s, clock=lambda: NOW)
    services.db.engine.dispose()
    return services


def test_first_start_creates_the_kek_and_a_restart_uses_it(tmp_path: Path,
                                                           database_url: str) -> None:
    first = start(settings(tmp_path, database_url, "a"))
    assert (tmp_path / "kek.key").exists()
    second = start(settings(tmp_path, database_url, "b"))
    assert second.kms.key_id == first.kms.key_id


def test_missing_kek_over_existing_keys_refuses_to_start(tmp_path: Path,
                                                         database_url: str) -> None:
    start(settings(tmp_path, database_url, "a"))
    missing = tmp_path / "elsewhere" / "kek.key"
    with pytest.raises(KEKError) as caught:
        start(settings(tmp_path, database_url, "b", kek_file=str(missing)))
    assert str(missing) in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert not missing.exists()  # never a silently created new KEK


def test_different_kek_refuses_to_start(tmp_path: Path, database_url: str) -> None:
    start(settings(tmp_path, database_url, "a"))
    other = tmp_path / "other.key"
    other.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(KEKError) as caught:
        start(settings(tmp_path, database_url, "b", kek_file=str(other)))
    assert str(other) in str(caught.value)
    assert "does not open" in str(caught.value)


def test_kek_rotation_in_progress_still_starts(tmp_path: Path, database_url: str) -> None:
    # Keys still wrapped by the old KEK, the new one configured, the old one listed.
    start(settings(tmp_path, database_url, "a"))
    new = tmp_path / "new.key"
    LocalKMS(new, create=True)
    start(settings(tmp_path, database_url, "b", kek_file=str(new),
                   previous_kek_files=(str(tmp_path / "kek.key"),)))


def test_missing_previous_kek_file_refuses_to_start(tmp_path: Path, database_url: str) -> None:
    missing = tmp_path / "old.key"
    with pytest.raises(KEKError) as caught:
        start(settings(tmp_path, database_url, "a", previous_kek_files=(str(missing),)))
    assert str(missing) in str(caught.value)
    assert not missing.exists()


def test_kek_file_not_base64_names_the_file(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "kek.key"
    bad.write_text("this is not base64!")
    with pytest.raises(KEKError) as caught:
        start(settings(tmp_path, database_url, "a"))
    assert str(bad) in str(caught.value)
    assert "base64" in str(caught.value)


def test_kek_file_of_the_wrong_length_names_the_file(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "kek.key"
    bad.write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(KEKError) as caught:
        start(settings(tmp_path, database_url, "a"))
    assert str(bad) in str(caught.value)
    assert "32" in str(caught.value)


def test_kek_error_is_a_configuration_error() -> None:
    # The CLI prints configuration errors as one line, without a traceback.
    assert issubclass(KEKError, ConfigError)


def test_different_secret_key_refuses_to_start(tmp_path: Path, database_url: str) -> None:
    start(settings(tmp_path, database_url, "a", secret_key="a" * 40))
    with pytest.raises(ConfigError) as caught:
        start(settings(tmp_path, database_url, "b", secret_key="b" * 40))
    message = str(caught.value)
    assert "secret_key" in message.lower()
    assert "a" * 40 not in message and "b" * 40 not in message


def test_same_secret_key_starts_again(tmp_path: Path, database_url: str) -> None:
    start(settings(tmp_path, database_url, "a", secret_key="a" * 40))
    start(settings(tmp_path, database_url, "b", secret_key="a" * 40))


def test_generated_secret_key_of_another_data_dir_refuses_to_start(
    tmp_path: Path, database_url: str,
) -> None:
    # No SECRET_KEY set: each data dir generates its own, so a second host on the same
    # database would sign nonces and sessions the first cannot check.
    start(settings(tmp_path, database_url, "a", secret_key=""))
    with pytest.raises(ConfigError):
        start(settings(tmp_path, database_url, "b", secret_key=""))
