"""`authserver platforms …`: checking a downstream platform's configuration."""

from __future__ import annotations

import sys

import click

from authserver.cli.common import load_settings, print_json


@click.group()
def platforms() -> None:
    """Downstream platforms the broker connects users to."""


@platforms.command("check")
@click.argument("name")
@click.option("--metadata-url", default=None,
              help="Also fetch this RFC 8414 metadata document and compare (network).")
def platforms_check(name: str, metadata_url: str | None) -> None:
    """Report configuration of platform NAME that its vendor would reject (exit 1 if any)."""
    from authserver.broker.check import check_platform
    from authserver.config import ConfigError

    try:
        settings = load_settings()
    except ConfigError as e:
        print_json({"platform": name, "ok": False, "findings": [str(e)]})
        sys.exit(1)
    mapping = settings.platforms.get(name)
    if mapping is None:
        print_json({"platform": name, "ok": False,
                   "findings": [f"no [platforms.{name}] table is configured"]})
        sys.exit(1)
    findings = check_platform(name, mapping, metadata_url=metadata_url)
    print_json({"platform": name, "ok": not findings, "findings": findings})
    sys.exit(1 if findings else 0)
