"""The HTTP client for calls to platforms: one kept-alive `requests.Session` per thread.

Why not `requests.request`: it builds a Session (and a connection pool) per call, and with
`trust_env` each call scans the environment for proxies and CA bundles and looks for a
`.netrc` (~240 µs per call, and no connection reuse). Here the environment is read once, at
import: a CA bundle (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE) becomes the session's `verify`,
and sessions run with `trust_env=False` unless a proxy variable or a netrc file is set, which
`requests` applies per URL (`no_proxy`, netrc hosts): then they keep `trust_env=True`, as before.

Cookies are refused: one session serves every user of a worker thread, so a cookie a platform
set for one user's call must never ride along with the next user's (a fresh Session per call
never kept any either). A Session is not safe to share between threads, hence one per thread.
Callers pass their own timeouts and `allow_redirects=False`.
"""

from __future__ import annotations

import http.cookiejar
import os
import threading
import urllib.request
from pathlib import Path
from typing import Any

import requests

from authserver.outbound import environment_ca_bundle

#: What `requests` would take from the environment for an https call with `trust_env`.
_NETRC_FILES = (".netrc", "_netrc")


def environment_needs_trust_env() -> bool:
    """True if the environment sets a proxy or a netrc file, which `requests` applies per URL
    (`no_proxy` rules, netrc hosts), so only its own per-call lookup reproduces them."""
    proxies = {k: v for k, v in urllib.request.getproxies_environment().items() if k != "no"}
    if proxies:
        return True
    if os.environ.get("NETRC"):
        return True
    home = os.environ.get("HOME")
    if not home:
        return False
    return any((Path(home) / name).exists() for name in _NETRC_FILES)


_TRUST_ENV = environment_needs_trust_env()
_CA_BUNDLE = environment_ca_bundle()


def new_session() -> requests.Session:
    """A Session that keeps no cookies, with the environment's settings read once."""
    session = requests.Session()
    session.trust_env = _TRUST_ENV
    if _CA_BUNDLE is not None:
        session.verify = _CA_BUNDLE  # what trust_env would have picked on every call
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


class ThreadLocalSessions(threading.local):
    """One Session per thread (created on the thread's first call)."""

    def __init__(self) -> None:
        self.session = new_session()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, url, **kwargs)


#: The process's platform client: the gateway's API calls and the broker's token requests.
PLATFORM_HTTP = ThreadLocalSessions()
