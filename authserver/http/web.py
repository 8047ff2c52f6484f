"""User pages: sign in, the authorization endpoint's consent, connections, approvals, activity.

Browser sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure and `__Host-`
on https). Every form carries a per-session CSRF token. Signing in replaces the whole session
(no fixation). Which user is signed in is answered by one function, `current_user()`; how a
person proves it (local accounts for development, or a corporate IdP) sits behind it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

from authserver.authorize import (
    AuthorizeError,
    issue_code,
    redirect_location,
    validate_authorization_request,
)
from authserver.errors import AccessDeniedError
from authserver.models import User
from authserver.services import Services

bp = Blueprint("web", __name__)

# A dummy hash so an unknown username costs the same as a wrong password.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


def services() -> Services:
    return current_app.extensions["authserver"]  # type: ignore[no-any-return]


# --- session, CSRF ---------------------------------------------------------------------------


def current_user() -> User | None:
    if "current_user" in g:
        return g.current_user  # type: ignore[no-any-return]
    user = None
    uid = session.get("uid")
    if isinstance(uid, str):
        candidate = g.db.get(User, uid)
        signed_in_at = int(session.get("auth_time", 0))
        # Deprovisioning ends browser sessions too.
        if candidate is not None and candidate.active and \
                signed_in_at > candidate.tokens_valid_after:
            user = candidate
    g.current_user = user
    return user


def sign_in(user: User, *, now: int) -> None:
    session.clear()  # a fresh session: nothing from before sign-in survives (fixation)
    session["uid"] = user.id
    session["auth_time"] = now
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True
    g.current_user = user


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def check_csrf() -> None:
    expected = session.get("csrf")
    presented = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(str(expected), presented):
        abort(400, "CSRF token missing or invalid")


def safe_next(value: str | None) -> str:
    """Only same-origin relative paths: never an open redirector (RFC 9700 §4.11)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return url_for("web.home")


def login_redirect() -> Response:
    return redirect(url_for("web.login", next=request.full_path.rstrip("?")))


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "current_user": current_user()}


# --- sign in ---------------------------------------------------------------------------------


@bp.get("/")
def home() -> Any:
    if current_user() is None:
        return login_redirect()
    return redirect(url_for("web.connections"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    s = services()
    idps = sorted(s.federation.names()) if s.federation is not None else []
    nxt = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", idps=idps, next=nxt,
                               local_login=s.settings.local_login)
    check_csrf()
    if not s.settings.local_login:
        abort(404)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
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
    session.clear()
    return redirect(url_for("web.login"))


# --- RFC 6749 §4.1.1 authorization endpoint --------------------------------------------------


def _authorize_error(e: AuthorizeError) -> Any:
    if e.redirect_uri is None:
        return render_template("error.html", error=e.error.error,
                               description=e.error.description), 400
    return redirect(redirect_location(
        e.redirect_uri,
        {"error": e.error.error, "error_description": e.error.description, "state": e.state},
        issuer=services().settings.issuer,
    ), 303)


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Any:
    s = services()
    params = request.args if request.method == "GET" else request.form
    try:
        req = validate_authorization_request(
            g.db, params.to_dict(flat=False), supported_scopes=s.settings.scopes,
            known_resources=s.known_resources(),
        )
    except AuthorizeError as e:
        return _authorize_error(e)
    user = current_user()
    if user is None:
        if request.method == "POST":
            abort(400, "Sign in first")
        return login_redirect()
    if request.method == "GET":
        return render_template(
            "consent.html",
            client_name=req.client.client_metadata.get("client_name") or req.client.client_id,
            scopes=req.scope.split(),
            mandate_lines=_mandate_lines(req.authorization_details),
            resources=req.resources,
            dpop_bound=bool(req.dpop_jkt),
            params=req.as_params(),
        )
    check_csrf()
    if request.form.get("decision") != "allow":
        return _authorize_error(AuthorizeError(
            AccessDeniedError("The user denied the request"), req.redirect_uri, req.state))
    code = issue_code(g.db, req, user, now=g.now)
    # RFC 9700 §4.12: 303 after a POST, so the browser does not re-post credentials.
    return redirect(redirect_location(req.redirect_uri, {"code": code, "state": req.state},
                                      issuer=s.settings.issuer), 303)


def _mandate_lines(details: list[dict[str, Any]]) -> list[str]:
    from authserver.intent import describe_mandate

    return describe_mandate(details) if details else []


def login_url_for(next_path: str) -> str:
    return url_for("web.login") + "?" + urlencode({"next": next_path})
