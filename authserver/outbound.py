"""The one outbound HTTP fetcher: every document we fetch from a URL someone else chose
(docs/standards.md OUT-01).

Client `jwks_uri` documents and Client ID Metadata Documents are fetched from URLs that
anyone can put in front of us, so every fetch follows one rule (SSRF):

- **GET only, https only** (POST only to an endpoint an operator configured: a Shared
  Signals transmitter's stream, verification and poll endpoints). Plain http only to a
  loopback host (`authserver.urls`), and only when internal addresses are allowed (a
  loopback issuer: development, tests, the demo).
- **The address is checked where the connection is made.** The host is resolved once; if any
  address it resolves to is special-use (loopback, private, shared, link-local, multicast,
  reserved, unspecified, documentation; an IPv6 address embedding such an IPv4 address
  counts as that address: RFC 6890), the fetch is refused, unless internal addresses are
  allowed. The socket is then opened to exactly the address that was checked, and TLS
  verifies the certificate against the *name* (SNI and hostname check), with `Host` the
  name. Nothing resolves the name a second time, so DNS rebinding cannot swap the address
  between the check and the connection. Environment proxies are not used.
- **No redirects**: any status but 200 is an error (a 3xx says "redirect refused").
- **Bounded**: at most `max_bytes` of body (N + 1 bytes are read to tell), no content coding
  (no decompression bombs), connect and read timeouts and an overall deadline.
- **Cached with bounds** (`FetchCache`): what `parse` accepted, for the response's
  `Cache-Control: max-age` clamped to [`CACHE_FLOOR`, `CACHE_CEILING`], `CACHE_DEFAULT`
  without one, never with `no-store` or `no-cache` (or for a fixed `lifetime` the operator
  configured: a configured IdP's documents, a resource server's `cache_seconds`); errors and
  documents `parse` refused are never cached; at most `max_entries` documents (least
  recently used first out). The cache runs on the fetcher's `clock`, or on the `now` a caller
  passes (core code gets the time injected).

Every fetch goes through this module: client `jwks_uri`s and IdP, SSF and resource-server
JWK Sets (authserver.jwks), client metadata documents (authserver.cimd), IdP discovery
documents (authserver.identity.discovery), `platforms check`'s metadata (authserver.broker.check).

Errors are `OutboundError` with a short reason for logs (never shown to a client as is).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from authserver.urls import is_loopback_host

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
#: The whole fetch, however slowly a server drips its bytes.
TOTAL_TIMEOUT = 10.0
#: Cache lifetimes in seconds: a lower bound (a client cannot make us fetch on every request
#: with `max-age=0`; `no-store` still can, and is honoured), an upper bound (a changed
#: document is seen within the hour), and the lifetime without `max-age`.
CACHE_FLOOR = 60
CACHE_CEILING = 3600
CACHE_DEFAULT = 300
CACHE_MAX_ENTRIES = 1024
_CHUNK = 16 * 1024

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

T = TypeVar("T")
Resolver = Callable[[str, int], list[str]]
Connector = Callable[..., socket.socket]


class OutboundError(Exception):
    """A fetch was refused or failed; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FetchResult:
    url: str
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


