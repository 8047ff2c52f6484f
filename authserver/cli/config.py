"""`authserver config …`: checking the settings and printing their reference."""

from __future__ import annotations

import click

from authserver.cli.common import load_settings, print_json


@click.group()
def config() -> None:
    """The settings (AUTHSERVER_* variables and the AUTHSERVER_CONFIG file)."""


@config.command("check")
def config_check() -> None:
    """Check every setting and print the effective configuration, secrets masked.

    Exits 1 with a message naming the setting (AUTHSERVER_X, or the key in the TOML file) if
    any is unknown, of the wrong type or out of range. Reads nothing else, writes nothing.
    """
    print_json(load_settings().effective())


@config.command("reference")
def config_reference() -> None:
    """Print the reference of every setting (Markdown, the README's table)."""
    from authserver.config import reference

    click.echo(reference(), nl=False)
