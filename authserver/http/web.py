"""User pages: sign in, the authorization endpoint's consent, connections, approvals, activity.

Browser sessions are server-side (authserver/sessions.py): the cookie (HttpOnly,
SameSite=Lax, Secure and `__Host-` on https) carries only a random session id. Every form
carries a per-session CSRF token. Signing in starts a new session under a new id (no
fixation); signing out, "sign out everywhere" and deprovisioning end sessions in the store.
After sign-in the browser goes only to a path on our own origin (`safe_redirect_path`).
Sign-in attempts are throttled per account and per client address (authserver/ratelimit.py).
Which user is signed in is answered by one function, `current_user()`; how a person proves
it (local accounts for development, or a corporate IdP) sits behind it.
Security headers and error pages are set in one place, authserver/http/browser.py.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from flask import (
    Blueprint,
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

from authserver.authorize import (
    AuthorizeError,
    issue_code,
    redirect_location,
    validate_authorization_request,
)
from authserver.errors import AccessDeniedError
from authserver.http.browser import allow_form_targets
from authserver.models import User
from authserver.ratelimit import SIGN_IN_ACCOUNT, SIGN_IN_ADDRESS
from authserver.services import Services
from authserver.sessions import end_all_sessions, end_session, rotate_session

bp = Blueprint("web", __name__)

# A dummy hash so an unknown username costs the same as a wrong password.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


def services() -> Services:
    return current_app.extensions["authserver"]


# --- session, CSRF ---------------------------------------------------------------------------


def current_user() -> User | None:
    if "current_user" in g:
        return g.current_user
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
    rotate_session()  # a new id, and nothing from before sign-in survives (fixation)
    session["uid"] = user.id
    session["auth_time"] = now
    session["csrf"] = secrets.token_urlsafe(32)
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


#: Longest `next` we keep (an /authorize request with authorization_details can be long).
MAX_NEXT_LENGTH = 8192
#: Printable ASCII without space and backslash: browsers drop tabs and newlines inside a URL
#: and read '\\' as '/', so "/\t/evil" and "/\\evil" would both become "//evil".
_PATH_CHARACTERS = re.compile(r"[\x21-\x5b\x5d-\x7e]+")


def _is_own_path(value: str) -> bool:
    if not _PATH_CHARACTERS.fullmatch(value) or not value.startswith("/") \
            or value.startswith("//"):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def safe_redirect_path(value: str | None, default: str) -> str:
    """`value` if it is a path on our own origin, else `default`: never an open redirector
    (RFC 9700 §4.11). Parsed, not prefix-matched: no scheme, no authority, no backslash, no
    control character or whitespace; and its path is still one of ours after one and after
    two percent-decodings (so "/%2F/evil", "/%5Cevil", "/%09/evil" and "/%252F%252Fevil" are
    refused, whoever decodes them later). The query may hold anything percent-encoded."""
    if not value or len(value) > MAX_NEXT_LENGTH or not _is_own_path(value):
        return default
    path = urlsplit(value).path
    for _ in range(2):
        path = unquote(path)
        if not _is_own_path(path):
            return default
    return value


def safe_next(value: str | None) -> str:
    return safe_redirect_path(value, url_for("web.home"))


def login_redirect() -> Response:
    return redirect(url_for("web.login", next=request.full_path.rstrip("?")))


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    # Error pages skip the signed-in header: they must render even when the database is down.
    return {"csrf_token": csrf_token,
            "current_user": None if g.get("error_page") else current_user()}


@bp.app_template_filter("iso_utc")
def _iso_utc(ts: int | None) -> str:
    from authserver.presentation import iso_utc

    return iso_utc(ts)


@bp.app_template_filter("utc")
def _readable_utc(ts: int | None) -> str:
    from authserver.presentation import readable_utc

    return readable_utc(ts)


@bp.app_template_filter("ago")
def _relative(ts: int | None) -> str:
    from authserver.presentation import relative

    return relative(ts, g.now)


# --- sign in ---------------------------------------------------------------------------------


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

    federation = services().federation
    for name in idps:
        provider = federation.get(name)
        try:
            endpoint = provider.metadata(now=g.now)["authorization_endpoint"]
        except OAuthError:
            continue  # the IdP is unreachable: its button fails (503) until it is back
        allow_form_targets(endpoint)


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
            known_resources=s.known_resources(), cimd=s.cimd, now=g.now,
        )
    except AuthorizeError as e:
        return _authorize_error(e)
    user = current_user()
    if user is None:
        if request.method == "POST":
            abort(400, "Sign in first")
        return login_redirect()
    allow_form_targets(req.redirect_uri)  # both decisions redirect there
    if request.method == "GET":
        from authserver.presentation import client_identity, scope_in_words

        identity = client_identity(req.client, trusted_hosts=s.settings.cimd_trusted_hosts)
        return render_template(
            "consent.html",
            client=identity, client_name=identity.name,
            redirect_host=urlsplit(req.redirect_uri).hostname or req.redirect_uri,
            scopes=[(sc, scope_in_words(sc)) for sc in req.scope.split()],
            offline=" offline_access " in f" {req.scope} ",
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
    sign_in(user, now=g.now)
    return redirect(safe_next(pending.get("next")))


# --- connections (the credential broker's user side) ------------------------------------------


def _platform(name: str) -> Any:
    platform = services().platforms.get(name)
    if platform is None:
        abort(404)
    return platform


def _platform_name(name: str | None) -> str | None:
    if name is None:
        return None
    platform = services().platforms.get(name)
    return platform.display_name if platform is not None else name


def _session_binding() -> str:
    if "sb" not in session:
        session["sb"] = secrets.token_urlsafe(32)
    return str(session["sb"])


def _connection_callback(name: str) -> str:
    return f"{services().settings.issuer}/connections/{name}/callback"


def _notice(text: str) -> None:
    """One line for the next page this browser shows ("You disconnected Acme CRM.")."""
    session["notice"] = text


def _pop_notice() -> str | None:
    value = session.pop("notice", None)
    return str(value) if value else None


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
    return render_template("connections.html", rows=rows, notice=_pop_notice())


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
    _audit_user_event("connection", "connected", user.id, name, {"connection": conn.id})
    _notice(f"You connected {platform.display_name}.")
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
    _audit_user_event("connection", "disconnected", user.id, name, {"existed": existed})
    _notice(f"You disconnected {platform.display_name}." if existed
            else f"{platform.display_name} was not connected.")
    return redirect(url_for("web.connections"), 303)


def _audit_user_event(event: str, outcome: str, user_id: str, platform: str | None,
                      detail: dict[str, Any], *, agent_id: str | None = None,
                      intent: dict[str, Any] | None = None,
                      approval_id: str | None = None) -> None:
    from authserver.audit import AuditRecord
    from authserver.observability import correlation_id

    # In the request's transaction: the record commits together with the change it records.
    services().audit.append(g.db, AuditRecord(
        event=event, outcome=outcome, correlation_id=correlation_id(), user_id=user_id,
        agent_id=agent_id, platform=platform, intent=intent, approval_id=approval_id,
        client_ip=request.remote_addr, detail=detail), now=g.now)


# --- clients as the user sees them --------------------------------------------------------------


def _identity(client_id: str) -> Any:
    from authserver.models import Client
    from authserver.presentation import ClientIdentity, client_identity

    cache: dict[str, Any] = g.setdefault("identities", {})
    if client_id not in cache:
        row = g.db.get(Client, client_id) if len(client_id) <= 255 else None
        trusted = current_app.extensions["authserver"].settings.cimd_trusted_hosts
        cache[client_id] = client_identity(row, trusted_hosts=trusted) if row is not None else \
            ClientIdentity(client_id, client_id, None, False)
    return cache[client_id]


# --- step-up approvals -------------------------------------------------------------------------


def _card(item: Any) -> Any:
    from authserver.approvals import approval_card

    return approval_card(item, agent=_identity(item.agent_id),
                         platform_name=_platform_name(item.platform), now=g.now)


@bp.get("/approvals")
def approvals() -> Any:
    from authserver.approvals import decided_for_user, pending_for_user

    user = current_user()
    if user is None:
        return login_redirect()
    decided = None
    decided_id = session.pop("decided", None)
    if isinstance(decided_id, str):
        from authserver.models.approvals import Approval

        item = g.db.get(Approval, decided_id)
        if item is not None and item.user_id == user.id:
            decided = _card(item)
    return render_template(
        "approvals.html", decided=decided,
        cards=[_card(a) for a in pending_for_user(g.db, user.id, g.now)],
        history=[_card(a) for a in decided_for_user(g.db, user.id, g.now)])


def _own_approval(approval_id: str, user: User) -> Any:
    from authserver.models.approvals import Approval

    item = g.db.get(Approval, approval_id) if len(approval_id) <= 64 else None
    if item is None or item.user_id != user.id:  # only the bound user sees it
        abort(404)
    return item


@bp.get("/approvals/<approval_id>")
def approval(approval_id: str) -> Any:
    user = current_user()
    if user is None:
        return login_redirect()
    item = _own_approval(approval_id, user)
    return render_template("approvals.html", cards=[_card(item)], single=True)


@bp.post("/approvals/<approval_id>")
def decide(approval_id: str) -> Any:
    from authserver.approvals import decide_approval
    from authserver.errors import OAuthError
    from authserver.presentation import phrase_matches

    user = current_user()
    if user is None:
        return login_redirect()
    check_csrf()
    decision = request.form.get("decision")
    if decision not in ("approve", "decline"):
        abort(400, "decision must be approve or decline")
    if decision == "approve":
        # Destructive and bulk actions: Approve works only with the record's name (or the
        # number of records) typed in, a deliberate second step no stray click can make.
        card = _card(_own_approval(approval_id, user))
        if card.confirm_phrase is not None and card.state == "pending" and \
                not phrase_matches(card.confirm_phrase, request.form.get("confirm")):
            return render_template(
                "approvals.html", cards=[card], single=True,
                confirm_error=f"Type {card.confirm_phrase} exactly to approve; nothing was "
                              "approved."), 400
    try:
        item = decide_approval(g.db, approval_id, user_id=user.id,
                               approve=decision == "approve", now=g.now)
    except OAuthError as e:
        return render_template("error.html", error=e.error, description=e.description,
                               back=url_for("web.approvals"), back_label="Back to Approvals"
                               ), e.status_code
    _audit_user_event("approval", "approved" if decision == "approve" else "declined",
                      user.id, item.platform, {"approval_id": item.id, "agent": item.agent_id},
                      agent_id=item.agent_id, intent=item.intent, approval_id=item.id)
    session["decided"] = item.id
    return redirect(url_for("web.approvals"), 303)


# --- activity ------------------------------------------------------------------------------------

#: Rows per Activity page; what one export holds at most.
ACTIVITY_PAGE = 25
EXPORT_LIMIT = 10_000
#: Events an agent starts (what "last used" means on the Agents page).
AGENT_EVENTS = ("token_exchange", "gateway_call", "edge_mint")


def _activity_filters() -> dict[str, Any]:
    from authserver.presentation import OUTCOME_FILTERS

    args = request.args
    filters: dict[str, Any] = {}
    agent = args.get("agent", "")
    if agent and len(agent) <= 255:
        filters["agent"] = agent
    platform = args.get("platform", "")
    if platform in services().platforms:
        filters["platform"] = platform
    if args.get("outcome", "") in OUTCOME_FILTERS:
        filters["outcome"] = args["outcome"]
    return filters


def _activity_query(user_id: str, filters: dict[str, Any]) -> Any:
    from authserver.models.audit import AuditEvent
    from authserver.presentation import OUTCOME_FILTERS

    query = select(AuditEvent).where(AuditEvent.user_id == user_id)
    if "agent" in filters:
        query = query.where(AuditEvent.agent_id == filters["agent"])
    if "platform" in filters:
        query = query.where(AuditEvent.platform == filters["platform"])
    if "outcome" in filters:
        query = query.where(AuditEvent.outcome.in_(sorted(OUTCOME_FILTERS[filters["outcome"]])))
    return query


def _activity_row(e: Any) -> dict[str, Any]:
    from authserver.presentation import event_sentence, is_possible_injection, is_refusal

    agent = _identity(e.agent_id) if e.agent_id else None
    platform = _platform_name(e.platform)
    return {
        "event": e, "count": 1, "first_at": e.created_at,
        "sentence": event_sentence(e, agent=agent.name if agent else "An agent",
                                   platform=platform),
        "agent": agent, "platform": platform,
        "refused": is_refusal(e), "injection": is_possible_injection(e),
        "key": (e.event, e.outcome, e.reason, e.agent_id, e.platform, e.intent_hash),
    }


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Repeated identical gateway calls, one after another, become one row ("20 times")."""
    out: list[dict[str, Any]] = []
    for row in rows:
        last = out[-1] if out else None
        if last is not None and row["event"].event == "gateway_call" and \
                last["key"] == row["key"]:
            last["count"] += 1
            last["first_at"] = row["event"].created_at
        else:
            out.append(row)
    return out


