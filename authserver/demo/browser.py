"""A person at a browser, without the browser: the authserver user pages over plain HTTP.

A `requests.Session` keeps the session cookie; every form's hidden `csrf_token` is read from
the page and posted back, exactly as a browser submits it. Redirects are followed, so sign-in
runs through the demo IdP and connecting runs through the platform's authorization endpoint
(both test servers sign the `login_hint` user in without a password: TEST-ONLY behaviour).
"""

from __future__ import annotations

import html
import re
from typing import Any

import requests

#: Generous: a page that waits on a database lock must not make us abandon it half-way.
HTTP_TIMEOUT = 35
_CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"|value="([^"]+)"\s+name="csrf_token"')
_PHRASE = re.compile(r'<code class="confirm-phrase"[^>]*>([^<]*)</code>')


class PageError(RuntimeError):
    """A user page did not behave as the HTTP contract says (status, redirect or form)."""


def csrf_from(page: str) -> str:
    match = _CSRF.search(page)
    if match is None:
        raise PageError("no csrf_token field on the page")
    return html.unescape(match.group(1) or match.group(2))


def confirm_phrase_from(page: str) -> str | None:
    """What a destructive or bulk approval asks the person to type before Approve works (the
    record's name, or the number of records), as the page shows it; None if it asks nothing."""
    match = _PHRASE.search(page)
    return html.unescape(match.group(1)) if match else None


class Browser:
    """One person's browser session at authserver."""

    def __init__(self, issuer: str, username: str) -> None:
        self.issuer = issuer
        self.username = username
        self.http = requests.Session()

    def _get(self, path: str) -> requests.Response:
        resp = self.http.get(self.issuer + path, timeout=HTTP_TIMEOUT)
        if resp.status_code != 200:
            raise PageError(f"GET {path} answered {resp.status_code}")
        return resp

    def _post_form(self, page_path: str, action: str, data: dict[str, Any]) -> requests.Response:
        token = csrf_from(self._get(page_path).text)
        return self.http.post(self.issuer + action, data={"csrf_token": token, **data},
                              timeout=HTTP_TIMEOUT, allow_redirects=True)

    def sign_in(self, idp: str) -> None:
        """POST /login/<idp> → the IdP → /login/<idp>/callback → /connections (signed in)."""
        resp = self._post_form("/login", f"/login/{idp}",
                               {"next": "/connections", "login_hint": self.username})
        if resp.status_code != 200 or not resp.url.startswith(self.issuer + "/connections"):
            raise PageError(f"sign-in at {idp} ended at {_path(resp.url)} ({resp.status_code})")

    def connect(self, platform: str) -> None:
        """POST /connections/<platform>/connect → platform authorize → callback → /connections."""
        resp = self._post_form("/connections", f"/connections/{platform}/connect",
                               {"login_hint": self.username})
        if resp.status_code != 200 or _path(resp.url) != "/connections":
            raise PageError(f"connecting {platform} ended at {_path(resp.url)} "
                            f"({resp.status_code})")

    def approve(self, approval_id: str, decision: str = "approve") -> int:
        """POST /approvals/<id> decision=approve|decline; returns the final status code."""
        page = self.approval_page(approval_id)
        phrase = confirm_phrase_from(page) if decision == "approve" else None
        # The person reads the record's name on the page and types it (the second step).
        data = {"csrf_token": csrf_from(page), "decision": decision,
                **({"confirm": phrase} if phrase is not None else {})}
        resp = self.http.post(self.issuer + f"/approvals/{approval_id}", data=data,
                              timeout=HTTP_TIMEOUT, allow_redirects=True)
        if resp.status_code != 200 or _path(resp.url) != "/approvals":
            raise PageError(f"deciding the approval ended at {_path(resp.url)} "
                            f"({resp.status_code})")
        return resp.status_code

    def approval_page(self, approval_id: str) -> str:
        return self._get(f"/approvals/{approval_id}").text


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path
