"""The client address behind a reverse proxy (deploy/nginx, issue 13): X-Forwarded-For counts
only when the peer is one of TRUSTED_PROXIES.

Per-address rate limits (sign-in, token endpoint, registration) and the audit's client_ip read
`request.remote_addr`. Behind nginx every request comes from nginx: without this all clients
would share one budget; trusting the header from anyone would let a client pick its address.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from authserver.http.proxy import TrustedProxies, client_address


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REMOTE_ADDR"].encode()]


def remote_addr(app: Any, peer: str, forwarded: str | None) -> str:
    environ: dict[str, Any] = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    return b"".join(app(environ, lambda *a: None)).decode()


PROXIES = ("127.0.0.1", "10.0.0.0/8", "::1")


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("127.0.0.1", "203.0.113.9", "203.0.113.9"),             # nginx overwrote the header
    ("127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # a client-sent value: ignored
    ("127.0.0.1", "203.0.113.9, 10.1.2.3", "203.0.113.9"),  # two trusted hops
    ("::1", "2001:db8::7", "2001:db8::7"),
    ("203.0.113.50", "198.51.100.1", "203.0.113.50"),       # not a proxy: header ignored
    ("127.0.0.1", None, "127.0.0.1"),                       # no header: the peer
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),                # garbage: stop at the proxy
    ("127.0.0.1", "203.0.113.9, junk", "127.0.0.1"),
    ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),        # only proxies: the farthest one
], ids=["one-hop", "client-prefix-ignored", "two-proxies", "ipv6", "untrusted-peer",
        "no-header", "empty-header", "garbage", "garbage-last", "all-trusted"])
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert remote_addr(TrustedProxies(echo, PROXIES), peer, forwarded) == expected


def test_no_trusted_proxies_ignores_the_header() -> None:
    assert remote_addr(TrustedProxies(echo, ()), "127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_the_peer_is_kept_for_the_record() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.update(environ)
        return echo(environ, start_response)

    remote_addr(TrustedProxies(app, PROXIES), "127.0.0.1", "203.0.113.9")
    assert seen["authserver.proxy_peer"] == "127.0.0.1"


def test_client_address_is_pure() -> None:
    from ipaddress import ip_network

    nets = [ip_network("127.0.0.1")]
    assert client_address("127.0.0.1", "203.0.113.9", nets) == "203.0.113.9"
    assert client_address("127.0.0.1", "a" * 10_000, nets) == "127.0.0.1"


def test_bad_trusted_proxies_setting_names_it() -> None:
    from authserver.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="trusted_proxies"):
        Settings.load({"trusted_proxies": ("10.0.0.0/33",)}, environ={})


def test_the_app_takes_the_client_address_from_a_trusted_proxy(
        tmp_path: Any, clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    from authserver import create_app

    app = create_app({"data_dir": str(tmp_path), "testing": True,
                      "trusted_proxies": ("127.0.0.1",)}, clock=clock)
    try:
        with caplog.at_level("INFO", logger="authserver.access"):
            app.test_client().get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"},
                                  environ_base={"REMOTE_ADDR": "127.0.0.1"})
            app.test_client().get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"},
                                  environ_base={"REMOTE_ADDR": "192.0.2.1"})
    finally:
        app.extensions["authserver"].db.engine.dispose()
    addrs = [r.remote_addr for r in caplog.records  # type: ignore[attr-defined]
             if r.name == "authserver.access"]
    assert addrs == ["203.0.113.9", "192.0.2.1"]
