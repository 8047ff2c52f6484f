"""The HTTP clients for calls to platforms.

- `PLATFORM_CALLS`, the gateway's API calls: one urllib3 `PoolManager` per process
  (thread-safe; one pool of kept-alive connections per platform host). urllib3 is what
  `requests` sends with; calling it directly drops `requests`' per-call work (request
  preparation, cookie jars, hooks, environment merging: about half the CPU of a call, issue
  18). It follows no redirect, retries nothing, keeps no cookie (urllib3 has no cookie jar),
  asks for no content coding, and verifies TLS against the same CA bundle `requests` would
  (the environment's, else certifi's). When the environment sets a proxy or a netrc file
  (below), the calls go through `PLATFORM_HTTP` instead, which applies them per URL.
- `PLATFORM_HTTP`, the broker's token requests (Authlib's OAuth client is built on
  `requests`): one kept-alive `requests.Session` per thread.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

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


#: The broker's token requests, and the gateway's API calls when the environment sets a proxy
#: or a netrc file (`PlatformCalls`).
PLATFORM_HTTP = ThreadLocalSessions()


#: Platform hosts with a pool of their own, and kept-alive connections per host (more are
#: opened when more calls run at once, and closed after use).
POOLS = 32
CONNECTIONS_PER_HOST = 32


@dataclass(frozen=True)
class PlatformAnswer:
    """A platform's answer: `headers` look names up case-insensitively; `body` holds at most
    `max_bytes` + 1 bytes (more than `max_bytes`: the rest was never read)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class PlatformCalls:
    """The gateway's calls to platform APIs (see the module docstring). `send` raises
    urllib3's `HTTPError` or `requests`' `RequestException` when the platform does not
    answer."""

    def __init__(self, *, trust_env: bool | None = None, ca_certs: str | None = None) -> None:
        self._trust_env = _TRUST_ENV if trust_env is None else trust_env
        self._pools = urllib3.PoolManager(
            num_pools=POOLS, maxsize=CONNECTIONS_PER_HOST, retries=False,
            cert_reqs="CERT_REQUIRED", ca_certs=ca_certs or _CA_BUNDLE or DEFAULT_CA_BUNDLE_PATH)

    def send(self, method: str, url: str, *, body: bytes | None, headers: Mapping[str, str],
             timeout: tuple[float, float], max_bytes: int) -> PlatformAnswer:
        """One request, no redirect followed; the body is read up to `max_bytes` + 1 bytes,
        and a connection whose body was not read to its end is closed, never reused."""
        if self._trust_env:
            return self._send_with_requests(method, url, body=body, headers=headers,
                                            timeout=timeout, max_bytes=max_bytes)
        response = self._pools.request(
            method, url, body=body, headers=dict(headers), redirect=False, retries=False,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            preload_content=False, decode_content=True)
        try:
            data = response.read(max_bytes + 1)
        except BaseException:
            response.close()
            raise
        if len(data) > max_bytes:
            response.close()  # drop the connection mid-body; never read the rest
        response.release_conn()
        return PlatformAnswer(response.status, response.headers, data)

    def _send_with_requests(self, method: str, url: str, *, body: bytes | None,
                            headers: Mapping[str, str], timeout: tuple[float, float],
                            max_bytes: int) -> PlatformAnswer:
        response = PLATFORM_HTTP.request(method, url, data=body, headers=dict(headers),
                                         timeout=timeout, allow_redirects=False, stream=True)
        try:
            data = response.raw.read(max_bytes + 1, decode_content=True)
        except BaseException:
            response.close()
            raise
        if len(data) > max_bytes:
            response.close()
        else:
            response.raw.release_conn()  # fully read: the connection may be reused
        return PlatformAnswer(response.status_code, response.headers, data)


#: The process's client for the gateway's API calls.
PLATFORM_CALLS = PlatformCalls()
