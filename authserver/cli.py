"""`authserver …` — serve, demo, db upgrade, keys rotate, clients, resources, users, audit,
conformance.

Every command reads the same settings as the server (AUTHSERVER_* variables, AUTHSERVER_CONFIG)
and prints JSON where it prints data, so scripts can consume it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from authserver.config import ConfigError, Settings

#: One help style everywhere: `-h` and `--help` (subcommands inherit it).
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def _settings(overrides: dict[str, Any] | None = None) -> Settings:
    """The settings, or a one-line error naming the bad one (no traceback)."""
    try:
        return Settings.load(overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def _services(settings: Settings | None = None) -> Any:
    from authserver.app import build_services

    return build_services(settings or _settings())


def _existing_database(settings: Settings) -> Any:
    """The configured database for a read-only command: never created, never migrated."""
    from authserver.db import Database

    url = settings.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.split("sqlite:///", 1)[1])
        if not path.exists():
            raise click.ClickException(
                f"no database at {path} (nothing to read yet; `authserver db upgrade` "
                "creates it)")
    return Database(url)


def _print(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """authserver: an OAuth authorization server for agents acting on behalf of one user."""


# --- serve -----------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run a single-process development server (production: gunicorn, see README)."""
    from werkzeug.serving import run_simple

    from authserver import create_app

    settings = _settings({"issuer": f"http://{host}:{port}"} if not _issuer_set() else {})
    app = create_app(settings)
    click.echo(f"authserver on {settings.issuer} (data in {settings.data_dir}/)")
    click.echo(f"  metadata:  {settings.issuer}/.well-known/oauth-authorization-server")
    click.echo("  register a client:")
    click.echo(f"    curl -s -X POST {settings.issuer}/register \\")
    click.echo("      -H 'Content-Type: application/json' \\")
    click.echo("      -d '{\"grant_types\":[\"client_credentials\"]}'")
    from authserver.http.browser import BannerlessRequestHandler

    run_simple(host, port, app, threaded=True, use_reloader=False,
               request_handler=BannerlessRequestHandler)


def _issuer_set() -> bool:
    import os

    return "AUTHSERVER_ISSUER" in os.environ


# --- db, keys --------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the configured database."""
    from authserver.db import Database

    settings = _settings()
    Database(settings.database_url).upgrade()
    click.echo("database is at the latest revision")


@main.group()
def keys() -> None:
    """Signing keys."""


@keys.command("rotate")
@click.option("--overlap", default=None, type=int,
              help="Seconds the retired key stays published (default: KEY_OVERLAP).")
def keys_rotate(overlap: int | None) -> None:
    """Publish a new signing key; the old one verifies until its tokens expire."""
    from authserver.keys import KEY_OVERLAP

    services = _services()
    with services.db.session() as session:
        kid = services.keyring.rotate(session, int(time.time()),
                                      overlap=KEY_OVERLAP if overlap is None else overlap)
    _print({"active_kid": kid})


@main.group()
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

    settings = _settings()
    old, new = LocalKMS(settings.kek_file), LocalKMS(new_kek_file)
    db = Database(settings.database_url)
    with db.session() as session:
        keys = rewrap_signing_keys(session, old, new)
        connections = rewrap_all(session, old, new)
    _print({"kek": new.key_id, "signing_keys_rewrapped": keys,
            "connections_rewrapped": connections})


# --- clients ---------------------------------------------------------------------------------


@main.group()
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

    services = _services()
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
    _print(body)


@clients.command("list")
def clients_list() -> None:
    """Every registered client with its grants and trust attributes (never its secret)."""
    from sqlalchemy import select

    from authserver.models import Client

    with _existing_database(_settings()).session() as session:
        rows = session.scalars(select(Client).order_by(Client.client_id_issued_at))
        _print([{"client_id": c.client_id, "client_name": c.client_metadata.get("client_name"),
                 "token_endpoint_auth_method": c.token_endpoint_auth_method,
                 "grant_types": c.grant_types, "attributes": c.attributes} for c in rows])


@clients.command("delete")
@click.argument("client_id")
def clients_delete(client_id: str) -> None:
    """Delete a client: every token it holds stops working on its next use."""
    from authserver.models import Client

    services = _services()
    with services.db.session() as session:
        client = session.get(Client, client_id)
        if client is None:
            raise click.ClickException(f"no client {client_id}")
        session.delete(client)
    _print({"deleted": client_id})


# --- resources -------------------------------------------------------------------------------


@main.group()
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

    services = _services()
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
    _print(body)


@resources.command("list")
def resources_list() -> None:
    """Every registered resource server (never a secret)."""
    from authserver import resource_servers

    with _existing_database(_settings()).session() as session:
        _print([resource_servers.as_dict(r) for r in resource_servers.list_all(session)])


@resources.command("remove")
@click.argument("uri")
def resources_remove(uri: str) -> None:
    """Remove a resource server and its introspection client: new token requests for it are
    `invalid_target` at once."""
    from authserver import resource_servers

    services = _services()
    try:
        with services.db.session() as session:
            row = resource_servers.remove(session, uri)
            removed = row.uri
    except LookupError:
        raise click.ClickException(f"no resource {uri}") from None
    _print({"removed": removed})


# --- users -----------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """People."""


