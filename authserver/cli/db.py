"""`authserver db …`: the database schema (Alembic)."""

from __future__ import annotations

import click

from authserver.cli.common import load_settings


@click.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the configured database."""
    from authserver.db import Database

    settings = load_settings()
    Database(settings.database_url).upgrade()
    click.echo("database is at the latest revision")
