"""`authserver audit …`: the hash-chained audit trail."""

from __future__ import annotations

import sys

import click

from authserver.cli.common import existing_database, load_settings, print_json


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the hash chain; exit 1 if any record was changed, removed or reordered."""
    from authserver.audit import AuditLog

    with existing_database(load_settings()).session() as session:
        result = AuditLog().verify(session)
    print_json({"ok": result.ok, "count": result.count, "first_bad_seq": result.first_bad_seq,
               "reason": result.reason})
    if not result.ok:
        sys.exit(1)


@audit.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=int,
              help="How many events.")
def audit_tail(count: int) -> None:
    """The most recent audit events, newest last."""
    from authserver.audit import AuditLog, event_as_dict

    with existing_database(load_settings()).session() as session:
        events = AuditLog().tail(session, count)
        print_json([event_as_dict(e) for e in events])