@users.command("create-local")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, help="Asked for if not given.")
@click.option("--name", default=None, help="Display name.")
@click.option("--email", default=None, help="Email address.")
@click.option("--tenant", default="default", show_default=True, help="The user's tenant.")
def users_create_local(username: str, password: str, name: str | None, email: str | None,
                       tenant: str) -> None:
    """A local account (development and demo; production signs people in at the IdP)."""
    from authserver.local_accounts import create_local_user

    services = _services()
    with services.db.session() as session:
        user = create_local_user(session, username, password, name=name, email=email,
                                 tenant=tenant, now=int(time.time()))
        _print({"id": user.id, "username": username})


@users.command("list")
def users_list() -> None:
    """Every user: internal id (`usr_…`), email, name, tenant and whether still active."""
    from sqlalchemy import select

    from authserver.models import User

    with _existing_database(_settings()).session() as session:
        _print([{"id": u.id, "email": u.email, "name": u.name, "tenant": u.tenant,
                 "active": u.active} for u in session.scalars(select(User))])


@users.command("deprovision")
@click.argument("user")
def users_deprovision(user: str) -> None:
    """The user leaves: every token and assertion dies, downstream grants are revoked.

    USER is our id (`usr_…`), the IdP's `sub`, or the e-mail address; one that fits several
    users is refused (name the internal id then)."""
    from authserver.deprovisioning import deprovision
    from authserver.identity.users import AmbiguousUserError, resolve_user

    services = _services()
    with services.db.session() as session:
        try:
            user_id = resolve_user(session, user)
        except AmbiguousUserError as e:
            raise click.ClickException(f"{e}: {', '.join(e.candidates)}") from e
        except LookupError as e:
            raise click.ClickException(f"no user matches {user!r}") from e
    result = deprovision(services, user_id, now=int(time.time()), correlation_id=None)
    _print(result)


# --- audit -----------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the hash chain; exit 1 if any record was changed, removed or reordered."""
    from authserver.audit import AuditLog

    with _existing_database(_settings()).session() as session:
        result = AuditLog().verify(session)
    _print({"ok": result.ok, "count": result.count, "first_bad_seq": result.first_bad_seq,
            "reason": result.reason})
    if not result.ok:
        sys.exit(1)


@audit.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=int,
              help="How many events.")
def audit_tail(count: int) -> None:
    """The most recent audit events, newest last."""
    from authserver.audit import AuditLog, event_as_dict

    with _existing_database(_settings()).session() as session:
        events = AuditLog().tail(session, count)
        _print([event_as_dict(e) for e in events])


# --- config ----------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """The settings (AUTHSERVER_* variables and the AUTHSERVER_CONFIG file)."""


@config.command("check")
def config_check() -> None:
    """Check every setting and print the effective configuration, secrets masked.

    Exits 1 with a message naming the setting (AUTHSERVER_X, or the key in the TOML file) if
    any is unknown, of the wrong type or out of range. Reads nothing else, writes nothing.
    """
    _print(_settings().effective())


@config.command("reference")
def config_reference() -> None:
    """Print the reference of every setting (Markdown, the README's table)."""
    from authserver.config import reference

    click.echo(reference(), nl=False)


# --- platforms ---------------------------------------------------------------------------------


@main.group()
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
        settings = _settings()
    except ConfigError as e:
        _print({"platform": name, "ok": False, "findings": [str(e)]})
        sys.exit(1)
    mapping = settings.platforms.get(name)
    if mapping is None:
        _print({"platform": name, "ok": False,
                "findings": [f"no [platforms.{name}] table is configured"]})
        sys.exit(1)
    findings = check_platform(name, mapping, metadata_url=metadata_url)
    _print({"platform": name, "ok": not findings, "findings": findings})
    sys.exit(1 if findings else 0)


# --- connections -------------------------------------------------------------------------------


@main.group()
def connections() -> None:
    """Users' connections to the platforms (the broker's grants)."""


@connections.command("keepalive")
@click.option("--margin-days", type=click.IntRange(0, 89), default=14, show_default=True,
              help="Refresh this many days before a refresh token would die unused.")
def connections_keepalive(margin_days: int) -> None:
    """Refresh idle connections before the platform's inactivity limit kills their refresh
    token (Microsoft, Atlassian: 90 days). Run it daily from cron; prints the counts."""
    from authserver.broker.connections import keep_alive

    services = _services()
    _print(keep_alive(services.db, services.store, services.vault, services.platforms,
                      issuer=services.settings.issuer, now=int(time.time()),
                      margin=margin_days * 86400))


# --- conformance, demo -------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def conformance(ctx: click.Context) -> None:
    """Run the black-box conformance suite (same options as `python -m conformance`)."""
    from conformance.__main__ import main as conformance_main

    sys.exit(conformance_main(list(ctx.args)))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Play the on-behalf-of story end to end on embedded defaults (see README)."""
    from authserver.demo import missing_extra

    missing = missing_extra()  # its agent and edge need the `demo` extra
    if missing:
        raise click.ClickException(f"the demo needs {missing}: pip install 'authserver[demo]'")
    from authserver.demo.__main__ import main as demo_main

    sys.exit(demo_main(list(ctx.args)))


if __name__ == "__main__":  # pragma: no cover
    main()