@bp.get("/activity")
def activity() -> Any:
    from authserver.models.audit import AuditEvent

    user = current_user()
    if user is None:
        return login_redirect()
    filters = _activity_filters()
    query = _activity_query(user.id, filters)
    before = request.args.get("before", "")
    if before.isdigit() and len(before) <= 18:
        query = query.where(AuditEvent.seq < int(before))
    events = list(g.db.scalars(query.order_by(AuditEvent.seq.desc())
                               .limit(ACTIVITY_PAGE + 1)).all())
    older = events[ACTIVITY_PAGE - 1].seq if len(events) > ACTIVITY_PAGE else None
    rows = _grouped([_activity_row(e) for e in events[:ACTIVITY_PAGE]])
    agent_ids = sorted({a for a in g.db.scalars(
        select(AuditEvent.agent_id).where(AuditEvent.user_id == user.id,
                                          AuditEvent.agent_id.is_not(None)).distinct())
        if a is not None})
    return render_template(
        "activity.html", rows=rows, filters=filters, paged=bool(before),
        older_url=url_for("web.activity", before=older, **filters) if older else None,
        newest_url=url_for("web.activity", **filters),
        agents=[_identity(a) for a in agent_ids],
        platforms=sorted((n, p.display_name) for n, p in services().platforms.items()),
        export_csv=url_for("web.activity_export", format="csv", **filters),
        export_json=url_for("web.activity_export", format="json", **filters))


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.get("/activity/export")
def activity_export() -> Any:
    import csv
    import io
    import json

    from authserver.models.audit import AuditEvent
    from authserver.presentation import iso_utc

    user = current_user()
    if user is None:
        return login_redirect()
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "json"):
        abort(400, "format must be csv or json")
    events = g.db.scalars(_activity_query(user.id, _activity_filters())
                          .order_by(AuditEvent.seq.desc()).limit(EXPORT_LIMIT)).all()
    records = []
    for e in events:
        row = _activity_row(e)
        intent = e.intent if isinstance(e.intent, dict) else {}
        records.append({
            "seq": e.seq, "time": iso_utc(e.created_at), "event": e.event,
            "outcome": e.outcome, "reason": e.reason, "summary": row["sentence"],
            "possible_prompt_injection": row["injection"],
            "agent_id": e.agent_id, "agent_name": row["agent"].name if row["agent"] else None,
            "platform": e.platform, "action": intent.get("action"),
            "resource": intent.get("resource"), "count": intent.get("count"),
            "correlation_id": e.correlation_id,
        })
    if fmt == "json":
        body = json.dumps(records, ensure_ascii=False, indent=1)
        mimetype = "application/json"
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["seq"])
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_cell(v) for k, v in record.items()})
        body, mimetype = out.getvalue(), "text/csv"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="activity.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


