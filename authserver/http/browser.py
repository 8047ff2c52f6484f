"""What a browser gets from us, set in one place: security headers on every response, and HTML
(not JSON) error pages on the user routes.

Every response: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
`Referrer-Policy: no-referrer`, HSTS when the issuer is https, and no version banner (the
Werkzeug servers we start use `BannerlessRequestHandler`; gunicorn names no version).
HTML responses also get a strict CSP (no script at all, styles and images from our own
origin only, no framing, no `<base>`) and `Cache-Control: no-store`: every page is either
signed in, a sign-in form or a consent/approval decision, and none may sit in a cache.
Other responses get `default-src 'none'; frame-ancestors 'none'` (nothing they return may
run or be framed) and keep their own caching headers (JWKS and metadata are cacheable).

`form-action` is `'self'` plus the exact origins a page's forms are known to redirect to after
the POST (Chromium checks form-action on those redirects): a view names them with
`allow_form_targets(url, ...)` (the IdP's authorization endpoint on the sign-in page, a
platform's on the connect pages, the client's redirect URI on the consent page).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Flask, Response, g, render_template, request
from werkzeug.serving import WSGIRequestHandler

#: Paths that are APIs: their errors are JSON (RFC 6749 §5.2 shapes), never HTML pages.
API_PREFIXES = ("/token", "/register", "/introspect", "/revoke", "/gateway/", "/admin/",
                "/.well-known/", "/jwks.json", "/healthz", "/readyz", "/metrics")
HSTS = "max-age=31536000; includeSubDomains"
#: Replaces Werkzeug's banner (it names itself and the Python version).
SERVER_NAME = "authserver"
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'"
#: What may stand in a CSP source expression we build from a URL (no spaces, quotes or ';').
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
#: Never a form target, whatever a registration says.
_UNSAFE_SCHEMES = frozenset({"javascript", "data", "blob", "filesystem", "file", "vbscript"})

_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Page not found",
           405: "Not allowed here", 413: "Too large", 429: "Too many attempts",
           500: "Something went wrong", 503: "Temporarily unavailable"}


def is_api_request() -> bool:
    path = request.path
    return any(path == p.rstrip("/") or path.startswith(p) for p in API_PREFIXES)


def is_page_request() -> bool:
    """Errors are HTML pages on the user routes (the `web` blueprint: sign-in, consent, the
    user's pages), JSON on the API routes. An unrouted path gets a page only when the client
    prefers HTML (a browser), so API clients keep their JSON 404."""
    if is_api_request():
        return False
    if request.blueprint == "web":
        return True
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def allow_form_targets(*urls: str) -> None:
    """Let this page's forms end at `urls`' origins (after a redirect). A URL that is not a
    plain origin we can express safely is left out: the browser then refuses (fail closed)."""
    targets: set[str] = g.setdefault("form_targets", set())
    for url in urls:
        source = _source_for(url)
        if source is not None:
            targets.add(source)


def _source_for(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme) or scheme in _UNSAFE_SCHEMES:
        return None
    if scheme not in ("http", "https"):
        return scheme + ":"  # a native app's private-use scheme (RFC 8252 §7.1)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def render_error_page(status: int, error: str, description: str | None = None,
                      headers: dict[str, str] | None = None) -> Response:
    g.error_page = True  # no signed-in header: the page must render even if the DB is down
    body = render_template("error.html", title=_TITLES.get(status, "Error"), error=error,
                           description=description)
    response = Response(body, status=status, mimetype="text/html")
    for name, value in (headers or {}).items():
        if name.lower() != "cache-control":
            response.headers[name] = value
    return response


def init_app(app: Flask, *, https: bool) -> None:
    @app.after_request
    def defences(response: Response) -> Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        if https:
            headers["Strict-Transport-Security"] = HSTS
        if response.mimetype == "text/html":
            form_action = " ".join(["'self'", *sorted(g.get("form_targets", ()))])
            headers["Content-Security-Policy"] = PAGE_CSP.format(form_action=form_action)
            headers["Cache-Control"] = "no-store"
            headers.pop("Pragma", None)
        else:
            headers["Content-Security-Policy"] = API_CSP
        headers.pop("Server", None)  # the WSGI server sends its own (BannerlessRequestHandler)
        return response


class BannerlessRequestHandler(WSGIRequestHandler):
    """Werkzeug's server (the `serve` command, the demo, tests) names itself and the Python
    version in `Server`, whatever the app says; this one says only `authserver`. Gunicorn
    sends `Server: gunicorn`, without a version."""

    def version_string(self) -> str:
        return SERVER_NAME
