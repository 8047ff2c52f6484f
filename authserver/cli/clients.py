"""`authserver clients …`: OAuth clients (the admin path)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from authserver.cli.common import existing_database, load_services, load_settings, print_json


@click.group()
def clients() -> None:
    """OAuth clients."""


@clients.command("create")
@click.option("--metadata", "metadata_json", default="{}",
              help="RFC 7591 client metadata as JSON.")
@click.option("--trusted-edge", is_flag=True, help="May mint user assertions (edge exchange).")
@click.option("--executor", is_flag=True, help="May receive users' platform tokens.")
@click.option("--allowed-platform", "allowed_platforms", multiple=True,
              help="Agent allowlist: platforms this client may act on (repeatable).")
@click.option("--allowed-action", "allowed_actions", multiple=True,
              help="Agent allowlist: intent actions this client may declare (repeatable).")
@click.option("--resource", "resources", multiple=True,
              help="Resource servers this client serves (may introspect their tokens).")
@click.option("--dpop-nonce", is_flag=True,
              help="Require server DPoP nonces from this client (with dpop_nonce=per_client).")
def clients_create(metadata_json: str, trusted_edge: bool, executor: bool,
                   allowed_platforms: tuple[str, ...], allowed_actions: tuple[str, ...],
                   resources: tuple[str, ...], dpop_nonce: bool) -> None:
    """Register a client (admin path: may set trust attributes DCR cannot)."""
    from authserver.clients import register_client, registration_response, validate_client_metadata

    services = load_services()
    metadata = validate_client_metadata(json.loads(metadata_json),
                                        scopes=services.settings.scopes)
    attributes: dict[str, Any] = {}
    if trusted_edge:
        attributes["trusted_edge"] = True
    if executor:
        attributes["executor"] = True
    if allowed_platforms:
        attributes["allowed_platforms"] = list(allowed_platforms)
    if allowed_actions:
        attributes["allowed_actions"] = list(allowed_actions)
    if resources:
        attributes["resources"] = list(resources)
    if dpop_nonce:
        attributes["dpop_nonce"] = True
    with services.db.session() as session:
        client, secret = register_client(session, metadata, now=int(time.time()),
                                         attributes=attributes)
        body = registration_response(client, secret)
        body["attributes"] = client.attributes
    print_json(body)


@clients.command("list")
def clients_list() -> None:
    """Every registered client with its grants and trust attributes (never its secret)."""
    from sqlalchemy import select

    from authserver.models import Client

    with existing_database(load_settings()).session() as session:
        rows = session.scalars(select(Client).order_by(Client.client_id_issued_at))
        print_json([{"client_id": c.client_id, "client_name": c.client_metadata.get("client_name"),
                    "token_endpoint_auth_method": c.token_endpoint_auth_method,
                    "grant_types": c.grant_types, "attributes": c.attributes} for c in rows])


@clients.command("delete")
@click.argument("client_id")
def clients_delete(client_id: str) -> None:
    """Delete a client: every token it holds stops working on its next use."""
    from authserver.models import Client

    services = load_services()
    with services.db.session() as session:
        client = session.get(Client, client_id)
        if client is None:
            raise click.ClickException(f"no client {client_id}")
        session.delete(client)
    print_json({"deleted": client_id})
