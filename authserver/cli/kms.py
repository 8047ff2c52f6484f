"""`authserver kms …`: the key-encryption key."""

from __future__ import annotations

import click

from authserver.cli.common import load_settings, print_json


@click.group()
def kms() -> None:
    """The key-encryption key (KEK) that wraps signing keys and downstream tokens."""


@kms.command("rotate")
@click.option("--new-kek-file", required=True, type=click.Path(dir_okay=False),
              help="Created (0600) if it does not exist.")
def kms_rotate(new_kek_file: str) -> None:
    """Re-wrap every signing key and downstream token under a new KEK.

    Then set AUTHSERVER_KEK_FILE to the new file on every instance. While instances restart,
    set AUTHSERVER_PREVIOUS_KEK_FILES to the old file so they can still read old envelopes.
    """
    from authserver.broker.vault import rewrap_all
    from authserver.db import Database
    from authserver.keys import rewrap_signing_keys
    from authserver.kms import LocalKMS

    settings = load_settings()
    old, new = LocalKMS(settings.kek_file), LocalKMS(new_kek_file)
    db = Database(settings.database_url)
    with db.session() as session:
        keys = rewrap_signing_keys(session, old, new)
        connections = rewrap_all(session, old, new)
    print_json({"kek": new.key_id, "signing_keys_rewrapped": keys,
               "connections_rewrapped": connections})
