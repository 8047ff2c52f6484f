"""`authserver resources …`: resource servers (RFC 8707 `resource`)."""

from __future__ import annotations

import click

from authserver.cli.common import existing_database, load_services, load_settings, print_json


@click.group()
def resources() -> None:
    """Resource servers (APIs, MCP servers) tokens may be issued for (RFC 8707 `resource`).

    Stored in the database: a change takes effect on every instance at once, without a
    restart. `AUTHSERVER_RESOURCES` (a static list) still works alongside."""


@resources.command("add")
@click.argument("uri")
@click.option("--name", required=True, help="Display name.")
@click.option("--scope", "scopes", multiple=True,
              help="A scope tokens for it may carry (repeatable; none: any supported scope).")
@click.option("--accepts", "token_types", multiple=True, default=("dpop", "bearer"),
              type=click.Choice(["dpop", "bearer"]), show_default=True,
              help="Token kinds it accepts (repeatable): dpop = DPoP-bound only, bearer = "
                   "unbound only, both = either.")
@click.option("--introspection", is_flag=True,
              help="Also create a client that may introspect its tokens (secret shown once).")
def resources_add(uri: str, name: str, scopes: tuple[str, ...], token_types: tuple[str, ...],
                  introspection: bool) -> None:
    """Register the resource URI (stored normalised: RFC 3986 §6, one trailing / ignored)."""
    from authserver import resource_servers

    services = load_services()
    try:
        with services.db.session() as session:
            reg = resource_servers.add(
                session, uri=uri, name=name, scopes=scopes, token_types=token_types,
                introspection=introspection, issuer=services.settings.issuer,
                supported_scopes=services.settings.scopes)
            body = resource_servers.as_dict(reg.resource)
    except resource_servers.ResourceServerError as e:
        raise click.ClickException(str(e)) from e
    if reg.client_secret:
        body["client_secret"] = reg.client_secret
    print_json(body)


@resources.command("list")
def resources_list() -> None:
    """Every registered resource server (never a secret)."""
    from authserver import resource_servers

    with existing_database(load_settings()).session() as session:
        print_json([resource_servers.as_dict(r) for r in resource_servers.list_all(session)])


@resources.command("remove")
@click.argument("uri")
def resources_remove(uri: str) -> None:
    """Remove a resource server and its introspection client: new token requests for it are
    `invalid_target` at once."""
    from authserver import resource_servers

    services = load_services()
    try:
        with services.db.session() as session:
            row = resource_servers.remove(session, uri)
            removed = row.uri
    except LookupError:
        raise click.ClickException(f"no resource {uri}") from None
    print_json({"removed": removed})
