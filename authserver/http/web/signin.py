"""The front door and signing in and out: local accounts, a corporate IdP (OIDC), throttling.

Signing in starts a new session under a new id (no fixation); signing out and "sign out
everywhere" end sessions in the store. Sign-in attempts are throttled per account and per
client address (authserver/ratelimit.py).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import (
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from sqlalchemy import select
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

from authserver.http.browser import allow_form_targets
from authserver.http.sessions import end_session, rotate_session
from authserver.http.unit_of_work import commit
from authserver.http.web.common import (
    bp,
    check_csrf,
    current_user,
    login_redirect,
    safe_next,
    services,
)
from authserver.models import User
from authserver.ratelimit import SIGN_IN_ACCOUNT, SIGN_IN_ADDRESS
from authserver.sessions import end_all_sessions

# A dummy hash so an unknown username costs the same as a wrong password.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


def sign_in(user: User, *, now: int) -> None:
    """Start the signed-in session, however the user proved who they are."""
    rotate_session()  # a new id, and nothing from before sign-in survives (fixation)
    session["uid"] = user.id
    session["auth_time"] = now
    session["csrf"] = secrets.token_urlsafe(32)
    g.current_user = user


# --- the front door, local sign-in, sign-out ---------------------------------------------------


@bp.get("/favicon.ico")
def favicon() -> Any:
    assert current_app.static_folder is not None
    return send_from_directory(current_app.static_folder, "favicon.ico",
                               mimetype="image/vnd.microsoft.icon", max_age=86400)


@bp.get("/")
def home() -> Any:
    if current_user() is None:
        return login_redirect()
    return redirect(url_for("web.connections"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    s = services()
    idps = sorted(s.federation.names) if s.federation is not None else []
    nxt = safe_next(request.values.get("next"))
    _allow_idp_targets(idps)
    if request.method == "GET":
        return render_template("login.html", idps=idps, next=nxt,
                               local_login=s.settings.local_login)
    check_csrf()
    if not s.settings.local_login:
        abort(404)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    # Counted before the password is checked (and every attempt counts): a spent budget
    # answers 429 even for the right password, so guessing learns nothing.
    _throttle_sign_in(username)
    user = g.db.scalars(
        select(User).where(User.idp_issuer == "local", User.idp_subject == username)
    ).first()
    valid = check_password_hash(user.password_hash if user and user.password_hash
                                else _DUMMY_HASH, password)
    if user is None or not valid or not user.active:
        return render_template("login.html", idps=idps, next=nxt, error="Sign-in failed.",
                               local_login=True), 401
    sign_in(user, now=g.now)
    return redirect(nxt)


@bp.post("/logout")
def logout() -> Response:
    check_csrf()
    end_session()  # the record is deleted: a copy of the cookie is worthless from now on
    return redirect(url_for("web.login"))


@bp.post("/logout/everywhere")
def logout_everywhere() -> Response:
    """End every session of the signed-in user, on every device and instance."""
    check_csrf()
    user = current_user()
    if user is not None:
        end_all_sessions(services().store, user.id)
    end_session()
    return redirect(url_for("web.login"))


def _throttle_sign_in(username: str | None) -> None:
    """Raises RateLimitedError (429 page, Retry-After) once a budget is spent."""
    limiter = services().rate_limiter
    limiter.hit(SIGN_IN_ADDRESS, request.remote_addr or "unknown", now=g.now)
    if username is not None:
        limiter.hit(SIGN_IN_ACCOUNT, username, now=g.now)


def _allow_idp_targets(idps: list[str]) -> None:
    """The sign-in page's IdP buttons POST to us, and we redirect to the IdP's authorization
    endpoint: CSP form-action must name it (Chromium checks redirects after a form POST)."""
    from authserver.errors import OAuthError

    for name in idps:
        provider = services().require_federation().get(name)
        try:
            endpoint = provider.metadata(now=g.now)["authorization_endpoint"]
        except OAuthError:
            continue  # the IdP is unreachable: its button fails (503) until it is back
        allow_form_targets(endpoint)


# --- corporate IdP sign-in (OIDC) -------------------------------------------------------------


def _provider(name: str) -> Any:
    federation = services().federation
    if federation is None or name not in federation.names:
        abort(404)
    return federation.get(name)


def _callback_uri(name: str) -> str:
    return f"{services().settings.issuer}/login/{name}/callback"


@bp.post("/login/<name>")
def login_idp(name: str) -> Response:
    check_csrf()
    _throttle_sign_in(None)
    provider = _provider(name)
    login_hint = request.form.get("login_hint") or None
    start = provider.begin_login(redirect_uri=_callback_uri(name), now=g.now,
                                 login_hint=login_hint)
    session["oidc"] = {"idp": name, "state": start.state, "nonce": start.nonce,
                       "verifier": start.code_verifier,
                       "next": safe_next(request.form.get("next"))}
    return redirect(start.url)


@bp.get("/login/<name>/callback")
def login_idp_callback(name: str) -> Any:
    from authserver.errors import OAuthError
    from authserver.identity.users import provision_user

    provider = _provider(name)
    pending = session.pop("oidc", None)
    if not isinstance(pending, dict) or pending.get("idp") != name:
        return render_template("error.html", error="invalid_request",
                               description="No sign-in is in progress."), 400
    try:
        code = provider.verify_callback(request.args.to_dict(), expected_state=pending["state"],
                                        now=g.now)
        claims = provider.complete_login(code=code, redirect_uri=_callback_uri(name),
                                         expected_nonce=pending["nonce"],
                                         code_verifier=pending["verifier"], now=g.now)
        user = provision_user(g.db, provider.config, claims, now=g.now)
    except OAuthError as e:
        return render_template("error.html", error=e.error, description=e.description), \
            e.status_code
    commit()  # the user (JIT, claims synced) is stored before a session names them
    sign_in(user, now=g.now)
    return redirect(safe_next(pending.get("next")))
