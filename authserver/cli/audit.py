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
    """Check every shard's hash chain and the anchors; exit 1 if any record was changed,
    removed or reordered, or a shard lost records an anchor vouched for."""
    from authserver.audit import AuditLog

    with existing_database(load_settings()).session() as session:
        result = AuditLog().verify(session)
    print_json({"ok": result.ok, "count": result.count, "first_bad_seq": result.first_bad_seq,
                "reason": result.reason, "shard": result.shard,
                "shards": [{"shard": r.shard, "ok": r.ok, "count": r.count,
                            "head_seq": r.head_seq, "first_bad_seq": r.first_bad_seq,
                            "reason": r.reason, "anchored_seq": r.anchored_seq}
                           for r in result.shards]})
    if not result.ok:
        sys.exit(1)


@audit.command("anchor")
def audit_anchor() -> None:
    """Record every shard's head in the anchor chain (run from cron: truncating a shard's
    newest records is detected up to its last anchor)."""
    import time

    from authserver.audit import AuditLog

    with existing_database(load_settings()).session() as session:
        row = AuditLog().anchor(session, now=int(time.time()))
        print_json({"anchor_seq": row.shard_seq, "shards": row.values["detail"]["shards"]})


@audit.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=int,
              help="How many events.")
def audit_tail(count: int) -> None:
    """The most recent audit events, newest last."""
    from authserver.audit import AuditLog, event_as_dict

    with existing_database(load_settings()).session() as session:
        events = AuditLog().tail(session, count)
        print_json([event_as_dict(e) for e in events])
