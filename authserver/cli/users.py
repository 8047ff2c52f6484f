"""`authserver users …`: people (local accounts, listing, deprovisioning)."""

from __future__ import annotations

import time

import click

from authserver.cli.common import existing_database, load_services, load_settings, print_json


@click.group()
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

    services = load_services()
    with services.db.session() as session:
        user = create_local_user(session, username, password, name=name, email=email,
                                 tenant=tenant, now=int(time.time()))
        print_json({"id": user.id, "username": username})


@users.command("list")
def users_list() -> None:
    """Every user: internal id (`usr_…`), email, name, tenant and whether still active."""
    from sqlalchemy import select

    from authserver.models import User

    with existing_database(load_settings()).session() as session:
        print_json([{"id": u.id, "email": u.email, "name": u.name, "tenant": u.tenant,
                    "active": u.active} for u in session.scalars(select(User))])


@users.command("deprovision")
@click.argument("user")
def users_deprovision(user: str) -> None:
    """The user leaves: every token and assertion dies, downstream grants are revoked.

    USER is our id (`usr_…`), the IdP's `sub`, or the e-mail address; one that fits several
    users is refused (name the internal id then)."""
    from authserver.deprovisioning import deprovision
    from authserver.identity.users import AmbiguousUserError, resolve_user

    services = load_services()
    with services.db.session() as session:
        try:
            user_id = resolve_user(session, user)
        except AmbiguousUserError as e:
            raise click.ClickException(f"{e}: {', '.join(e.candidates)}") from e
        except LookupError as e:
            raise click.ClickException(f"no user matches {user!r}") from e
    result = deprovision(services, user_id, now=int(time.time()), correlation_id=None)
    print_json(result)
