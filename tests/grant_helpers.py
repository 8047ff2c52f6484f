"""Builders for the grant unit tests (tests/test_grant_*.py): the services `create_app` would
build, at a fixed `now`, a client, a user, a `TokenRequest` and a DPoP proof, all without HTTP;
and the one assertion of a refusal (class, `error`, description, status, `reason`, headers)."""

from __future__ import annotations

import json
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session

from authserver.app import build_services
from authserver.clients import OAuthClient, register_client, validate_client_metadata
from authserver.config import Settings
from authserver.db import Database
from authserver.errors import OAuthError
from authserver.models import Client, User
from authserver.outbound import FetchResult, Outbound, OutboundError
from authserver.services import Services
from authserver.token_endpoint.request import Form, TokenRequest
from authserver.tokens import verify_access_token
from tests.conftest import POSTGRES_URL
from tests.dpop_helpers import ProofKey

NOW = 1_800_000_000
ISSUER = "http://127.0.0.1:8000"
TOKEN_ENDPOINT = ISSUER + "/token"
RESOURCE = "https://api.example.com/mcp"
NO_STORE = {"Cache-Control": "no-store"}
IDP = "https://idp.example.com"
IDP_JWKS = IDP + "/jwks"
#: The edge's client id at the IdP: the audience of the ID tokens an edge exchanges.
EDGE_AUD = "edge-chat-app"
CRM_API = "https://crm.example.com/api/v1"
#: One downstream platform (`[platforms.crm]`): its gateway resource is ISSUER/gateway/crm.
PLATFORMS = {"crm": {
    "profile": "generic", "display_name": "Acme CRM",
    "authorize_url": "https://crm.example.com/oauth/authorize",
    "token_url": "https://crm.example.com/oauth/token",
    "revocation_url": "https://crm.example.com/oauth/revoke",
    "client_id": "authserver", "client_secret": "s", "scopes": ["deals.read"],
    "api_base_url": CRM_API, "resources": {"deal:{id}": "deals/{id}"}}}


# --- databases: migrated once per session, copied per test -----------------------------------
# Running the migrations takes seconds; a copy of a migrated database is a few milliseconds.


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grant_template") / "migrated.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is created from."""
    name = "tmpl_" + uuid.uuid4().hex[:12]
    _admin(f'CREATE DATABASE "{name}"')
    database = Database(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)
    database.upgrade()
    database.engine.dispose()
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(statement: str) -> None:
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(statement))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    shutil.copy(sqlite_template, tmp_path / "test.db")
    return f"sqlite:///{tmp_path}/test.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                 sqlite_template: Path) -> Iterator[str]:
    """tests/conftest.py's `database_url` (SQLite and PostgreSQL, a new database each test),
    copied from a migrated template instead of migrated anew."""
    if request.param == "sqlite":
        shutil.copy(sqlite_template, tmp_path / "test.db")
        yield f"sqlite:///{tmp_path}/test.db"
        return
    template = request.getfixturevalue("postgres_template")
    name = "t_" + uuid.uuid4().hex[:12]
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def built_services(tmp_path: Any, database_url: str, **extra: Any) -> Iterator[Services]:
    """Services over `database_url` with the embedded store, whose clock reads NOW."""
    settings = Settings.load({
        "data_dir": str(tmp_path / "data"), "testing": True, "issuer": ISSUER,
        "database_url": database_url, "redis_url": "", "resources": (RESOURCE,), **extra,
    })
    services = build_services(settings, lambda: NOW)
    try:
        yield services
    finally:
        services.db.engine.dispose()


@pytest.fixture
def db(services: Services) -> Iterator[Session]:
    """The request's session (each module's `services` fixture says over which database)."""
    session = services.db.sessionmaker()
    yield session
    session.close()


def new_client(services: Services, attributes: dict[str, Any] | None = None,
               **metadata: Any) -> str:
    """A registered client's id (confidential, client_secret_basic unless told)."""
    metadata.setdefault("token_endpoint_auth_method", "client_secret_basic")
    with services.db.session() as session:
        row, _ = register_client(
            session, validate_client_metadata(metadata, scopes=services.settings.scopes),
            now=NOW, attributes=attributes or {})
        client_id = row.client_id
    return client_id


