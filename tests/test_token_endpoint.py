"""The token endpoint's pipeline (authserver.token_endpoint.pipeline) without an HTTP server:
`handle` on a `TokenRequest` built here, at a fixed `now`, over the services `create_app`
would build (SQLite, the embedded store). One test per refusal of the pipeline itself, the
order of its steps, and the parameter allow-lists; the grants' own checks are in the
tests/test_http_*.py modules."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.app import build_services
from authserver.clients import CLIENT_ASSERTION_TYPE, register_client, validate_client_metadata
from authserver.config import Settings
from authserver.errors import OAuthError
from authserver.grants.client_credentials import ClientCredentialsGrant
from authserver.models import Client
from authserver.models.audit import AuditEvent
from authserver.ratelimit import RateLimiter
from authserver.services import Services
from authserver.store.keys import registry_generation
from authserver.store.memory import MemoryStore
from authserver.token_endpoint import pipeline
from authserver.token_endpoint.parameters import ENDPOINT_PARAMETERS, restrict_parameters
from authserver.token_endpoint.request import Form, TokenRequest
from tests.http_helpers import (  # noqa: F401 (fixtures)
    app,
    app_config,
    client,
    redis_url,
    signed_in,
    user_id,
)

NOW = 1_800_000_000
ISSUER = "http://127.0.0.1:8000"
RESOURCE = "https://api.example.com/mcp"
CC = "client_credentials"
TX = "urn:ietf:params:oauth:grant-type:token-exchange"
NO_STORE = {"Cache-Control": "no-store"}
CHALLENGE = {"WWW-Authenticate": 'Basic realm="authserver"', **NO_STORE}


@pytest.fixture
def settings_extra() -> dict[str, Any]:
    """Settings a test adds (overridden by parametrising this fixture)."""
    return {}


@pytest.fixture
def services(tmp_path: Any, settings_extra: dict[str, Any]) -> Iterator[Services]:
    settings = Settings.load({
        "data_dir": str(tmp_path / "data"), "testing": True, "issuer": ISSUER,
        "database_url": f"sqlite:///{tmp_path}/test.db", "redis_url": "",
        "resources": (RESOURCE,), **settings_extra,
    })
    built = build_services(settings, lambda: NOW)
    yield built
    built.db.engine.dispose()


@pytest.fixture
def db(services: Services) -> Iterator[Session]:
    session = services.db.sessionmaker()
    yield session
    session.close()


def new_client(services: Services, **metadata: Any) -> dict[str, Any]:
    """A registered client: its id, its secret (None for a public client) and Basic header."""
    metadata.setdefault("token_endpoint_auth_method", "client_secret_basic")
    metadata.setdefault("grant_types", [CC])
    with services.db.session() as session:
        row, secret = register_client(
            session, validate_client_metadata(metadata, scopes=services.settings.scopes),
            now=NOW)
        session.commit()
        client_id = row.client_id
    return {"client_id": client_id, "secret": secret,
            "basic": basic(client_id, secret) if secret else None}


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def request(db: Session, form: dict[str, str | list[str]], *, authorization: str | None = None,
            query: dict[str, list[str]] | None = None, client_ip: str = "192.0.2.1"
            ) -> TokenRequest:
    return TokenRequest(
        form=Form({k: v if isinstance(v, list) else [v] for k, v in form.items()}),
        query=Form(query or {}), authorization=authorization, dpop=(), client_ip=client_ip,
        now=NOW, db=db)


def refused(services: Services, req: TokenRequest) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        pipeline.handle(services, req)
    return info.value


def assert_refused(error: OAuthError, status: int, code: str, description: str | None,
                   headers: dict[str, str] | None = None) -> None:
    assert (error.status_code, error.error, error.description) == (status, code, description)
    assert error.headers() == (headers or NO_STORE)


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


# --- success ------------------------------------------------------------------------------------


def test_success_is_200_json_never_cached_and_counted(services: Services, db: Session) -> None:
    cc = new_client(services)
    before = sample("authserver_tokens_issued_total", grant_type=CC, token_type="Bearer")
    response = pipeline.handle(services, request(db, {"grant_type": CC},
                                                 authorization=cc["basic"]))
    assert response.status == 200
    assert response.headers == (("Content-Type", "application/json"),
                                ("Cache-Control", "no-store"), ("Pragma", "no-cache"))
    assert response.body["token_type"] == "Bearer" and response.body["access_token"]
    assert sample("authserver_tokens_issued_total", grant_type=CC,
                  token_type="Bearer") == before + 1


# --- check_body_parameters ---------------------------------------------------------------------


def test_query_parameters_are_invalid_request(services: Services, db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": CC}, authorization=cc["basic"],
                                      query={"scope": ["read"]}))
    assert_refused(error, 400, "invalid_request", "Parameters must be sent in the request body")


def test_a_repeated_parameter_is_invalid_request(services: Services, db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": CC, "scope": ["read", "read"]},
                                      authorization=cc["basic"]))
    assert_refused(error, 400, "invalid_request", "A parameter was sent more than once")


def test_a_repeated_undeclared_parameter_is_still_refused(services: Services,
                                                          db: Session) -> None:
    # Repeats are refused before the grant's allow-list drops what it did not declare.
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": CC, "code": ["a", "b"]},
                                      authorization=cc["basic"]))
    assert_refused(error, 400, "invalid_request", "A parameter was sent more than once")


def test_resource_may_repeat(services: Services, db: Session) -> None:
    cc = new_client(services)
    response = pipeline.handle(services, request(
        db, {"grant_type": CC, "resource": [RESOURCE, RESOURCE]}, authorization=cc["basic"]))
    assert response.status == 200


def test_a_nul_in_a_parameter_is_invalid_request(services: Services, db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": CC, "scope": "re\x00ad"},
                                      authorization=cc["basic"]))
    assert_refused(error, 400, "invalid_request", "A parameter contains a NUL character")


def test_a_control_character_in_client_id_is_invalid_request(services: Services,
                                                             db: Session) -> None:
    error = refused(services, request(db, {"grant_type": CC, "client_id": "cli_\x01"}))
    assert_refused(error, 400, "invalid_request", "client_id contains a control character")


@pytest.mark.parametrize(("authorization", "reason"), [
    ("Basic !!!", "client_auth_basic_not_decodable"),
    (" ", "client_auth_header_malformed"),
    ("Bearer ", "client_auth_header_malformed"),
    ("Basic " + base64.b64encode(b"\xff:x").decode(), "client_auth_basic_not_decodable"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), "client_auth_basic_malformed"),
])
def test_malformed_basic_credentials_are_invalid_client(services: Services, db: Session,
                                                        authorization: str, reason: str) -> None:
    error = refused(services, request(db, {"grant_type": CC}, authorization=authorization))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)
    assert error.reason == reason  # logs and audit only: the answer is the same


# --- select_grant ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [{}, {"grant_type": ""}], ids=["absent", "empty"])
def test_a_missing_grant_type_is_invalid_request(services: Services, db: Session,
                                                 form: dict[str, str]) -> None:
    cc = new_client(services)
    error = refused(services, request(db, form, authorization=cc["basic"]))
    assert_refused(error, 400, "invalid_request", "Missing grant_type")


@pytest.mark.parametrize("grant_type", ["password", "implicit", "urn:example:unknown"])
def test_an_unknown_grant_type_is_unsupported_grant_type(services: Services, db: Session,
                                                         grant_type: str) -> None:
    cc = new_client(services)
    before = sample("authserver_token_rejections_total", grant_type="other",
                    error="unsupported_grant_type")
    error = refused(services, request(db, {"grant_type": grant_type},
                                      authorization=cc["basic"]))
    assert_refused(error, 400, "unsupported_grant_type", None)
    assert sample("authserver_token_rejections_total", grant_type="other",
                  error="unsupported_grant_type") == before + 1


def test_body_checks_come_before_the_grant_is_selected(services: Services,
                                                       db: Session) -> None:
    error = refused(services, request(db, {"grant_type": "password"},
                                      query={"grant_type": ["password"]}))
    assert_refused(error, 400, "invalid_request", "Parameters must be sent in the request body")


def test_an_unknown_grant_is_refused_before_client_authentication(services: Services,
                                                                  db: Session) -> None:
    # Wrong credentials, unknown grant: the grant is what is wrong.
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": "password"},
                                      authorization=basic(cc["client_id"], "wrong")))
    assert_refused(error, 400, "unsupported_grant_type", None)


# --- restrict_parameters -----------------------------------------------------------------------


def test_parameters_a_grant_does_not_declare_are_dropped(services: Services, db: Session,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[str]] = []

    class Recording(ClientCredentialsGrant):
        def issue(self, services: Services, req: TokenRequest, client: Any) -> Any:
            seen.append(set(req.form))
            return super().issue(services, req, client)

    monkeypatch.setitem(pipeline.GRANTS, CC, Recording())
    cc = new_client(services)
    pipeline.handle(services, request(db, {
        "grant_type": CC, "scope": "read", "resource": RESOURCE,
        "code": "x", "subject_token": "y", "intent": "z", "refresh_token": "r",
    }, authorization=cc["basic"]))
    assert seen == [{"grant_type", "scope", "resource"}]


def test_the_allow_list_keeps_client_authentication_parameters(db: Session) -> None:
    req = request(db, {"grant_type": CC, "client_id": "a", "client_secret": "b",
                       "client_assertion_type": "c", "client_assertion": "d", "code": "e"})
    assert set(restrict_parameters(req, {"scope"}).form) == ENDPOINT_PARAMETERS
    assert restrict_parameters(req, {"code"}).form.getlist("code") == ["e"]


def test_every_grant_declares_what_it_reads() -> None:
    assert set(pipeline.GRANTS) == {
        CC, "authorization_code", "refresh_token", TX,
        "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    for grant in pipeline.GRANTS.values():
        assert grant.PARAMETERS and not grant.PARAMETERS & {"grant_type", "client_secret"}
    assert {"intent", "audience", "resource"} <= pipeline.GRANTS[TX].PARAMETERS


# --- authenticate_client -----------------------------------------------------------------------


def test_a_wrong_secret_is_invalid_client(services: Services, db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": CC},
                                      authorization=basic(cc["client_id"], "wrong")))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)
    assert error.reason == "client_auth_bad_secret"  # logs and audit only


def test_an_unknown_client_is_the_same_invalid_client(services: Services, db: Session) -> None:
    error = refused(services, request(db, {"grant_type": CC},
                                      authorization=basic("cli_nobody", "secret")))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)
    assert error.reason == "client_auth_unknown_client"


def test_no_credentials_is_invalid_client(services: Services, db: Session) -> None:
    error = refused(services, request(db, {"grant_type": CC}))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)
    assert error.reason == "client_auth_missing_credentials"


def test_a_client_assertion_type_without_an_assertion_is_invalid_client(
        services: Services, db: Session) -> None:
    error = refused(services, request(db, {
        "grant_type": CC, "client_assertion_type": CLIENT_ASSERTION_TYPE}))
    assert (error.status_code, error.error, error.description, error.reason) == (
        401, "invalid_client", "Missing client_assertion", "client_auth_missing_assertion")


def test_a_method_the_grant_does_not_take_is_invalid_client(services: Services,
                                                            db: Session) -> None:
    # A public client (`none`) asks for client credentials: not among the grant's methods.
    public = new_client(services, token_endpoint_auth_method="none",
                    grant_types=["authorization_code"], redirect_uris=["https://c.example/cb"])
    error = refused(services, request(db, {"grant_type": CC, "client_id": public["client_id"]}))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)


def test_a_method_the_client_did_not_register_is_invalid_client(services: Services,
                                                                db: Session) -> None:
    post = new_client(services, token_endpoint_auth_method="client_secret_post")
    error = refused(services, request(db, {"grant_type": CC},
                                      authorization=basic(post["client_id"], post["secret"])))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)
    assert error.reason == "client_auth_wrong_method"
    response = pipeline.handle(services, request(db, {
        "grant_type": CC, "client_id": post["client_id"], "client_secret": post["secret"]}))
    assert response.status == 200


# --- check_grant_type_allowed ------------------------------------------------------------------


def test_a_grant_the_client_did_not_register_is_unauthorized_client(services: Services,
                                                                    db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": "refresh_token", "refresh_token": "x"},
                                      authorization=cc["basic"]))
    assert_refused(error, 400, "unauthorized_client", "The client may not use this grant type")
    assert error.reason == "grant_type_not_allowed"


def test_the_grant_type_is_checked_after_authentication(services: Services,
                                                        db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": "refresh_token"},
                                      authorization=basic(cc["client_id"], "wrong")))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)


def test_token_exchange_refusal_is_audited_with_its_own_description(services: Services,
                                                                    db: Session) -> None:
    cc = new_client(services)
    error = refused(services, request(db, {"grant_type": TX}, authorization=cc["basic"]))
    assert_refused(error, 400, "unauthorized_client", "The client may not use token exchange")
    with services.db.session() as session:
        events = session.scalars(select(AuditEvent)).all()
        assert [(e.event, e.outcome, e.reason, e.agent_id, e.client_ip) for e in events] == [
            ("token_exchange", "invalid", "grant_type_not_allowed", cc["client_id"],
             "192.0.2.1")]


def test_token_exchange_counts_a_failed_authentication(services: Services, db: Session) -> None:
    # Nobody authenticated: counted, never appended to the audit chain.
    before = sample("authserver_unauthenticated_rejections_total", event="token_exchange",
                    reason="invalid_client")
    error = refused(services, request(db, {"grant_type": TX},
                                      authorization=basic("cli_nobody", "secret")))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)
    assert sample("authserver_unauthenticated_rejections_total", event="token_exchange",
                  reason="invalid_client") == before + 1
    with services.db.session() as session:
        assert session.scalars(select(AuditEvent)).all() == []


# --- throttle_address, throttle_client ---------------------------------------------------------


@pytest.mark.parametrize("settings_extra",
                         [{"rate_limits": {"token_address": {"limit": 1, "window": 60}}}])
def test_the_address_budget_is_spent_before_authentication(services: Services,
                                                           db: Session) -> None:
    cc = new_client(services)
    first = refused(services, request(db, {"grant_type": CC},
                                      authorization=basic(cc["client_id"], "wrong")))
    assert first.error == "invalid_client"
    error = refused(services, request(db, {"grant_type": CC}, authorization=cc["basic"]))
    # authserver.ratelimit: the refused request counts too, so the retry waits past the window.
    assert_refused(error, 429, "rate_limited", "Rate limit exceeded",
                   {**NO_STORE, "Retry-After": "120"})
    # Another address has its own budget.
    other = pipeline.handle(services, request(db, {"grant_type": CC},
                                              authorization=cc["basic"], client_ip="192.0.2.2"))
    assert other.status == 200


@pytest.mark.parametrize("settings_extra",
                         [{"rate_limits": {"token_address": {"limit": 1, "window": 60}}}])
def test_an_unknown_grant_spends_no_budget(services: Services, db: Session) -> None:
    cc = new_client(services)
    refused(services, request(db, {"grant_type": "password"}, authorization=cc["basic"]))
    assert pipeline.handle(services, request(db, {"grant_type": CC},
                                             authorization=cc["basic"])).status == 200


@pytest.mark.parametrize("settings_extra", [{"rate_limits": {"token": {"limit": 1, "window": 60}}}])
def test_the_client_budget_is_spent_only_once_authenticated(services: Services,
                                                            db: Session) -> None:
    cc = new_client(services)
    assert pipeline.handle(services, request(db, {"grant_type": CC},
                                             authorization=cc["basic"])).status == 200
    # Presenting the client's id without its secret spends none of its budget...
    wrong = refused(services, request(db, {"grant_type": CC},
                                      authorization=basic(cc["client_id"], "wrong")))
    assert wrong.error == "invalid_client"
    # ...the client itself has spent all of it.
    error = refused(services, request(db, {"grant_type": CC}, authorization=cc["basic"]))
    # authserver.ratelimit: the refused request counts too, so the retry waits past the window.
    assert_refused(error, 429, "rate_limited", "Rate limit exceeded",
                   {**NO_STORE, "Retry-After": "120"})


class SharedRecordingStore(MemoryStore):
    """The embedded store standing in for Redis (so the registry cache holds snapshots),
    noting each call: one call is one round trip on Redis."""

    single_process = False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._in_batch = False

    def incr_windows(self, windows: Any, read: Any = ()) -> Any:
        self.calls.append(f"incr_windows({len(windows)}, read={list(read)})")
        self._in_batch = True  # the embedded store's batch runs its own get()s
        try:
            return super().incr_windows(windows, read)
        finally:
            self._in_batch = False

    def get(self, key: str) -> str | None:
        if not self._in_batch:
            self.calls.append(f"get({key})")
        return super().get(key)

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        self.calls.append(f"set({key})")
        super().set(key, value, ttl)


def recording(services: Services) -> SharedRecordingStore:
    store = SharedRecordingStore()
    services.store = store
    services.rate_limiter = RateLimiter(store, services.rate_limiter.limits)
    return store


def test_the_address_budget_reads_the_registry_generation_in_its_round_trip(
        services: Services, db: Session) -> None:
    store = recording(services)
    cc = new_client(services)
    store.calls.clear()
    for _ in range(2):
        assert pipeline.handle(services, request(db, {"grant_type": CC},
                                                 authorization=cc["basic"])).status == 200
    address = f"incr_windows(1, read={[registry_generation()]})"
    # Two round trips each: the address budget with the generation (the client's
    # registration set it), then the client's budget. Client authentication sends no GET of
    # its own, whether the client comes from the database (the first) or the cache.
    assert store.calls == [address, "incr_windows(1, read=[])"] * 2


def test_the_generation_read_with_the_address_budget_stops_a_deleted_client(
        services: Services, db: Session) -> None:
    recording(services)
    cc = new_client(services)
    assert pipeline.handle(services, request(db, {"grant_type": CC},
                                             authorization=cc["basic"])).status == 200
    with services.db.session() as session:  # the deletion renews the generation
        session.delete(session.get(Client, cc["client_id"]))
        session.commit()
    error = refused(services, request(db, {"grant_type": CC}, authorization=cc["basic"]))
    assert_refused(error, 401, "invalid_client", "Client authentication failed", CHALLENGE)


@pytest.mark.parametrize("settings_extra",
                         [{"rate_limits": {"token_address": {"limit": 1, "window": 60}}}])
def test_a_request_refused_by_the_address_budget_goes_no_further(services: Services,
                                                                 db: Session) -> None:
    store = recording(services)
    cc = new_client(services)
    pipeline.handle(services, request(db, {"grant_type": CC}, authorization=cc["basic"]))
    store.calls.clear()
    error = refused(services, request(db, {"grant_type": CC}, authorization=cc["basic"]))
    assert_refused(error, 429, "rate_limited", "Rate limit exceeded",
                   {**NO_STORE, "Retry-After": "120"})
    assert store.calls == [f"incr_windows(1, read={[registry_generation()]})"]


# --- the HTTP edge: it commits what the pipeline did -------------------------------------------


def _rollback_only(app: Any) -> None:
    """No hook commits (issue 17 item 2: teardown only rolls back what the handler did not
    commit), so what the token endpoint issued must be committed by the endpoint itself."""
    hooks = app.after_request_funcs[None]
    assert "commit" not in [hook.__name__ for hook in hooks]


def test_the_token_endpoint_commits_what_it_issued(app: Any, client: Any,
                                                   user_id: str, signed_in: str) -> None:
    from tests.http_helpers import authorization_params, authorize, pkce_pair
    from tests.http_helpers import register_client as register
    from tests.http_helpers import token_request as post_token

    registered = register(client, grant_types=["authorization_code", "refresh_token"],
                          redirect_uris=["https://client.example.com/cb"],
                          token_endpoint_auth_method="client_secret_basic", scope="read")
    verifier, challenge = pkce_pair()
    params = authorization_params(registered, challenge)
    code = authorize(client, params)
    _rollback_only(app)  # from here on, only the token endpoint's own commit counts
    # The code is spent and the grant and its refresh token are written...
    first = post_token(client, registered, grant_type="authorization_code", code=code,
                       redirect_uri=params["redirect_uri"], code_verifier=verifier)
    assert first.status_code == 200, first.get_json()
    # ...and so is each rotation...
    response = post_token(client, registered, grant_type="refresh_token",
                          refresh_token=first.get_json()["refresh_token"])
    assert response.status_code == 200, response.get_json()
    again = post_token(client, registered, grant_type="refresh_token",
                       refresh_token=response.get_json()["refresh_token"])
    assert again.status_code == 200, again.get_json()
    # ...and the code stays spent.
    reused = post_token(client, registered, grant_type="authorization_code", code=code,
                        redirect_uri=params["redirect_uri"], code_verifier=verifier)
    assert reused.get_json()["error_description"] == "The code was already used"


def test_a_failed_commit_is_503_and_issues_nothing(app: Any, client: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from tests.http_helpers import basic_auth
    from tests.http_helpers import register_client as register

    registered = register(client, grant_types=[CC],
                          token_endpoint_auth_method="client_secret_basic")

    def fail_commit(self: Any) -> None:
        raise sa.exc.OperationalError("COMMIT", {}, Exception("gone"))

    monkeypatch.setattr(sa.orm.Session, "commit", fail_commit)
    response = client.post("/token", data={"grant_type": CC},
                           headers=basic_auth(registered["client_id"],
                                              registered["client_secret"]))
    assert response.status_code == 503
    assert response.get_json() == {"error": "temporarily_unavailable"}
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"
    assert "access_token" not in response.get_data(as_text=True)
