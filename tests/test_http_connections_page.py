"""The connections page (issue 12, issue 19): the account at the platform, an Atlassian
grant's sites, and "expires soon" before a refresh token's inactivity limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authserver.models.broker import Connection
from authserver.presentation import EXPIRY_WARNING, expires_soon, grant_expires_at
from tests.conftest import base_settings
from tests.http_helpers import ISSUER, RESOURCE, app, client, signed_in, user_id

FIXTURES = (app, client, signed_in, user_id)
DAY = 86400


@pytest.fixture
def app_config(tmp_path: Any, database_url: str) -> dict[str, Any]:
    return {**base_settings(tmp_path, database_url, "", issuer=ISSUER),
            "resources": (RESOURCE,), "platforms": {
        "jira": {"profile": "atlassian", "display_name": "Jira", "client_id": "c",
                 "client_secret": "s"},
        "crm": {"authorize_url": "http://127.0.0.1:9/a", "token_url": "http://127.0.0.1:9/t",
                "revocation_url": "http://127.0.0.1:9/r", "client_id": "c",
                "client_secret": "s"}}}


def _add(app: Flask, user: str, platform: str, *, obtained: int, **values: Any) -> None:
    services = app.extensions["authserver"]
    with services.db.session() as session:
        session.add(Connection(id="con_" + platform, user_id=user, platform=platform,
                               status="active", access_token_ciphertext="sealed-a",
                               refresh_token_ciphertext="sealed-r", access_expires_at=None,
                               access_obtained_at=obtained, scope="read", generation=1,
                               created_at=obtained, updated_at=obtained, **values))


def _card(html: str, title: str) -> str:
    start = html.index(f">{title}")
    return html[start:html.index("</article>", start)]


def test_account_sites_and_expires_soon_are_shown(app: Flask, client: FlaskClient,
                                                 signed_in: str, clock: Any) -> None:
    now = int(clock())
    sites = [{"id": "1111-aaaa", "name": "Acme <b>Dev</b>", "url": "https://acme.atlassian.net"},
             {"id": "2222-bbbb", "name": "Beta", "url": ""}]
    _add(app, signed_in, "jira", obtained=now - 80 * DAY, account_label="alice@acme.test",
         sites=json.dumps(sites))
    _add(app, signed_in, "crm", obtained=now - 80 * DAY)
    html = client.get("/connections").get_data(as_text=True)
    jira = _card(html, "Jira")
    assert "alice@acme.test" in jira
    assert "Acme &lt;b&gt;Dev&lt;/b&gt;" in jira and "https://acme.atlassian.net" in jira
    assert "2222-bbbb" in jira and "Beta" in jira
    assert "Expires soon" in jira and "keepalive" in jira
    crm = _card(html, "crm")  # generic: no inactivity limit known, no account reported
    assert "not reported by the platform" in crm and "Expires soon" not in crm


def test_a_recently_refreshed_connection_does_not_expire_soon(app: Flask, client: FlaskClient,
                                                              signed_in: str,
                                                              clock: Any) -> None:
    _add(app, signed_in, "jira", obtained=int(clock()) - DAY)
    jira = _card(client.get("/connections").get_data(as_text=True), "Jira")
    assert "Expires soon" not in jira and "Expires if unused" in jira
    with app.extensions["authserver"].db.session() as session:  # last refreshed 76 days ago
        session.query(Connection).update(
            {"access_obtained_at": int(clock()) - (90 * DAY - EXPIRY_WARNING) - 60})
    jira = _card(client.get("/connections").get_data(as_text=True), "Jira")
    assert "Expires soon" in jira


def test_grant_expiry_rules() -> None:
    assert grant_expires_at(90 * DAY, True, 1000) == 1000 + 90 * DAY
    assert grant_expires_at(None, True, 1000) is None
    assert grant_expires_at(90 * DAY, False, 1000) is None  # nothing to lose
    assert not expires_soon(None, 0)
    assert expires_soon(100 + EXPIRY_WARNING, 100)
    assert not expires_soon(101 + EXPIRY_WARNING, 100)
