"""Connections: the credential broker's user side (connect, callback, disconnect)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from flask import abort, g, redirect, render_template, request, session, url_for

from authserver.http.browser import allow_form_targets
from authserver.http.unit_of_work import commit
from authserver.http.web.common import (
    audit_user_event,
    bp,
    check_csrf,
    current_user,
    login_redirect,
    notice,
    pop_notice,
    services,
)


def _platform(name: str) -> Any:
    platform = services().platforms.get(name)
    if platform is None:
        abort(404)
    return platform


def _session_binding() -> str:
    if "sb" not in session:
        session["sb"] = secrets.token_urlsafe(32)
    return str(session["sb"])


def _connection_callback(name: str) -> str:
    return f"{services().settings.issuer}/connections/{name}/callback"


@bp.get("/connections")
def connections() -> Any:
    from authserver.broker.connections import connection_sites, user_connections
    from authserver.presentation import expires_soon, grant_expires_at

    user = current_user()
    if user is None:
        return login_redirect()
    # Connect buttons POST to us and we redirect to the platform (CSP form-action).
    allow_form_targets(*(p.authorize_url for p in services().platforms.values()))
    mine = {c.platform: c for c in user_connections(g.db, user.id)}
    rows = []
    for name, p in sorted(services().platforms.items()):
        conn = mine.get(name)
        last_refresh = (conn.access_obtained_at or conn.updated_at) if conn else None
        expires_at = grant_expires_at(
            p.profile.refresh_idle_lifetime,
            conn is not None and conn.refresh_token_ciphertext is not None, last_refresh)
        rows.append({
            "name": name, "display_name": p.display_name, "connection": conn,
            "state": _connection_state(conn),
            "scopes": conn.scope.split() if conn is not None and conn.scope else [],
            "last_refresh": last_refresh,
            "account": conn.account_label if conn else None,
            "sites": connection_sites(conn) if conn else None,
            "expires_at": expires_at,
            "expires_soon": _connection_state(conn) == "healthy"
            and expires_soon(expires_at, int(g.now)),
        })
    return render_template("connections.html", rows=rows, notice=pop_notice())


def _connection_state(conn: Any) -> str:
    """`healthy`, `needs_reconnect` or `not_connected` (also after a disconnect)."""
    from authserver.models.broker import CONNECTION_ACTIVE, CONNECTION_NEEDS_RECONNECT

    if conn is None or conn.status not in (CONNECTION_ACTIVE, CONNECTION_NEEDS_RECONNECT):
        return "not_connected"
    return "healthy" if conn.status == CONNECTION_ACTIVE else "needs_reconnect"


@bp.route("/connections/<name>/connect", methods=["GET", "POST"])
def connect(name: str) -> Any:
    """GET (the `connect_uri` an agent hands the user) shows a confirm button; POST starts."""
    from authserver.broker.connections import start_connect

    platform = _platform(name)
    user = current_user()
    if user is None:
        return login_redirect()
    allow_form_targets(platform.authorize_url)  # the POST redirects there
    if request.method == "GET":
        return render_template("connect.html", platform=platform)
    check_csrf()
    url = start_connect(services().store, platform, user_id=user.id,
                        session_binding=_session_binding(),
                        redirect_uri=_connection_callback(name), now=g.now)
    login_hint = request.form.get("login_hint")
    if login_hint:
        url += "&" + urlencode({"login_hint": login_hint})
    return redirect(url)


def _connection_error(error: str, description: str | None, status: int) -> Any:
    return render_template("error.html", error=error, description=description,
                           back=url_for("web.connections"), back_label="Back to Connections"
                           ), status


@bp.get("/connections/<name>/callback")
def connect_callback(name: str) -> Any:
    from authserver.broker.connections import finish_connect
    from authserver.errors import OAuthError

    platform = _platform(name)
    user = current_user()
    if user is None:
        return login_redirect()
    s = services()
    if "error" in request.args or not request.args.get("code"):
        return _connection_error("access_denied",
                                 f"{platform.display_name} did not grant access.", 400)
    try:
        conn = finish_connect(s.db, s.store, s.vault, platform,
                              state=request.args.get("state", ""),
                              code=request.args["code"], user_id=user.id,
                              session_binding=_session_binding(),
                              redirect_uri=_connection_callback(name), now=g.now)
    except OAuthError as e:
        return _connection_error(e.error, e.description, e.status_code)
    audit_user_event("connection", "connected", user.id, name, {"connection": conn.id})
    commit()
    notice(f"You connected {platform.display_name}.")
    return redirect(url_for("web.connections"), 303)


@bp.route("/connections/<name>/disconnect", methods=["GET", "POST"])
def disconnect(name: str) -> Any:
    """GET asks "Disconnect …?"; only that page's form (confirmed=yes) disconnects."""
    from authserver.broker.connections import disconnect as broker_disconnect
    from authserver.broker.connections import user_connections

    platform = _platform(name)
    user = current_user()
    if user is None:
        return login_redirect()
    if request.method == "GET":
        conn = next((c for c in user_connections(g.db, user.id) if c.platform == name), None)
        return render_template("confirm.html", title=f"Disconnect {platform.display_name}?",
                               body=[f"Agents will no longer be able to act for you at "
                                     f"{platform.display_name}. Your grant there is revoked "
                                     "and its tokens are deleted here.",
                                     "You can connect again at any time."],
                               connected=_connection_state(conn) != "not_connected",
                               action=url_for("web.disconnect", name=name),
                               button="Disconnect", back=url_for("web.connections"))
    check_csrf()
    if request.form.get("confirmed") != "yes":
        return redirect(url_for("web.disconnect", name=name), 303)
    s = services()
    existed = broker_disconnect(s.db, s.store, s.vault, platform, user_id=user.id, now=g.now)
    audit_user_event("connection", "disconnected", user.id, name, {"existed": existed})
    commit()
    notice(f"You disconnected {platform.display_name}." if existed
           else f"{platform.display_name} was not connected.")
    return redirect(url_for("web.connections"), 303)
