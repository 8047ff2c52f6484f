"""What every user page shares: the blueprint, the signed-in user, CSRF, safe redirects.

Also the template helpers (the CSRF token and the signed-in user in every template, the time
filters), the one-line notice a page leaves for the next, how a client and a platform are
named to the user, and the audit record of what the user did on these pages.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from authserver.models import User
from authserver.services import Services

bp = Blueprint("web", __name__)


def services() -> Services:
    """The app's services (authserver/services.py)."""
    return current_app.extensions["authserver"]


# --- session, CSRF ----------------------------------------------------------------------------


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


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def check_csrf() -> None:
    expected = session.get("csrf")
    presented = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(str(expected), presented):
        abort(400, "CSRF token missing or invalid")


# --- safe redirects ---------------------------------------------------------------------------

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


# --- templates --------------------------------------------------------------------------------


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


# --- notices ----------------------------------------------------------------------------------


def notice(text: str) -> None:
    """One line for the next page this browser shows ("You disconnected Acme CRM.")."""
    session["notice"] = text


def pop_notice() -> str | None:
    value = session.pop("notice", None)
    return str(value) if value else None


# --- clients and platforms as the user sees them ----------------------------------------------


def identity(client_id: str) -> Any:
    """How the page names a client (an agent), cached for the request; an unknown id is
    shown as itself."""
    from authserver.models import Client
    from authserver.presentation import ClientIdentity, client_identity

    cache: dict[str, Any] = g.setdefault("identities", {})
    if client_id not in cache:
        row = g.db.get(Client, client_id) if len(client_id) <= 255 else None
        trusted = current_app.extensions["authserver"].settings.cimd_trusted_hosts
        cache[client_id] = client_identity(row, trusted_hosts=trusted) if row is not None else \
            ClientIdentity(client_id, client_id, None, False)
    return cache[client_id]


def platform_name(name: str | None) -> str | None:
    """A platform's display name (its id if it is no longer configured)."""
    if name is None:
        return None
    platform = services().platforms.get(name)
    return platform.display_name if platform is not None else name


# --- audit ------------------------------------------------------------------------------------


def audit_user_event(event: str, outcome: str, user_id: str, platform: str | None,
                     detail: dict[str, Any], *, agent_id: str | None = None,
                     intent: dict[str, Any] | None = None,
                     approval_id: str | None = None) -> None:
    """Audit what the user did on a page (connected, approved, withdrew...)."""
    from authserver.audit import AuditRecord
    from authserver.observability import correlation_id

    # In the request's transaction: the record commits together with the change it records.
    services().audit.append(g.db, AuditRecord(
        event=event, outcome=outcome, correlation_id=correlation_id(), user_id=user_id,
        agent_id=agent_id, platform=platform, intent=intent, approval_id=approval_id,
        client_ip=request.remote_addr, detail=detail), now=g.now)