# --- agents acting for me --------------------------------------------------------------------


def _agent_rows(user_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import func

    from authserver.agents import agents_for_user
    from authserver.errors import InvalidAuthorizationDetailsError
    from authserver.intent import describe_mandate
    from authserver.models import Client, Grant
    from authserver.models.audit import AuditEvent
    from authserver.presentation import action_infinitive, scope_in_words

    rows = []
    for a in agents_for_user(g.db, user_id):
        client = g.db.get(Client, a.client_id)
        attributes = dict(client.attributes) if client is not None else {}
        grants = list(g.db.scalars(select(Grant).where(
            Grant.user_id == user_id, Grant.client_id == a.client_id,
            Grant.revoked_at.is_(None)).order_by(Grant.created_at)))
        first_seen, last_used = g.db.execute(
            select(func.min(AuditEvent.created_at), func.max(AuditEvent.created_at)).where(
                AuditEvent.user_id == user_id, AuditEvent.agent_id == a.client_id,
                AuditEvent.event.in_(AGENT_EVENTS))).one()
        mandate: list[str] = []
        for grant in grants:
            if grant.authorization_details:
                try:
                    mandate.extend(describe_mandate(grant.authorization_details))
                except InvalidAuthorizationDetailsError:  # stored from a verified request
                    mandate.append("(a permission this page cannot describe)")
        withdrawn = a.withdrawn_at is not None and (last_used is None or
                                                    last_used <= a.withdrawn_at)
        rows.append({
            "summary": a, "identity": _identity(a.client_id),
            "platforms": [_platform_name(p) for p in attributes.get("allowed_platforms") or []],
            "actions": [action_infinitive(x) for x in attributes.get("allowed_actions") or []],
            "scopes": sorted({scope_in_words(sc) for gr in grants for sc in gr.scope.split()}),
            "mandate": mandate,
            "granted_at": grants[0].created_at if grants else first_seen,
            "last_used": last_used, "withdrawn": withdrawn,
        })
    return rows


@bp.get("/agents")
def agents() -> Any:
    user = current_user()
    if user is None:
        return login_redirect()
    return render_template("agents.html", rows=_agent_rows(user.id), notice=_pop_notice())


@bp.route("/agents/<agent_id>/withdraw", methods=["GET", "POST"])
def withdraw(agent_id: str) -> Any:
    """GET asks "Withdraw …?"; only that page's form (confirmed=yes) withdraws."""
    from authserver.agents import withdraw_agent

    user = current_user()
    if user is None:
        return login_redirect()
    if len(agent_id) > 255:
        abort(404)
    row = next((r for r in _agent_rows(user.id) if r["summary"].client_id == agent_id), None)
    if row is None:
        abort(404)
    name = row["identity"].name
    if request.method == "GET":
        return render_template("confirm.html", title=f"Withdraw {name}?",
                               body=[f"{name} stops at once: every token it holds for you "
                                     "fails on its next use, and its standing access is "
                                     "revoked.",
                                     "It can act for you again only after you sign in to it "
                                     "and allow it anew."],
                               connected=not row["withdrawn"],
                               action=url_for("web.withdraw", agent_id=agent_id),
                               button="Withdraw", back=url_for("web.agents"))
    check_csrf()
    if request.form.get("confirmed") != "yes":
        return redirect(url_for("web.withdraw", agent_id=agent_id), 303)
    if row["withdrawn"]:
        _notice(f"{name} was already withdrawn.")  # no second audit record
        return redirect(url_for("web.agents"), 303)
    withdraw_agent(g.db, user.id, agent_id, now=g.now)
    _audit_user_event("agent_withdrawn", "revoked", user.id, None, {"agent": agent_id},
                      agent_id=agent_id)
    _notice(f"You withdrew {name}.")
    return redirect(url_for("web.agents"), 303)