def is_forbidden_address(address: str) -> bool:
    """True unless `address` is a globally reachable unicast address (RFC 6890)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None and is_forbidden_address(str(embedded)):
            return True
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_MAX_AGE = re.compile(r"^max-age=\"?(\d{1,10})\"?$")


def cache_lifetime(cache_control: str | None, age: str | None = None) -> int:
    """Seconds to keep a response (0: not at all), RFC 9111 §5.2.2 within our bounds."""
    directives = [d.strip().lower() for d in (cache_control or "").split(",") if d.strip()]
    if "no-store" in directives or "no-cache" in directives:
        return 0
    max_age = next((int(m.group(1)) for d in directives if (m := _MAX_AGE.match(d))), None)
    if max_age is None:
        return CACHE_DEFAULT
    if age is not None and age.strip().isdigit():
        max_age -= int(age.strip())
    return max(CACHE_FLOOR, min(CACHE_CEILING, max_age))


#: The CA bundle variables `requests` honours (its `REQUESTS_CA_BUNDLE`, then curl's): a
#: deployment that trusts a private CA this way gets the same trust in every outbound client.
_CA_BUNDLE_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def environment_ca_bundle() -> str | None:
    """The CA bundle `requests` would read from the environment (its own precedence)."""
    return next((os.environ[name] for name in _CA_BUNDLE_ENV if os.environ.get(name)), None)


class Outbound:
    """The fetcher. `allow_internal` lifts the address rule and allows plain http to a
    loopback host (a loopback issuer only). `ca_file` replaces the system trust store (a test's
    throwaway CA, or a deployment's egress CA); by default the environment's CA bundle
    (`environment_ca_bundle`), else the system store. `resolve`, `connect` and `clock` are seams for
    tests; `clock` times the cache only."""

    def __init__(self, *, allow_internal: bool = False, ca_file: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 total_timeout: float = TOTAL_TIMEOUT, resolve: Resolver | None = None,
                 connect: Connector | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allow_internal = allow_internal
        self.clock = clock
        self._tls = ssl.create_default_context(cafile=ca_file or environment_ca_bundle())
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._resolve = resolve or _resolve
        self._connect: Connector = connect or socket.create_connection

    def cache(self, parse: Callable[[FetchResult], T], *, max_bytes: int,
              max_entries: int = CACHE_MAX_ENTRIES, lifetime: int | None = None
              ) -> FetchCache[T]:
        return FetchCache(self, parse, max_bytes=max_bytes, max_entries=max_entries,
                          lifetime=lifetime)

    def get(self, url: str, *, max_bytes: int, accept: str = "application/json",
            authorization: str | None = None) -> FetchResult:
        """GET `url` under the rule above; the 200 response, or `OutboundError`."""
        return self._request("GET", url, max_bytes=max_bytes, accept=accept,
                             authorization=authorization)

    def post(self, url: str, body: bytes, *, max_bytes: int, content_type: str,
             authorization: str | None = None, accept: str = "application/json",
             ok: tuple[int, ...] = (200,)) -> FetchResult:
        """POST `body` to `url` under the same rule (address, no redirects, bounds): a call
        to an endpoint an operator configured (a Shared Signals transmitter's poll,
        verification or stream endpoint). A status in `ok`, or `OutboundError`."""
        return self._request("POST", url, max_bytes=max_bytes, accept=accept, payload=body,
                             content_type=content_type, authorization=authorization, ok=ok)

    def _request(self, method: str, url: str, *, max_bytes: int, accept: str,
                 payload: bytes | None = None, content_type: str | None = None,
                 authorization: str | None = None, ok: tuple[int, ...] = (200,)
                 ) -> FetchResult:
        scheme, host, port, target = self._check_url(url)
        sock = self._open(host, port, tls=scheme == "https")
        deadline = time.monotonic() + self._total_timeout
        conn = http.client.HTTPConnection(host, port, timeout=self._read_timeout)
        conn.sock = sock  # already connected, to the checked address
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", _host_header(host, port, scheme))
            conn.putheader("Accept", accept)
            conn.putheader("Accept-Encoding", "identity")
            conn.putheader("User-Agent", "authserver")
            if authorization is not None:
                conn.putheader("Authorization", authorization)
            if payload is not None:
                conn.putheader("Content-Type", content_type or "application/octet-stream")
                conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
            response = conn.getresponse()
            if 300 <= response.status < 400:
                raise OutboundError(f"redirect refused (status {response.status})")
            if response.status not in ok:
                raise OutboundError(f"status {response.status}")
            headers = {k.lower(): v for k, v in response.getheaders()}
            if headers.get("content-encoding", "identity").lower() != "identity":
                raise OutboundError("content encoding refused")
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise OutboundError("response too large")
            body = bytearray()
            while len(body) <= max_bytes:
                if time.monotonic() > deadline:
                    raise OutboundError("timed out (total)")
                chunk = response.read(min(_CHUNK, max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > max_bytes:
                raise OutboundError("response too large")
            return FetchResult(url, response.status, headers, bytes(body))
        except TimeoutError as e:
            raise OutboundError("timed out") from e
        except ssl.SSLError as e:
            raise OutboundError(f"TLS failed ({type(e).__name__})") from e
        except (OSError, http.client.HTTPException) as e:
            raise OutboundError(f"request failed ({type(e).__name__})") from e
        finally:
            conn.close()

    def _check_url(self, url: str) -> tuple[str, str, int, str]:
        if not isinstance(url, str) or any(c.isspace() or ord(c) < 0x20 for c in url):
            raise OutboundError("malformed URL")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise OutboundError("malformed URL") from e
        host = parts.hostname
        if not host or parts.username is not None or parts.password is not None:
            raise OutboundError("URL needs a host and no userinfo")
        if parts.scheme == "http":
            if not (self.allow_internal and is_loopback_host(host)):
                raise OutboundError("only https URLs are fetched")
        elif parts.scheme != "https":
            raise OutboundError("only https URLs are fetched")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target

    def _open(self, host: str, port: int, *, tls: bool) -> socket.socket:
        try:
            addresses = self._resolve(host, port)
        except (OSError, UnicodeError) as e:
            raise OutboundError("host does not resolve") from e
        if not addresses:
            raise OutboundError("host does not resolve")
        if not self.allow_internal and any(is_forbidden_address(a) for a in addresses):
            raise OutboundError("host resolves to an internal address")
        sock: socket.socket | None = None
        for address in addresses:
            try:
                sock = self._connect((address, port), timeout=self._connect_timeout)
                break
            except OSError:
                continue
        if sock is None:
            raise OutboundError("connection failed")
        sock.settimeout(self._read_timeout)
        if not tls:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=host)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise OutboundError(f"TLS failed ({type(e).__name__})") from e


def _host_header(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


class FetchCache(Generic[T]):
    """Documents fetched through one `Outbound` and accepted by `parse` (given the 200
    response; it raises to refuse), kept for the `cache_lifetime` of their response, or for
    `lifetime` seconds when that is given. Times are the fetcher's `clock`, or the `now` passed
    to `get`; an entry fetched "after" `now` (a clock that went back) is stale.
    Thread-safe; concurrent misses may each fetch."""

    def __init__(self, outbound: Outbound, parse: Callable[[FetchResult], T], *, max_bytes: int,
                 max_entries: int, lifetime: int | None = None) -> None:
        self._outbound = outbound
        self._parse = parse
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._lifetime = lifetime
        self._mutex = threading.Lock()
        # url -> (fetched at, expires at, value)
        self._entries: OrderedDict[str, tuple[float, float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, url: str, *, now: float | None = None) -> tuple[float, T] | None:
        """(fetched at, value) of a fresh entry for `url`, or None; never fetches."""
        now = self._outbound.clock() if now is None else now
        with self._mutex:
            hit = self._entries.get(url)
            if hit is None or not hit[0] <= now < hit[1]:
                return None
            self._entries.move_to_end(url)
            return hit[0], hit[2]

    def get(self, url: str, *, refresh: bool = False, now: float | None = None) -> T:
        """The document at `url`: cached, or fetched (always with `refresh`)."""
        now = self._outbound.clock() if now is None else now
        if not refresh:
            hit = self.cached(url, now=now)
            if hit is not None:
                return hit[1]
        result = self._outbound.get(url, max_bytes=self._max_bytes)
        value = self._parse(result)  # raises: nothing is cached
        lifetime = self._lifetime if self._lifetime is not None else cache_lifetime(
            result.headers.get("cache-control"), result.headers.get("age"))
        with self._mutex:
            if lifetime > 0:
                self._entries[url] = (now, now + lifetime, value)
                self._entries.move_to_end(url)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.pop(url, None)
        return value
