"""`authserver …` — serve, demo, db upgrade, keys rotate, kms rotate, clients, resources, users,
audit, config, platforms, connections, ssf, conformance.

Every command reads the same settings as the server (AUTHSERVER_* variables, AUTHSERVER_CONFIG)
and prints JSON where it prints data, so scripts can consume it. One module per command group
(`authserver/cli/<group>.py`, what they share in `common.py`); this one is the `authserver`
group that holds them (the console script `authserver.cli:main`).
"""

from __future__ import annotations

import click

from authserver.cli.audit import audit
from authserver.cli.clients import clients
from authserver.cli.config import config
from authserver.cli.connections import connections
from authserver.cli.db import db
from authserver.cli.keys import keys
from authserver.cli.kms import kms
from authserver.cli.platforms import platforms
from authserver.cli.resources import resources
from authserver.cli.serve import serve
from authserver.cli.suites import conformance, demo
from authserver.cli.users import users
from authserver.ssf_cli import ssf

#: One help style everywhere: `-h` and `--help` (subcommands inherit it).
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """authserver: an OAuth authorization server for agents acting on behalf of one user."""


for _command in (serve, db, keys, kms, clients, resources, users, audit, config, platforms,
                 connections, conformance, demo, ssf):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
