"""The Flask application factory: settings → services → blueprints. Nothing runs at import."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request

from authserver.clients import JwksCache
from authserver.config import SESSION_TTL, Settings
from authserver.db import Database
from authserver.http.unit_of_work import close as close_session
from authserver.keys import KeyRing, check_secret_key
from authserver.kms import KEKError, LocalKMS
from authserver.outbound import Outbound
from authserver.services import Services
from authserver.store import create_store
from authserver.urls import is_https_url, is_loopback_http_url

log = logging.getLogger("authserver")

#: The largest request body we read, whatever its framing (Content-Length or chunked).
MAX_BODY_BYTES = 256 * 1024


def create_app(config: Settings | Mapping[str, Any] | None = None, *,
               clock: Callable[[], float] = time.time) -> Flask:
    """`clock` is the one time source of the app (read once per request as `g.now`); tests
    pass their own to run at a chosen instant."""
    settings = config if isinstance(config, Settings) else Settings.load(config)
    from authserver import observability

    observability.configure_logging(settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Authlib logs issued tokens at DEBUG; never let that level through.
    logging.getLogger("authlib").setLevel(logging.WARNING)
    services = build_services(settings, clock)
    if services.store.single_process:
        _warn_embedded_store()

    app = Flask(__name__, template_folder="templates")
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=is_https_url(settings.issuer),
        SESSION_COOKIE_NAME="__Host-authserver" if is_https_url(settings.issuer)
        else "authserver_session",
        PERMANENT_SESSION_LIFETIME=SESSION_TTL,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        TESTING=settings.testing,
    )
    app.extensions["authserver"] = services
    app.extensions["authserver.ready_checks"] = {
        "database": services.db.ping,
        "store": services.store.ping,
    }
    # Observability first: hooks run in registration order, so every later log line has the
    # correlation id.
    from authserver.http import observability as request_observability

    request_observability.init_app(app)
    from authserver.http import browser

    # Security headers on every response, error pages included.
    browser.init_app(app, https=is_https_url(settings.issuer))
    _request_lifecycle(app, services, clock)

    from authserver.http import admin, errors, gateway, oauth, ops, sessions, web

    # Browser sessions live in the shared store; the cookie carries only their id.
    sessions.init_app(app, services.store, clock)
    errors.init_app(app)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(gateway.bp)
    app.register_blueprint(admin.bp)
    from authserver.http import scim

    app.register_blueprint(scim.bp)  # SCIM 2.0 provisioning (authserver/scim.py)
    from authserver.http import ssf

    app.register_blueprint(ssf.bp)  # Shared Signals receiver (authserver/ssf.py)
    app.register_blueprint(ops.ops)
    app.register_blueprint(web.bp)
    app.wsgi_app = BodyLimit(app.wsgi_app, MAX_BODY_BYTES)  # type: ignore[method-assign]
    # Outermost: the client address behind a trusted proxy (deploy/nginx), before anything
    # reads REMOTE_ADDR.
    from authserver.http.proxy import TrustedProxies

    app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
        app.wsgi_app, settings.trusted_proxies)
    return app


class BodyLimit:
    """WSGI middleware: a body without Content-Length (chunked) is held to `limit` too.

    Werkzeug checks `max_content_length` against Content-Length, and on a server-terminated
    stream (`wsgi.input_terminated`: gunicorn, chunked requests on the dev server) it stops
    reading at the limit and parses the truncated body. So such a body is read here, at most
    `limit + 1` bytes, and handed on with the Content-Length it has: over the limit, Werkzeug
    then answers 413 through the one error handler; within it, the request is unchanged.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("CONTENT_LENGTH") in (None, "") and environ.get("wsgi.input_terminated"):
            import io

            stream = environ["wsgi.input"]
            body = bytearray()
            while len(body) <= self.limit:
                chunk = stream.read(min(64 * 1024, self.limit + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)  # the body now has a known length
        return self.app(environ, start_response)


_warned_embedded_store = False


def _warn_embedded_store() -> None:
    """Once per process, and only from the server: admin commands and the demo are one process
    by nature, so there the warning would only be noise."""
    global _warned_embedded_store
    if not _warned_embedded_store:
        _warned_embedded_store = True
        log.warning(
            "embedded store in use: replay caches, nonces, locks and rate limits are held in "
            "this process only; set AUTHSERVER_REDIS_URL before running more than one process"
        )


def build_services(settings: Settings, clock: Callable[[], float] = time.time) -> Services:
    from authserver import refresh_tokens
    from authserver.audit import AuditLog
    from authserver.broker.profiles import Platform
    from authserver.broker.vault import Vault
    from authserver.cimd import CimdResolver
    from authserver.dpop import NonceIssuer
    from authserver.identity.federation import Federation
    from authserver.policy import PolicyEngine
    from authserver.ratelimit import RateLimiter

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    if settings.auto_migrate:
        db.upgrade()
    with db.session() as session:
        stored = KeyRing.has_stored_keys(session)
    if stored and not Path(settings.kek_file).exists():
        # A new KEK could open nothing stored: refuse rather than start "ready" and fail
        # every token request.
        raise KEKError(f"key-encryption key file {settings.kek_file} does not exist, but the "
                       "database already holds keys wrapped by a KEK: restore that file")
    kms = LocalKMS(settings.kek_file, create=not stored)
    previous_keks = tuple(LocalKMS(path, create=False) for path in settings.previous_kek_files)
    keyring = KeyRing(db, kms, previous_keks)
    with db.session() as session:
        keyring.check_keks(session, int(clock()))
        keyring.ensure_key(session, int(clock()))
        check_secret_key(session, _secret_key(settings), int(clock()))
    store = create_store(settings.redis_url or None, settings.redis_key_prefix)
    origin_nonces = NonceIssuer([_secret_key(settings).encode()], context=b"token-endpoint")
    # Every fetch from a URL a client chose (jwks_uri, client metadata documents): the SSRF
    # rule at connect time; internal addresses only for a loopback issuer (development).
    outbound = Outbound(allow_internal=is_loopback_http_url(settings.issuer), clock=clock)
    return Services(
        settings=settings,
        db=db,
        store=store,
        kms=kms,
        keyring=keyring,
        jwks_cache=JwksCache(outbound),
        outbound=outbound,
        cimd=CimdResolver(outbound, scopes=settings.scopes),
        nonces=origin_nonces,
        # One nonce policy per origin (DPOP-33): the gateway shares our origin, and clients
        # keep one nonce per origin, so a nonce from either endpoint is good at both.
        gateway_nonces=origin_nonces,
        refresh_successor_key=refresh_tokens.successor_key(_secret_key(settings)),
        # The app refuses to start on an invalid policy set (PolicyLoadError propagates).
        policy=PolicyEngine.load(settings.policy_dir),
        federation=Federation.from_settings(settings.idps, store) if settings.idps else None,
        rate_limiter=RateLimiter.from_settings(store, settings.rate_limits),
        audit=AuditLog(),
        vault=Vault(kms, previous_keks),
        platforms={name: Platform.from_settings(name, table)
                   for name, table in settings.platforms.items()},
    )


def _secret_key(settings: Settings) -> str:
    """AUTHSERVER_SECRET_KEY, or one generated on first start in the data dir (0600).

    Every instance of a deployment must share it (sessions, DPoP nonces): set it explicitly
    when running on more than one host.
    """
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    except FileExistsError:
        pass
    return path.read_text().strip()


def _request_lifecycle(app: Flask, services: Services, clock: Callable[[], float]) -> None:
    """One clock reading and one DB session per request (the unit of work).

    No hook commits: a handler that writes commits explicitly (authserver.http.unit_of_work),
    and teardown rolls back whatever was not committed and closes the session. A request that
    ran no statement costs no round trip (the session begins on its first statement)."""

    @app.before_request
    def refuse_control_characters() -> None:
        # Before any lookup: a NUL would otherwise reach PostgreSQL (issue 13, item 4). The
        # gateway forwards its bodies, so only its query string is read here.
        from authserver.token_endpoint.parameters import check_parameter_characters

        check_parameter_characters(
            request.args, *(() if request.blueprint == "gateway" else (request.form,)))

    @app.before_request
    def open_request() -> None:
        g.now = int(clock())
        g.db = services.db.sessionmaker()

    @app.after_request
    def expose_dpop_headers(response: Response) -> Response:
        # RFC 9449 §8, §7.1 (DPOP-34): browser clients must be able to read these.
        if request.path == "/token" or request.path.startswith("/gateway/"):
            response.headers["Access-Control-Expose-Headers"] = "DPoP-Nonce, WWW-Authenticate"
        return response

    @app.teardown_request
    def close(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            close_session(session)
