"""Issue 19: each shipped vendor profile against a fake that behaves as the vendor documents
(tests/vendor_fakes.py). One test (or a few) per quirk; the profile comments cite the pages.

SQLite and the embedded store only: these tests are about the vendors, not the storage.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask, Response, jsonify, request

from authserver.broker import connections, oauth_client
from authserver.broker.connections import (
    disconnect,
    finish_connect,
    force_refresh,
    get_access_token,
    start_connect,
)
from authserver.broker.oauth_client import PlatformRejected, build_authorize_url, revoke
from authserver.broker.profiles import PROFILES, Platform
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import ConnectionRequiredError, TemporarilyUnavailableError
from authserver.gateway_routes import path_matches_intent
from authserver.kms import LocalKMS
from authserver.models import Base
from authserver.models.broker import CONNECTION_NEEDS_RECONNECT, Connection
from authserver.store.memory import MemoryStore
from tests.broker_fake import add_user
from tests.vendor_fakes import VendorFake, authorize_params, serving

USER = "u-alice"
NOW = 1_700_000_000
REDIRECT = "http://127.0.0.1:9/connections/callback"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/vendors.db")
    Base.metadata.create_all(database.engine)
    add_user(database, USER, NOW)
    yield database
    database.engine.dispose()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKMS(tmp_path / "kek.key"))


def _platform(profile: str, base: str, **extra: Any) -> Platform:
    mapping: dict[str, Any] = {"profile": profile, "client_id": "cid", "client_secret": "csecret"}
    mapping.update(extra)
    return Platform.from_settings(profile, mapping)


def _connect(db: Database, store: MemoryStore, vault: Vault, platform: Platform,
             fake: VendorFake, now: int = NOW) -> Connection:
    url = start_connect(store, platform, user_id=USER, session_binding="s1",
                        redirect_uri=REDIRECT, now=now)
    params = authorize_params(url)
    scopes = params.get(platform.profile.scope_param, "")
    code = fake.issue_code(params.get("code_challenge"),
                           tuple(scopes.replace(",", " ").split()))
    return finish_connect(db, store, vault, platform, state=params["state"], code=code,
                          user_id=USER, session_binding="s1", redirect_uri=REDIRECT, now=now)


def _row(db: Database, name: str) -> Connection | None:
    with db.session() as session:
        return session.query(Connection).filter_by(platform=name).one_or_none()


def _refresh(db: Database, store: MemoryStore, vault: Vault, platform: Platform,
             now: int = NOW + 7200) -> str:
    token, _ = get_access_token(db, store, vault, platform, user_id=USER, now=now,
                                connect_uri="c", sleep=lambda _s: None)
    return token


# --- HubSpot ------------------------------------------------------------------------------------


class HubSpot(VendorFake):
    """2026-03 OAuth API only (v1 answers 404 after the sunset); errors carry `error` and
    `status`; POST /oauth/2026-03/token/revoke with form token + client credentials."""

    def routes(self, app: Flask) -> None:
        app.add_url_rule("/oauth/2026-03/token/revoke", "revoke", self._revoke,
                         methods=["POST"])

    def error(self, code: str, status: int = 400) -> Response:
        response = jsonify(error=code, error_description="x", status="GRANT_GONE",
                           message="refresh token is invalid, expired or revoked")
        response.status_code = status
        return response

    def _revoke(self) -> Response:
        body = dict(request.form)
        if not self.authenticated(body) or not self.revoke_grant_of(body.get("token", "")):
            return self.error("invalid_request")
        return Response(status=204)


def test_hubspot_uses_the_2026_03_oauth_api():
    profile = PROFILES["hubspot"]
    assert profile.token_url == "https://api.hubapi.com/oauth/2026-03/token"
    assert profile.revocation_url == "https://api.hubapi.com/oauth/2026-03/token/revoke"


def test_hubspot_error_member_parks_the_connection_and_disconnect_revokes(db, store, vault):
    fake = HubSpot(token_path="/oauth/2026-03/token", expires_in=1800)
    with serving(fake) as base:
        hubspot = _platform("hubspot", base, token_url=base + "/oauth/2026-03/token",
                            revocation_url=base + "/oauth/2026-03/token/revoke",
                            scopes=["crm.objects.deals.read"])
        _connect(db, store, vault, hubspot, fake)
        disconnect(db, store, vault, hubspot, user_id=USER, now=NOW)
        assert fake.live_grants == 0
        _connect(db, store, vault, hubspot, fake)
        for grant in fake.grants.values():
            grant.revoked = True
        with pytest.raises(ConnectionRequiredError):
            _refresh(db, store, vault, hubspot)
    row = _row(db, "hubspot")
    assert row is not None and row.status == CONNECTION_NEEDS_RECONNECT


# --- Notion -------------------------------------------------------------------------------------


class Notion(VendorFake):
    """JSON token requests with Basic auth; rotating refresh tokens; errors as
    {object: error, status, code, message}; POST /v1/oauth/revoke JSON {token}, Basic auth,
    Notion-Version required."""

    def routes(self, app: Flask) -> None:
        app.add_url_rule("/v1/oauth/revoke", "revoke", self._revoke, methods=["POST"])

    def error(self, code: str, status: int = 400) -> Response:
        response = jsonify(object="error", status=status, code=code, message="Invalid grant.")
        response.status_code = status
        return response

    def _revoke(self) -> Response:
        body = self.body()
        if not request.headers.get("Notion-Version") or not self.authenticated(body) \
                or not self.revoke_grant_of(body.get("token", "")):
            return self.error("invalid_request")
        return jsonify(request_id="r1")


def _notion(base: str) -> Platform:
    return _platform("notion", base, token_url=base + "/v1/oauth/token",
                     revocation_url=base + "/v1/oauth/revoke")


def test_notion_refresh_rotates_and_a_dead_grant_asks_for_reconnect(db, store, vault):
    fake = Notion(token_path="/v1/oauth/token", json_body=True, client_auth="basic",
                  rotate=True, expires_in=None)
    with serving(fake) as base:
        notion = _notion(base)
        conn = _connect(db, store, vault, notion, fake)
        assert conn.refresh_token_ciphertext is not None
        first = vault.open(USER, "notion", "access_token", conn.access_token_ciphertext)
        second, _ = force_refresh(db, store, vault, notion, user_id=USER,
                                  rejected_access_token=first, now=NOW, connect_uri="c")
        assert second != first and fake.live_grants == 1
        for grant in fake.grants.values():
            grant.revoked = True
        with pytest.raises(ConnectionRequiredError):  # (a new store: no 30 s force limit)
            force_refresh(db, MemoryStore(), vault, notion, user_id=USER,
                          rejected_access_token=second, now=NOW + 60, connect_uri="c")
    row = _row(db, "notion")
    assert row is not None and row.status == CONNECTION_NEEDS_RECONNECT


def test_notion_disconnect_revokes_the_grant(db, store, vault):
    fake = Notion(token_path="/v1/oauth/token", json_body=True, client_auth="basic",
                  rotate=True, expires_in=None)
    with serving(fake) as base:
        notion = _notion(base)
        _connect(db, store, vault, notion, fake)
        disconnect(db, store, vault, notion, user_id=USER, now=NOW)
    assert fake.live_grants == 0


# --- Slack --------------------------------------------------------------------------------------


class Slack(VendorFake):
    """oauth.v2.access: HTTP 200 always, ok=false on error; the user token nested under
    authed_user; an exchange with both a client secret and a code_verifier is refused
    (internal_error, as reported in issue 19); single-use refresh tokens; auth.revoke and API
    methods answer 200 with ok=false."""

    def routes(self, app: Flask) -> None:
        app.add_url_rule("/api/auth.revoke", "revoke", self._revoke, methods=["POST"])
        app.add_url_rule("/api/users.profile.get", "profile", self._profile,
                         methods=["GET"])

    def _token(self) -> Response:
        body = self.body()
        secret = body.get("client_secret") or \
            request.headers.get("Authorization", "").startswith("Basic ")
        if body.get("code_verifier") and secret:
            return jsonify(ok=False, error="internal_error")
        return super()._token()

    def error(self, code: str, status: int = 400) -> Response:
        slack = {"invalid_grant": "invalid_refresh_token", "invalid_client": "bad_client_secret"}
        return jsonify(ok=False, error=slack.get(code, code))

    def success(self, body: dict[str, Any], grant_type: str) -> Response:
        if grant_type == "authorization_code":
            return jsonify(ok=True, access_token="xoxb-bot", token_type="bot",
                           authed_user={"id": "U1", **body, "token_type": "user"})
        return jsonify(ok=True, **{**body, "token_type": "user"})

    def _bearer(self) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    def _revoke(self) -> Response:
        token = self._bearer()
        if self.grant_of_access(token) is None:
            return jsonify(ok=False, error="invalid_auth")
        self.revoke_grant_of(token)
        return jsonify(ok=True, revoked=True)

    def _profile(self) -> Response:
        record = self.access_tokens.get(self._bearer())
        if record is not None and record["exp"] <= self.now():
            return jsonify(ok=False, error="token_expired")
        if self.grant_of_access(self._bearer()) is None:
            return jsonify(ok=False, error="invalid_auth")
        return jsonify(ok=True, profile={"real_name": "Alice"})


def _slack(base: str) -> Platform:
    return _platform("slack", base, token_url=base + "/api/oauth.v2.access",
                     revocation_url=base + "/api/auth.revoke", api_base_url=base + "/api",
                     scopes=["users.profile:read"],
                     resources={"profile:me": "users.profile.get"})


def test_slack_sends_no_pkce_by_default(db, store, vault):
    fake = Slack(token_path="/api/oauth.v2.access", client_auth="basic", rotate=True,
                 expires_in=43200)
    with serving(fake) as base:
        slack = _slack(base)
        query = authorize_params(build_authorize_url(slack, redirect_uri=REDIRECT, state="s",
                                                     code_challenge="cc"))
        assert "code_challenge" not in query and "code_challenge_method" not in query
        conn = _connect(db, store, vault, slack, fake)
    assert conn.refresh_token_ciphertext is not None
    assert "code_verifier" not in fake.log[0][2]


def test_slack_marked_public_redeems_with_pkce_and_no_secret(db, store, vault):
    fake = Slack(token_path="/api/oauth.v2.access", client_auth="basic", rotate=True,
                 expires_in=43200)
    fake.authenticated = lambda body: body.get("client_id") == "cid"  # type: ignore[method-assign]
    with serving(fake) as base:
        slack = Platform.from_settings("slack", {
            "profile": "slack", "client_id": "cid", "client_secret": "csecret",
            "token_url": base + "/api/oauth.v2.access", "scopes": ["users.profile:read"],
            "profile_overrides": {"pkce": True}})
        _connect(db, store, vault, slack, fake)
    sent = fake.log[0][2]
    assert sent["code_verifier"] and "client_secret" not in sent


def test_slack_single_use_refresh_token_is_not_replayed(db, store, vault, monkeypatch):
    fake = Slack(token_path="/api/oauth.v2.access", client_auth="basic", rotate=True,
                 expires_in=43200,
                 stall_refreshes=1, stall_seconds=1.0)
    monkeypatch.setattr(oauth_client, "READ_TIMEOUT", 0.3)
    with serving(fake) as base:
        slack = _slack(base)
        _connect(db, store, vault, slack, fake, now=NOW)
        with pytest.raises(TemporarilyUnavailableError):  # a 503, no replay
            _refresh(db, store, vault, slack, now=NOW + 50_000)
    refreshes = [e for e in fake.log if e[2].get("grant_type") == "refresh_token"]
    assert len(refreshes) == 1 and fake.live_grants == 1


def test_slack_ok_false_revocation_is_a_failure(db, store, vault):
    fake = Slack(token_path="/api/oauth.v2.access", client_auth="basic", rotate=True,
                 expires_in=43200)
    with serving(fake) as base:
        slack = _slack(base)
        with pytest.raises(PlatformRejected):
            revoke(slack, "xoxp-unknown", "access_token")


def test_slack_token_expired_on_http_200_refreshes_like_a_401(db, store, vault):
    from authserver.gateway import GatewayRequest, forward

    fake = Slack(token_path="/api/oauth.v2.access", client_auth="basic", rotate=True,
                 expires_in=43200)
    with serving(fake) as base:
        slack = _slack(base)
        _connect(db, store, vault, slack, fake)
        fake.expire_access_tokens()  # Slack still thinks of the token as ours, we as fresh
        services = types.SimpleNamespace(db=db, store=store, vault=vault,
                                         settings=types.SimpleNamespace(
                                             issuer="http://127.0.0.1:8000"))
        req = GatewayRequest(platform="slack", path="users.profile.get", method="GET",
                             url="http://127.0.0.1:8000/gateway/slack/users.profile.get",
                             authorization=[], dpop=[])
        response = forward(services, slack, req, {"sub": USER}, now=NOW,  # type: ignore[arg-type]
                           target="users.profile.get")
    assert response.status == 200 and json.loads(response.body)["ok"] is True
    assert sum(e[2].get("grant_type") == "refresh_token" for e in fake.log) == 1


# --- Atlassian ----------------------------------------------------------------------------------


SITES = [{"id": "11111111-aaaa", "url": "https://a.atlassian.net", "name": "A"},
         {"id": "22222222-bbbb", "url": "https://b.atlassian.net", "name": "B"}]


class Atlassian(VendorFake):
    """JSON token requests, client credentials in the body, rotating refresh tokens with a
    10-minute reuse leeway, accessible-resources listing every authorised site."""

    sites: list[dict[str, str]] = SITES

    def routes(self, app: Flask) -> None:
        app.add_url_rule("/oauth/token/accessible-resources", "sites",
                         lambda: jsonify(self.sites))
        app.add_url_rule("/ex/<product>/<cloud_id>/<path:rest>", "api", self._api)

    def _api(self, product: str, cloud_id: str, rest: str) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.grant_of_access(token) is None:
            return Response(status=401)
        return jsonify(product=product, cloud_id=cloud_id, path=rest)


def _atlassian(base: str, **extra: Any) -> Platform:
    return _platform("atlassian", base, token_url=base + "/oauth/token",
                     profile_overrides={
                         "api_base_discovery_url": base + "/oauth/token/accessible-resources"},
                     scopes=["read:jira-work"], **extra)


def test_atlassian_multi_site_user_connects_and_the_intent_picks_the_site(db, store, vault):
    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600,
                     refresh_scope="offline_access")
    with serving(fake) as base:
        atlassian = _atlassian(base, resources={
            "jira:{cloud_id}/issue/{key}": "jira/{cloud_id}/rest/api/3/issue/{key}",
            "confluence:{cloud_id}/page/{id}": "confluence/{cloud_id}/wiki/api/v2/pages/{id}"})
        conn = _connect(db, store, vault, atlassian, fake)
    assert conn.api_base_url == "https://api.atlassian.com/ex"
    assert path_matches_intent(atlassian, "jira:22222222-bbbb/issue/PRJ-1", "GET",
                               "jira/22222222-bbbb/rest/api/3/issue/PRJ-1")
    assert path_matches_intent(atlassian, "confluence:11111111-aaaa/page/42", "GET",
                               "confluence/11111111-aaaa/wiki/api/v2/pages/42")


def test_atlassian_connection_stores_every_site(db, store, vault):
    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600)
    with serving(fake) as base:
        _connect(db, store, vault, _atlassian(base), fake)
    row = _row(db, "atlassian")
    assert row is not None and connections.connection_sites(row) == SITES


def _gateway_call(db, store, vault, platform: Platform, resource: str, path: str):
    from authserver.gateway import GatewayRequest, handle

    # The audit trail is not under test here: its appends are no-ops.
    no_audit = types.SimpleNamespace(append=lambda *_a, **_k: None,
                                     append_refusal=lambda *_a, **_k: None)
    services = types.SimpleNamespace(db=db, store=store, vault=vault, audit=no_audit,
                                     platforms={platform.name: platform},
                                     settings=types.SimpleNamespace(
                                         issuer="http://127.0.0.1:8000"))
    req = GatewayRequest(platform=platform.name, path=path, method="GET",
                         url="http://127.0.0.1:8000/gateway/atlassian/" + path,
                         authorization=[], dpop=[])
    intent = {"path": path, "resource": resource, "action": "read", "count": 1}
    return handle_with_intent(services, platform, req, intent, handle)


def handle_with_intent(services, platform, req, intent, handle):
    """`gateway.handle` with the token checks stubbed: these tests are about the sites."""
    from authserver import gateway

    def verify(_services, _session, _req, *, now, seen):
        seen.update({"sub": USER, "client_id": "agent"})
        return gateway.Capability(seen)

    original = (gateway.verify_capability, gateway.check_fits_intent)
    gateway.verify_capability = verify  # type: ignore[assignment]
    gateway.check_fits_intent = lambda *_a, **_k: intent  # type: ignore[assignment]
    try:
        with services.db.session() as session:
            return handle(services, session, req, now=NOW)
    finally:
        gateway.verify_capability, gateway.check_fits_intent = original


ATLASSIAN_RESOURCES = {
    "jira:{cloud_id}/issue/{key}": "jira/{cloud_id}/rest/api/3/issue/{key}",
    "confluence:{cloud_id}/page/{id}": "confluence/{cloud_id}/wiki/api/v2/pages/{id}"}


def test_atlassian_gateway_reaches_a_stored_site_and_refuses_another(db, store, vault):
    from authserver.errors import ResourceForbiddenError

    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600)
    with serving(fake) as base:
        atlassian = _atlassian(base, api_base_url=base + "/ex", resources=ATLASSIAN_RESOURCES)
        _connect(db, store, vault, atlassian, fake)
        ok = _gateway_call(db, store, vault, atlassian, "jira:22222222-bbbb/issue/PRJ-1",
                           "jira/22222222-bbbb/rest/api/3/issue/PRJ-1")
        assert ok.status == 200 and json.loads(ok.body)["cloud_id"] == "22222222-bbbb"
        page = _gateway_call(db, store, vault, atlassian, "confluence:11111111-aaaa/page/42",
                             "confluence/11111111-aaaa/wiki/api/v2/pages/42")
        assert page.status == 200 and json.loads(page.body)["product"] == "confluence"
        calls = len(fake.log)
        with pytest.raises(ResourceForbiddenError) as refused:
            _gateway_call(db, store, vault, atlassian, "jira:33333333-cccc/issue/PRJ-1",
                          "jira/33333333-cccc/rest/api/3/issue/PRJ-1")
        assert refused.value.status_code == 403
        assert len(fake.log) == calls  # nothing was sent


def test_atlassian_site_unknown_when_no_sites_were_stored_is_refused(db, store, vault):
    from authserver.errors import ResourceForbiddenError

    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600)
    with serving(fake) as base:
        atlassian = _atlassian(base, api_base_url=base + "/ex", resources=ATLASSIAN_RESOURCES)
        _connect(db, store, vault, atlassian, fake)
        with db.session() as session:  # a row from before sites were stored
            session.query(Connection).update({"sites": None})
        with pytest.raises(ResourceForbiddenError):
            _gateway_call(db, store, vault, atlassian, "jira:22222222-bbbb/issue/PRJ-1",
                          "jira/22222222-bbbb/rest/api/3/issue/PRJ-1")


def test_atlassian_confluence_site_base_with_several_sites_is_filled_from_the_intent(
        db, store, vault):
    from authserver.errors import ResourceForbiddenError

    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600)
    with serving(fake) as base:
        atlassian = _atlassian(base, api_base_url=base + "/ex/confluence/{cloud_id}",
                               resources={"page:{cloud_id}/{id}": "wiki/api/v2/pages/{id}",
                                          "page:{id}": "wiki/api/v2/pages/{id}"})
        conn = _connect(db, store, vault, atlassian, fake)
        assert conn.api_base_url == base + "/ex/confluence/{cloud_id}"
        ok = _gateway_call(db, store, vault, atlassian, "page:11111111-aaaa/42",
                           "wiki/api/v2/pages/42")
        assert json.loads(ok.body) == {"product": "confluence", "cloud_id": "11111111-aaaa",
                                       "path": "wiki/api/v2/pages/42"}
        with pytest.raises(ResourceForbiddenError):  # which site? never guessed
            _gateway_call(db, store, vault, atlassian, "page:42", "wiki/api/v2/pages/42")
        with pytest.raises(ResourceForbiddenError):
            _gateway_call(db, store, vault, atlassian, "page:99999999-zzzz/42",
                          "wiki/api/v2/pages/42")


def test_atlassian_site_template_fills_a_single_site(db, store, vault):
    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600)
    fake.sites = SITES[:1]
    with serving(fake) as base:
        atlassian = _atlassian(base, api_base_url="https://api.atlassian.com/ex/confluence/"
                                                  "{cloud_id}")
        conn = _connect(db, store, vault, atlassian, fake)
    assert conn.api_base_url == "https://api.atlassian.com/ex/confluence/11111111-aaaa"


def test_atlassian_retry_inside_the_reuse_leeway_keeps_the_grant(db, store, vault, monkeypatch):
    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600, stall_refreshes=1,
                     stall_seconds=1.0)
    monkeypatch.setattr(oauth_client, "READ_TIMEOUT", 0.3)
    with serving(fake) as base:
        atlassian = _atlassian(base)
        _connect(db, store, vault, atlassian, fake)
        _refresh(db, store, vault, atlassian)  # first answer lost, the retry succeeds
    assert sum(e[2].get("grant_type") == "refresh_token" for e in fake.log) == 2
    assert fake.live_grants == 1


# --- refresh scopes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "scope"), [("microsoft", "offline_access"),
                                                ("atlassian", "offline_access"),
                                                ("salesforce", "refresh_token")])
def test_refresh_scope_is_always_requested(profile, scope):
    platform = _platform(profile, "", scopes=["x.read"])
    query = authorize_params(build_authorize_url(platform, redirect_uri=REDIRECT, state="s",
                                                 code_challenge="c"))
    assert scope in query["scope"].split()


def test_salesforce_offline_access_alias_is_enough():
    platform = _platform("salesforce", "", scopes=["api", "offline_access"])
    assert platform.scopes == ("api", "offline_access")


def test_connect_without_a_refresh_token_is_refused(db, store, vault):
    fake = VendorFake(token_path="/services/oauth2/token", refresh_scope="never-granted")
    with serving(fake) as base:
        ms = _platform("microsoft", base, token_url=base + "/services/oauth2/token")
        with pytest.raises(PlatformRejected):
            _connect(db, store, vault, ms, fake)
    assert _row(db, "microsoft") is None


# --- Salesforce ---------------------------------------------------------------------------------


class Salesforce(VendorFake):
    """Rotation on (the app setting): the previous refresh token is invalidated; a refresh
    token only with the refresh_token scope; instance_url; POST revoke with `token`."""

    def routes(self, app: Flask) -> None:
        app.add_url_rule("/services/oauth2/revoke", "revoke", self._revoke, methods=["POST"])

    def success(self, body: dict[str, Any], grant_type: str) -> Response:
        body.pop("expires_in", None)
        return jsonify(**body, instance_url="https://acme.my.salesforce.com")

    def _revoke(self) -> Response:
        self.revoke_grant_of(request.form.get("token", ""))
        return Response(status=200)


def _salesforce(base: str) -> Platform:
    return _platform("salesforce", base, token_url=base + "/services/oauth2/token",
                     revocation_url=base + "/services/oauth2/revoke", scopes=["api"])


def test_salesforce_rotation_is_never_replayed_after_a_lost_answer(db, store, vault,
                                                                  monkeypatch):
    fake = Salesforce(token_path="/services/oauth2/token", rotate=True,
                      refresh_scope="refresh_token", stall_refreshes=1, stall_seconds=1.0)
    monkeypatch.setattr(oauth_client, "READ_TIMEOUT", 0.3)
    with serving(fake) as base:
        salesforce = _salesforce(base)
        conn = _connect(db, store, vault, salesforce, fake)
        assert conn.api_base_url == "https://acme.my.salesforce.com/services/data/v62.0"
        with pytest.raises(TemporarilyUnavailableError):  # a 503, not a revoked grant
            _refresh(db, store, vault, salesforce)
    assert sum(e[2].get("grant_type") == "refresh_token" for e in fake.log) == 1
    assert fake.live_grants == 1


def test_reconnect_revokes_the_superseded_salesforce_grant(db, store, vault):
    fake = Salesforce(token_path="/services/oauth2/token", refresh_scope="refresh_token")
    with serving(fake) as base:
        salesforce = _salesforce(base)
        _connect(db, store, vault, salesforce, fake)
        _connect(db, store, vault, salesforce, fake)
        assert fake.live_grants == 1
        _refresh(db, store, vault, salesforce)  # the surviving grant is the new one


def test_github_superseded_token_is_revoked_alone():
    github = _platform("github", "")
    hook = github.profile.superseded_revocation_request
    assert hook is not None
    req = hook(github, "gho_old", "access_token")
    assert req.method == "DELETE" and req.url == "https://api.github.com/applications/cid/token"


# --- Linear -------------------------------------------------------------------------------------


class Linear(VendorFake):
    """Access tokens live 24 hours; POST /oauth/revoke takes the refresh token in the
    `refresh_token` form field (client credentials in the body), or a live access token as
    bearer."""

    def routes(self, app: Flask) -> None:
        app.add_url_rule("/oauth/revoke", "revoke", self._revoke, methods=["POST"])

    def _revoke(self) -> Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer and self.grant_of_access(bearer) is not None:
            self.revoke_grant_of(bearer)
            return Response(status=200)
        body = dict(request.form)
        if self.authenticated(body) and self.revoke_grant_of(body.get("refresh_token", "")):
            return Response(status=200)
        return self.error("invalid_token", 400)


def test_linear_disconnect_after_a_day_revokes_with_the_refresh_token(db, store, vault):
    clock = {"t": float(NOW)}
    fake = Linear(rotate=True, expires_in=86400, now=lambda: clock["t"])
    with serving(fake) as base:
        linear = _platform("linear", base, token_url=base + "/oauth/token",
                           revocation_url=base + "/oauth/revoke", scopes=["read"])
        _connect(db, store, vault, linear, fake)
        clock["t"] += 2 * 86400  # the access token is long dead
        disconnect(db, store, vault, linear, user_id=USER, now=NOW + 2 * 86400)
    assert fake.live_grants == 0


# --- Microsoft ----------------------------------------------------------------------------------


def test_microsoft_refresh_is_not_treated_as_rotating():
    # learn.microsoft.com/entra/identity-platform/refresh-tokens: old refresh tokens are not
    # revoked on use, so a replay after a lost answer is safe (and retried).
    profile = PROFILES["microsoft"]
    assert not profile.rotates_refresh_tokens and profile.refresh_idle_lifetime == 90 * 86400


# --- authserver platforms check -----------------------------------------------------------------


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str) -> tuple[int, Any]:
    config = tmp_path / "authserver.toml"
    config.write_text(table)
    monkeypatch.setenv("AUTHSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AUTHSERVER_CONFIG", str(config))
    from authserver.cli import main

    result = CliRunner().invoke(main, ["platforms", "check", "ms"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def test_platforms_check_reports_a_missing_refresh_scope(tmp_path, monkeypatch):
    code, out = _check(tmp_path, monkeypatch, '[platforms.ms]\nprofile = "microsoft"\n'
                       'client_id = "c"\nclient_secret = "s"\nscopes = ["User.Read"]\n')
    assert code == 1 and "offline_access" in out["findings"][0]


def test_platforms_check_passes_a_good_configuration(tmp_path, monkeypatch):
    code, out = _check(tmp_path, monkeypatch, '[platforms.ms]\nprofile = "microsoft"\n'
                       'client_id = "c"\nclient_secret = "s"\n'
                       'scopes = ["User.Read", "offline_access"]\n')
    assert code == 0 and out == {"platform": "ms", "ok": True, "findings": []}


def test_platforms_check_reports_hubspot_v1_endpoints(tmp_path, monkeypatch):
    code, out = _check(tmp_path, monkeypatch, '[platforms.ms]\nprofile = "hubspot"\n'
                       'client_id = "c"\nclient_secret = "s"\n'
                       'token_url = "https://api.hubapi.com/oauth/v1/token"\n')
    assert code == 1 and "2027-02-16" in out["findings"][0]


def test_check_never_echoes_the_client_secret(tmp_path, monkeypatch):
    code, out = _check(tmp_path, monkeypatch, '[platforms.ms]\nprofile = "slack"\n'
                       'client_id = "c"\nclient_secret = "TOPSECRET"\n'
                       'profile_overrides = {pkce = true}\n')
    assert code == 1 and "TOPSECRET" not in json.dumps(out)


def test_atlassian_leeway_covers_every_retry():
    assert PROFILES["atlassian"].refresh_reuse_grace > connections.REFRESH_RETRY_WINDOW


# --- the account at the platform (issue 12) -----------------------------------------------------


def _id_token(claims: dict[str, Any]) -> str:
    from authserver.encoding import b64url_encode

    return ".".join(b64url_encode(json.dumps(part).encode())
                    for part in ({"alg": "RS256"}, claims)) + ".c2ln"


class WithIdToken(VendorFake):
    claims: dict[str, Any] = {"sub": "1", "email": "alice@example.com"}

    def success(self, body: dict[str, Any], grant_type: str) -> Response:
        return jsonify(**body, id_token=_id_token(self.claims))


class SlackWithTeam(Slack):
    def success(self, body: dict[str, Any], grant_type: str) -> Response:
        if grant_type == "authorization_code":
            return jsonify(ok=True, access_token="xoxb-bot", token_type="bot",
                           team={"id": "T1", "name": "Acme"},
                           authed_user={"id": "U1", **body, "token_type": "user"})
        return super().success(body, grant_type)


class NotionWithOwner(Notion):
    def success(self, body: dict[str, Any], grant_type: str) -> Response:
        return jsonify(**body, workspace_name="Acme\u202e HQ", bot_id="b",
                       owner={"type": "user", "user": {
                           "name": "Alice", "person": {"email": "alice@acme.test"}}})


def test_oidc_platform_account_is_the_id_token_email(db, store, vault):
    fake = WithIdToken(client_auth="post", refresh_scope="offline_access")
    with serving(fake) as base:
        microsoft = _platform("microsoft", base, token_url=base + "/oauth/token",
                              authorize_url=base + "/authorize", scopes=["User.Read"])
        conn = _connect(db, store, vault, microsoft, fake)
    assert conn.account_label == "alice@example.com"
    row = _row(db, "microsoft")
    assert row is not None and row.account_label == "alice@example.com"
    assert "at-" not in (row.account_label or "")  # a label, never a token


def test_preferred_username_when_no_email():
    from authserver.broker.profiles.base import oidc_account_label

    doc = {"id_token": _id_token({"preferred_username": "alice@corp.example"})}
    assert oidc_account_label(doc) == "alice@corp.example"
    assert oidc_account_label({"id_token": "not-a-jwt"}) is None
    assert oidc_account_label({}) is None


def test_slack_account_is_the_workspace_and_user(db, store, vault):
    fake = SlackWithTeam(token_path="/api/oauth.v2.access", client_auth="basic", rotate=True,
                         expires_in=43200)
    with serving(fake) as base:
        conn = _connect(db, store, vault, _slack(base), fake)
    assert conn.account_label == "user U1 in workspace Acme"


def test_notion_account_is_the_owner_and_workspace_without_control_characters(db, store,
                                                                               vault):
    fake = NotionWithOwner(token_path="/v1/oauth/token", json_body=True, client_auth="basic",
                           rotate=True, expires_in=None)
    with serving(fake) as base:
        conn = _connect(db, store, vault, _notion(base), fake)
    assert conn.account_label == "alice@acme.test in workspace Acme HQ"


def test_salesforce_account_from_the_identity_url():
    from authserver.broker.profiles.salesforce import salesforce_account_label

    doc = {"id": "https://login.salesforce.com/id/00Dxx0000001gPL/005xx000001Sv6A"}
    assert salesforce_account_label(doc) == "user 005xx000001Sv6A (org 00Dxx0000001gPL)"
    assert salesforce_account_label({"id": "javascript:alert(1)"}) is None


def test_no_account_reported_is_none(db, store, vault):
    fake = VendorFake(client_auth="basic")
    with serving(fake) as base:
        generic = _platform("generic", base, token_url=base + "/oauth/token",
                            authorize_url=base + "/authorize", revocation_url=base + "/r")
        conn = _connect(db, store, vault, generic, fake)
    assert conn.account_label is None and conn.sites is None


# --- keeping idle connections alive (issue 19) --------------------------------------------------


def test_keepalive_refreshes_only_connections_near_the_inactivity_limit(db, store, vault):
    fake = Atlassian(json_body=True, rotate=True, reuse_grace=600)
    with serving(fake) as base:
        atlassian = _atlassian(base)
        _connect(db, store, vault, atlassian, fake)
        platforms = {"atlassian": atlassian}

        def run(now: int) -> dict[str, int]:
            return connections.keep_alive(db, store, vault, platforms, issuer="http://i",
                                          now=now, sleep=lambda _s: None)

        def refreshes() -> int:
            return sum(e[2].get("grant_type") == "refresh_token" for e in fake.log)

        assert run(NOW + 70 * 86400) == {"refreshed": 0, "skipped": 1, "needs_reconnect": 0,
                                         "failed": 0}
        assert refreshes() == 0
        assert run(NOW + 77 * 86400)["refreshed"] == 1 and refreshes() == 1
        row = _row(db, "atlassian")
        assert row is not None and row.access_obtained_at == NOW + 77 * 86400
        assert run(NOW + 78 * 86400)["skipped"] == 1 and refreshes() == 1  # fresh again
        for grant in fake.grants.values():
            grant.revoked = True  # the user removed the app at Atlassian
        assert run(NOW + 170 * 86400)["needs_reconnect"] == 1
    row = _row(db, "atlassian")
    assert row is not None and row.status == CONNECTION_NEEDS_RECONNECT


def test_keepalive_ignores_platforms_without_an_inactivity_limit(db, store, vault):
    fake = VendorFake(client_auth="basic")
    with serving(fake) as base:
        generic = _platform("generic", base, token_url=base + "/oauth/token",
                            authorize_url=base + "/authorize", revocation_url=base + "/r")
        _connect(db, store, vault, generic, fake)
        counts = connections.keep_alive(db, store, vault, {"generic": generic},
                                        issuer="http://i", now=NOW + 400 * 86400)
    assert counts == {"refreshed": 0, "skipped": 0, "needs_reconnect": 0, "failed": 0}
