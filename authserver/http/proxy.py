"""The client's address behind reverse proxies we trust (TRUSTED_PROXIES; deploy/nginx).

Per-address rate limits (sign-in, token endpoint, registration), the access log and the audit's
`client_ip` read `REMOTE_ADDR`. Behind a proxy that is the proxy, so every client would share
one budget; trusting `X-Forwarded-For` from anyone would let a client choose its address. So
the header counts only when the peer is a trusted proxy, and then it is read from the right:
each trusted hop vouches for the one before it, and the first address that is not a trusted
proxy is the client. Anything unparsable stops the walk at the last hop vouched for.
deploy/nginx/authserver.conf overwrites the header with the peer it saw, so there is one hop.

Only the address is taken from the proxy. The scheme is gunicorn's business
(`FORWARDED_ALLOW_IPS`, which gunicorn.conf.py sets from TRUSTED_PROXIES when unset), and
nothing the app decides reads the Host header or the scheme: every URL it compares (DPoP
`htu`, token audiences, redirects) is built from ISSUER.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A longer X-Forwarded-For is not from our proxies (they send one address): ignored.
MAX_FORWARDED_FOR = 1024
#: Where the proxy's own address stays available (logs may want both).
PEER_ENVIRON_KEY = "authserver.proxy_peer"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
             networks: Sequence[IPNetwork]) -> bool:
    return addr is not None and any(addr in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, networks: Sequence[IPNetwork]) -> str:
    """The client's address: `peer`, unless `peer` is a trusted proxy and `forwarded_for`
    names an earlier hop (read right to left, past trusted proxies only)."""
    if not forwarded_for or len(forwarded_for) > MAX_FORWARDED_FOR:
        return peer
    if not _trusted(_address(peer), networks):
        return peer
    client = peer
    for item in reversed(forwarded_for.split(",")):
        addr = _address(item)
        if addr is None:
            return client  # garbage: believe nothing before it
        client = str(addr)
        if not _trusted(addr, networks):
            return client
    return client  # every hop a proxy: the farthest one


class TrustedProxies:
    """WSGI middleware: `REMOTE_ADDR` becomes `client_address(...)`; the peer is kept in
    `environ[PEER_ENVIRON_KEY]`. With no trusted proxies it changes nothing."""

    def __init__(self, app: Callable[..., Iterable[bytes]], proxies: Iterable[str]) -> None:
        self.app = app
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in proxies)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if self.networks:
            peer = environ.get("REMOTE_ADDR") or ""
            environ[PEER_ENVIRON_KEY] = peer
            environ["REMOTE_ADDR"] = client_address(
                peer, environ.get("HTTP_X_FORWARDED_FOR"), self.networks)
        return self.app(environ, start_response)