def oauth_client(db: Session, client_id: str) -> OAuthClient:
    """The client as the pipeline hands it to a grant: loaded in the request's session."""
    row = db.get(Client, client_id)
    assert row is not None
    return OAuthClient(row)


def new_user(services: Services, user_id: str = "usr_alice", **values: Any) -> str:
    with services.db.session() as session:
        session.add(User(id=user_id, idp_issuer="https://idp.example", idp_subject=user_id,
                         created_at=NOW, **values))
    return user_id


def token_request(db: Session, form: Mapping[str, str | list[str]], *,
                  dpop: tuple[str, ...] = (), now: int = NOW) -> TokenRequest:
    """What the pipeline hands a grant: its allow-listed form, at `now`."""
    return TokenRequest(
        form=Form({k: v if isinstance(v, list) else [v] for k, v in form.items()}),
        query=Form({}), authorization=None, dpop=dpop, client_ip="192.0.2.1", now=now, db=db)


def proof(key: ProofKey, *, iat: int = NOW, **claims: Any) -> tuple[str, ...]:
    """A DPoP header for POST /token, dated `iat` (never the wall clock)."""
    return (key.proof(TOKEN_ENDPOINT, iat=iat, **claims),)


def refusal(call: Callable[[], Any]) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        call()
    return info.value


def assert_refusal(error: OAuthError, cls: type[OAuthError], status: int, code: str,
                   description: str | None, reason: str,
                   headers: dict[str, str] | None = None) -> None:
    """Exactly this refusal: so that no test passes because some other check refused."""
    assert type(error) is cls, type(error)
    assert (error.status_code, error.error, error.description, error.reason) == (
        status, code, description, reason)
    assert error.headers() == (NO_STORE if headers is None else headers)


def claims_of(services: Services, access_token: str) -> dict[str, Any]:
    """The verified claims of an access token we issued, at NOW."""
    return dict(verify_access_token(services.keyring, ISSUER, access_token, now=NOW))


# --- a corporate IdP without a server ----------------------------------------------------------


class FakeOutbound(Outbound):
    """The IdP's discovery document and JWKS, from memory."""

    def __init__(self, documents: dict[str, Any]) -> None:
        super().__init__(clock=lambda: NOW)
        self.documents = documents

    def get(self, url: str, *, max_bytes: int, accept: str = "application/json",
            authorization: str | None = None) -> FetchResult:
        if url not in self.documents:
            raise OutboundError("status 404")
        return FetchResult(url, 200, {}, json.dumps(self.documents[url]).encode())


class IdP:
    """The IdP's signing key, and the ID-JAGs and ID tokens it issues for alice."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})
        self.documents = {
            IDP + "/.well-known/openid-configuration": {
                "issuer": IDP, "authorization_endpoint": IDP + "/authorize",
                "token_endpoint": IDP + "/token", "jwks_uri": IDP_JWKS},
            IDP_JWKS: {"keys": [{**self.key.as_dict(private=False), "use": "sig",
                                 "alg": "ES256"}]},
        }

    def outbound(self) -> FakeOutbound:
        return FakeOutbound(self.documents)

    def id_jag(self, client_id: str, *, header: dict[str, Any] | None = None,
               **claims: Any) -> str:
        """An ID-JAG for alice, for this server, naming `client_id` (None removes a claim)."""
        return self._sign({"typ": "oauth-id-jag+jwt", **(header or {})}, {
            "aud": ISSUER, "client_id": client_id, **claims})

    def id_token(self, **claims: Any) -> str:
        """Alice's ID token for the edge (`aud` EDGE_AUD), as the edge mint's subject_token."""
        return self._sign({"typ": "JWT"}, {"aud": EDGE_AUD, **claims})

    def _sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        body = {"iss": IDP, "sub": "alice", "jti": secrets.token_urlsafe(12), "iat": NOW,
                "exp": NOW + 300, "auth_time": NOW - 60, "email": "alice@acme.example",
                **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "ES256", "kid": "idp-1", **header}, body, self.key)
