"""`authserver connections …`: users' platform connections (the broker's grants)."""

from __future__ import annotations

import time

import click

from authserver.cli.common import load_services, print_json


@click.group()
def connections() -> None:
    """Users' connections to the platforms (the broker's grants)."""


@connections.command("keepalive")
@click.option("--margin-days", type=click.IntRange(0, 89), default=14, show_default=True,
              help="Refresh this many days before a refresh token would die unused.")
def connections_keepalive(margin_days: int) -> None:
    """Refresh idle connections before the platform's inactivity limit kills their refresh
    token (Microsoft, Atlassian: 90 days). Run it daily from cron; prints the counts."""
    from authserver.broker.keepalive import keep_alive

    services = load_services()
    print_json(keep_alive(services.db, services.store, services.vault, services.platforms,
                         issuer=services.settings.issuer, now=int(time.time()),
                         margin=margin_days * 86400))
