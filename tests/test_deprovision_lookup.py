"""Deprovisioning names the user by our id, the IdP's `sub` or the e-mail address (issue 15,
item 4): `authserver users deprovision` and `POST /admin/users/<ref>/deprovision`. A reference
that fits more than one user is refused, never guessed."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask import Flask

from authserver.identity.users import AmbiguousUserError, resolve_user
from authserver.models import User
from tests.http_helpers import app, app_config, redis_url  # noqa: F401
from tests.test_cli import run  # noqa: F401

NOW = 1_800_000_000


@pytest.fixture
def users(app: Flask) -> dict[str, str]:
    rows = [("https://idp-a.example", "00uA1", "dana@acme.example"),
            ("https://idp-b.example", "00uB1", "Erin@Acme.example"),
            ("https://idp-a.example", "shared-sub", "f1@acme.example"),
            ("https://idp-b.example", "shared-sub", "f2@acme.example"),
            ("https://idp-a.example", "00uA9", "twin@acme.example"),
            ("https://idp-b.example", "00uB9", "twin@acme.example")]
    ids: dict[str, str] = {}
    with app.extensions["authserver"].db.session() as session:
        for iss, sub, email in rows:
            user_id = "usr_" + secrets.token_hex(8)
            session.add(User(id=user_id, idp_issuer=iss, idp_subject=sub, email=email,
                             created_at=NOW))
            ids[f"{iss}|{sub}"] = user_id
    return ids


def resolve(app: Flask, ref: str) -> str:
    with app.extensions["authserver"].db.session() as session:
        return resolve_user(session, ref)


def test_by_internal_id(app: Flask, users: dict[str, str]) -> None:
    user_id = users["https://idp-a.example|00uA1"]
    assert resolve(app, user_id) == user_id


def test_by_subject(app: Flask, users: dict[str, str]) -> None:
    assert resolve(app, "00uB1") == users["https://idp-b.example|00uB1"]


def test_by_email_case_insensitive(app: Flask, users: dict[str, str]) -> None:
    assert resolve(app, "erin@acme.EXAMPLE") == users["https://idp-b.example|00uB1"]


def test_unknown(app: Flask, users: dict[str, str]) -> None:
    with pytest.raises(LookupError):
        resolve(app, "nobody@acme.example")


@pytest.mark.parametrize("ref", ["shared-sub", "twin@acme.example"])
def test_ambiguous(app: Flask, users: dict[str, str], ref: str) -> None:
    with pytest.raises(AmbiguousUserError) as info:
        resolve(app, ref)
    assert len(info.value.candidates) == 2


@pytest.fixture
def admin_app(app_config: dict[str, Any], clock: Any) -> Any:
    from tests.conftest import running_app

    with running_app({**app_config, "admin_token": "t" * 32}, clock) as application:
        yield application


def test_admin_api_takes_email_and_refuses_ambiguity(admin_app: Any) -> None:
    with admin_app.extensions["authserver"].db.session() as session:
        for sub, email in (("s1", "gil@acme.example"), ("s2", "hal@acme.example"),
                           ("s3", "hal@acme.example")):
            session.add(User(id="usr_" + sub, idp_issuer="https://idp.example",
                             idp_subject=sub, email=email, created_at=NOW))
    client = admin_app.test_client()
    auth = {"Authorization": "Bearer " + "t" * 32}
    resp = client.post("/admin/users/gil@acme.example/deprovision", headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["user_id"] == "usr_s1"
    resp = client.post("/admin/users/hal@acme.example/deprovision", headers=auth)
    assert resp.status_code == 409
    assert resp.get_json()["error"] == "ambiguous_user"
    assert sorted(resp.get_json()["candidates"]) == ["usr_s2", "usr_s3"]
    assert client.post("/admin/users/nobody/deprovision", headers=auth).status_code == 404


def test_cli_takes_sub_and_email(run: Any) -> None:
    alice = run("users", "create-local", "alice", "--password", "pw",
                "--email", "alice@acme.example")
    bob = run("users", "create-local", "bob", "--password", "pw")
    assert run("users", "deprovision", "alice@acme.example")["user_id"] == alice["id"]
    assert run("users", "deprovision", "bob")["user_id"] == bob["id"]  # local: sub = username
    run("users", "deprovision", "nobody@acme.example", code=1)  # "no user matches" on stderr
