"""`authserver keys …`: the signing keys."""

from __future__ import annotations

import time

import click

from authserver.cli.common import load_services, print_json


@click.group()
def keys() -> None:
    """Signing keys."""


@keys.command("rotate")
@click.option("--overlap", default=None, type=int,
              help="Seconds the retired key stays published (default: KEY_OVERLAP).")
def keys_rotate(overlap: int | None) -> None:
    """Publish a new signing key; the old one verifies until its tokens expire."""
    from authserver.keys import KEY_OVERLAP

    services = load_services()
    with services.db.session() as session:
        kid = services.keyring.rotate(session, int(time.time()),
                                      overlap=KEY_OVERLAP if overlap is None else overlap)
    print_json({"active_kid": kid})
