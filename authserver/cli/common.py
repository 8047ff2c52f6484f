"""What every command shares: the settings (a bad one is a one-line error, no traceback),
the services, the database for read-only commands, and JSON output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from authserver.config import ConfigError, Settings


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """The settings, or a one-line error naming the bad one (no traceback)."""
    try:
        return Settings.load(overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def load_services(settings: Settings | None = None) -> Any:
    from authserver.app import build_services

    return build_services(settings or load_settings())


def existing_database(settings: Settings) -> Any:
    """The configured database for a read-only command: never created, never migrated."""
    from authserver.db import Database

    url = settings.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.split("sqlite:///", 1)[1])
        if not path.exists():
            raise click.ClickException(
                f"no database at {path} (nothing to read yet; `authserver db upgrade` "
                "creates it)")
    return Database(url)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
