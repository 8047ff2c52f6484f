"""authserver.outbound: the one outbound fetcher and its SSRF rule (issue 14, issue 17 item 4).

Each rule has its test: the resolved address is checked where the connection is made (and
the connection goes to exactly that address), https only, no redirects, a size limit,
timeouts, and a bounded cache that honours Cache-Control. The https tests run against a
loopback server with a throwaway CA that the fetcher is told to trust.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from authserver.outbound import (
    CACHE_CEILING,
    CACHE_DEFAULT,
    CACHE_FLOOR,
    FetchResult,
    Outbound,
    OutboundError,
    cache_lifetime,
    is_forbidden_address,
)
from tests.tls_helpers import Route, TLSServer, tls_server  # noqa: F401


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _json(result: FetchResult) -> Any:
    return json.loads(result.body)


def _fetcher(server: TLSServer, **kwargs: Any) -> Outbound:
    kwargs.setdefault("allow_internal", True)  # the test server is on loopback
    return Outbound(ca_file=str(server.ca_file), **kwargs)


# --- the address rule -------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1",
    "64:ff9b::a00:1", "2002:a00:1::1", "2001:db8::1",
])
def test_special_use_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_global_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(address)


def test_private_address_refused(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route()
    with pytest.raises(OutboundError, match="internal address"):
        _fetcher(tls_server, allow_internal=False).get(tls_server.url("/doc"), max_bytes=100)
    assert tls_server.requests == []


def test_any_internal_answer_refuses_the_name() -> None:
    """A name that resolves to a public and a private address is refused outright."""
    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.1"]

    def connect(*a: Any, **k: Any) -> socket.socket:
        raise AssertionError("must not connect")

    with pytest.raises(OutboundError, match="internal address"):
        Outbound(resolve=resolve, connect=connect).get("https://rebind.example/x", max_bytes=10)


def test_connection_goes_to_the_address_that_was_checked() -> None:
    """DNS rebinding: the name is resolved once, and the socket is opened to that very
    address (never resolved again by the connection)."""
    resolved: list[str] = []
    connected: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.216.34"]

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        connected.append(address)
        raise OSError("test: no network")

    with pytest.raises(OutboundError):
        Outbound(resolve=resolve, connect=connect).get("https://docs.example/x", max_bytes=10)
    assert resolved == ["docs.example"]
    assert connected == [("93.184.216.34", 443)]


def test_unresolvable_name_refused() -> None:
    with pytest.raises(OutboundError, match="resolve"):
        Outbound().get("https://no-such-host.invalid/x", max_bytes=10)


# --- scheme, method, redirects, size, time ------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://docs.example/x", "ftp://docs.example/x", "file:///etc/passwd", "https:///x",
    "https://user@docs.example/x", "https://docs.example:99999/x", "gopher://docs.example/",
])
def test_non_https_refused(url: str) -> None:
    def connect(*a: Any, **k: Any) -> socket.socket:
        raise AssertionError("must not connect")

    with pytest.raises(OutboundError):
        Outbound(allow_internal=True, connect=connect).get(url, max_bytes=10)


def test_plain_http_only_on_loopback_and_only_when_internal_is_allowed() -> None:
    def connect(*a: Any, **k: Any) -> socket.socket:
        raise AssertionError("must not connect")

    with pytest.raises(OutboundError, match="https"):
        Outbound(connect=connect).get("http://127.0.0.1:9/x", max_bytes=10)


def test_https_fetch_sends_the_name_and_verifies_the_certificate(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route(body=b'{"ok": true}')
    result = _fetcher(tls_server).get(tls_server.url("/doc"), max_bytes=100)
    assert json.loads(result.body) == {"ok": True}
    method, path, headers = tls_server.requests[0]
    assert (method, path) == ("GET", "/doc")
    assert headers["Host"] == f"localhost:{tls_server.port}"


def test_untrusted_certificate_refused(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route()
    with pytest.raises(OutboundError, match="TLS"):
        Outbound(allow_internal=True).get(tls_server.url("/doc"), max_bytes=100)


def test_redirect_refused(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route(status=302, headers={"Location": "/other"})
    tls_server.routes["/other"] = Route()
    with pytest.raises(OutboundError, match="redirect"):
        _fetcher(tls_server).get(tls_server.url("/doc"), max_bytes=100)
    assert [p for _m, p, _h in tls_server.requests] == ["/doc"]


def test_status_other_than_200_refused(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route(status=204, body=b"")
    with pytest.raises(OutboundError, match="status 204"):
        _fetcher(tls_server).get(tls_server.url("/doc"), max_bytes=100)


def test_oversize_refused(tls_server: TLSServer) -> None:
    tls_server.routes["/big"] = Route(body=b"x" * 101)
    tls_server.routes["/fits"] = Route(body=b"x" * 100)
    with pytest.raises(OutboundError, match="too large"):
        _fetcher(tls_server).get(tls_server.url("/big"), max_bytes=100)
    assert len(_fetcher(tls_server).get(tls_server.url("/fits"), max_bytes=100).body) == 100


def test_compressed_body_refused(tls_server: TLSServer) -> None:
    tls_server.routes["/gz"] = Route(headers={"Content-Encoding": "gzip"})
    with pytest.raises(OutboundError, match="encoding"):
        _fetcher(tls_server).get(tls_server.url("/gz"), max_bytes=100)


def test_timeout(tls_server: TLSServer) -> None:
    tls_server.routes["/slow"] = Route(delay=1.0)
    with pytest.raises(OutboundError, match="timed out"):
        _fetcher(tls_server, read_timeout=0.2).get(tls_server.url("/slow"), max_bytes=100)


# --- caching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "expected"), [
    (None, CACHE_DEFAULT),
    ("max-age=600", 600),
    ("public, max-age=600", 600),
    ("max-age=0", CACHE_FLOOR),
    ("max-age=999999999", CACHE_CEILING),
    ("no-store", 0),
    ("max-age=600, no-store", 0),
    ("no-cache", 0),
    ("max-age=abc", CACHE_DEFAULT),
])
def test_cache_lifetime(header: str | None, expected: int) -> None:
    assert cache_lifetime(header) == expected


def test_cache_honours_max_age(tls_server: TLSServer) -> None:
    clock = Clock()
    tls_server.routes["/doc"] = Route(body=b"{}", headers={"Cache-Control": "max-age=600"})
    cache = _fetcher(tls_server, clock=clock).cache(_json, max_bytes=100)
    assert cache.get(tls_server.url("/doc")) == {}
    clock.now += 599
    cache.get(tls_server.url("/doc"))
    assert len(tls_server.requests) == 1
    clock.now += 2
    cache.get(tls_server.url("/doc"))
    assert len(tls_server.requests) == 2


def test_cache_honours_no_store(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route(body=b"{}", headers={"Cache-Control": "no-store"})
    cache = _fetcher(tls_server, clock=Clock()).cache(_json, max_bytes=100)
    cache.get(tls_server.url("/doc"))
    cache.get(tls_server.url("/doc"))
    assert len(tls_server.requests) == 2


def test_cache_keeps_no_failure(tls_server: TLSServer) -> None:
    """Neither an error response nor a document the parser refuses is cached."""
    tls_server.routes["/doc"] = Route(body=b"not json", headers={"Cache-Control": "max-age=600"})
    cache = _fetcher(tls_server, clock=Clock()).cache(_json, max_bytes=100)
    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get(tls_server.url("/doc"))
    assert len(tls_server.requests) == 2


def test_cache_is_bounded(tls_server: TLSServer) -> None:
    for n in range(3):
        tls_server.routes[f"/{n}"] = Route(body=b"{}")
    cache = _fetcher(tls_server, clock=Clock()).cache(_json, max_bytes=100, max_entries=2)
    for n in range(3):
        cache.get(tls_server.url(f"/{n}"))
    assert len(cache) == 2
    cache.get(tls_server.url("/0"))  # evicted: fetched again
    assert len(tls_server.requests) == 4


def test_refresh_bypasses_the_cache(tls_server: TLSServer) -> None:
    tls_server.routes["/doc"] = Route(body=b"{}", headers={"Cache-Control": "max-age=600"})
    cache = _fetcher(tls_server, clock=Clock()).cache(_json, max_bytes=100)
    cache.get(tls_server.url("/doc"))
    cache.get(tls_server.url("/doc"), refresh=True)
    assert len(tls_server.requests) == 2
