"""authserver.jwks: the one JWK Set cache (issue 17 item 4), and that every key set we fetch
(client `jwks_uri`, IdP and SSF JWKS, a resource server's issuer JWKS) goes through it and
through the one outbound fetcher's SSRF rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from joserfc.jwk import ECKey, KeySet

from authserver.errors import InvalidClientError, TemporarilyUnavailableError
from authserver.identity import IdPConfig, IdPUnavailableError, OIDCProvider
from authserver.jwks import JWKS_REFETCH_MIN_INTERVAL, JwksCache, JwksError
from authserver.outbound import FetchResult, Outbound, OutboundError
from authserver.resource import jwks_verifier
from authserver.store.memory import MemoryStore

URI = "https://keys.example.com/jwks"


class FakeOutbound(Outbound):
    """An `Outbound` whose network is a dict: URL -> (status, body, headers)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(clock=lambda: self.now, **kwargs)
        self.now = 1_000.0
        self.documents: dict[str, Any] = {}
        self.fetches: list[str] = []

    def get(self, url: str, *, max_bytes: int, accept: str = "application/json") -> FetchResult:
        self.fetches.append(url)
        doc = self.documents.get(url)
        if doc is None:
            raise OutboundError("status 404")
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        if len(body) > max_bytes:
            raise OutboundError("response too large")
        return FetchResult(url, 200, {"cache-control": "max-age=300"}, body)


def _jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [{**k.as_dict(private=False), "use": "sig"} for k in keys]}


def _kid_cache(outbound: Outbound, **kwargs: Any) -> JwksCache[dict[str, Any]]:
    return JwksCache(outbound, parse=lambda doc: {k["kid"]: k for k in doc["keys"]},
                     kids=lambda keys: keys, error=lambda e: ValueError(e.reason), **kwargs)


# --- the client form (private_key_jwt): a KeySet, InvalidClientError -----------------------


def test_client_cache_is_a_key_set_cached_by_cache_control() -> None:
    outbound = FakeOutbound()
    outbound.documents[URI] = _jwks(ECKey.generate_key("P-256", auto_kid=True))
    cache = JwksCache(outbound)
    assert isinstance(cache.get(URI), KeySet)
    cache.get(URI)
    assert len(outbound.fetches) == 1
    outbound.now += 300  # max-age=300
    cache.get(URI)
    assert len(outbound.fetches) == 2
    cache.get(URI, refresh=True)
    assert len(outbound.fetches) == 3


@pytest.mark.parametrize("doc", [None, b"not json", {"keys": "x"}, [1], {"keys": [{"kty": "oct"}]}])
def test_client_cache_errors_are_invalid_client_and_not_cached(doc: Any) -> None:
    outbound = FakeOutbound()
    if doc is not None:
        outbound.documents[URI] = doc
    cache = JwksCache(outbound)
    for _ in range(2):
        with pytest.raises(InvalidClientError) as e:
            cache.get(URI)
        assert e.value.description == "Client keys could not be retrieved"
        assert e.value.debug.startswith("jwks_uri: ")
    assert len(outbound.fetches) == 2


def test_client_cache_from_clients_module_is_this_one() -> None:
    from authserver import clients

    assert clients.JwksCache is JwksCache


# --- rotation: an unknown kid refetches, rate-limited ----------------------------------------


def test_unknown_kid_refetch_is_rate_limited_from_the_last_refetch() -> None:
    outbound = FakeOutbound()
    old, new = (ECKey.generate_key("P-256", auto_kid=True) for _ in range(2))
    outbound.documents[URI] = _jwks(old)
    cache = _kid_cache(outbound, lifetime=600)
    assert old.kid in cache.get(URI, kid=old.kid, now=0)
    outbound.documents[URI] = _jwks(old, new)
    assert new.kid in cache.get(URI, kid=new.kid, now=0)  # a rotation: refetched at once
    assert new.kid in cache.get(URI, kid=new.kid, now=1)
    assert "made-up" not in cache.get(URI, kid="made-up", now=1)
    assert len(outbound.fetches) == 2  # too soon after the refetch
    cache.get(URI, kid="made-up", now=JWKS_REFETCH_MIN_INTERVAL)
    assert len(outbound.fetches) == 3


def test_unknown_kid_refetch_from_any_fetch() -> None:
    outbound = FakeOutbound()
    key = ECKey.generate_key("P-256", auto_kid=True)
    outbound.documents[URI] = _jwks(key)
    cache = _kid_cache(outbound, lifetime=600, interval_from_any_fetch=True)
    cache.get(URI, now=0)
    cache.get(URI, kid="made-up", now=JWKS_REFETCH_MIN_INTERVAL - 1)
    assert len(outbound.fetches) == 1
    cache.get(URI, kid="made-up", now=JWKS_REFETCH_MIN_INTERVAL)
    assert len(outbound.fetches) == 2


def test_fixed_lifetime_ignores_cache_control_and_a_clock_going_back_is_stale() -> None:
    outbound = FakeOutbound()
    outbound.documents[URI] = _jwks(ECKey.generate_key("P-256", auto_kid=True))
    cache = _kid_cache(outbound, lifetime=10)
    cache.get(URI, now=100)
    cache.get(URI, now=109)
    assert len(outbound.fetches) == 1
    cache.get(URI, now=110)
    assert len(outbound.fetches) == 2
    cache.get(URI, now=50)  # fetched "in the future": not trusted
    assert len(outbound.fetches) == 3


def test_fetch_failure_is_the_callers_error_never_stale_keys() -> None:
    outbound = FakeOutbound()
    outbound.documents[URI] = _jwks(ECKey.generate_key("P-256", auto_kid=True))
    seen: list[JwksError] = []

    def error(e: JwksError) -> Exception:
        seen.append(e)
        return RuntimeError(e.reason)

    cache = JwksCache(outbound, parse=dict, kids=lambda d: (), error=error, lifetime=10)
    cache.get(URI, now=0)
    del outbound.documents[URI]
    with pytest.raises(RuntimeError, match="status 404"):
        cache.get(URI, now=10)
    assert seen[0].reason == "status 404"


# --- every user goes through the SSRF rule ------------------------------------------------


def _internal(host: str, port: int) -> list[str]:
    return ["10.0.0.7"]


def test_idp_with_an_https_issuer_does_not_reach_internal_addresses(now: int) -> None:
    config = IdPConfig(name="corp", issuer="https://idp.example.com", client_id="c",
                       client_secret="s")
    provider = OIDCProvider(config, MemoryStore(), outbound=Outbound(resolve=_internal))
    with pytest.raises(IdPUnavailableError, match="internal address"):
        provider.metadata(now=now)
    with pytest.raises(IdPUnavailableError, match="internal address"):
        provider.verification_key("k", "RS256", now=now, jwks_uri=URI)


def test_idp_default_fetcher_may_reach_an_internal_idp() -> None:
    # A configured IdP is the operator's choice, not a client's: an on-premises IdP (an https
    # issuer on an internal address, as in scripts/tls-stack) must stay reachable.
    loopback = IdPConfig(name="dev", issuer="http://127.0.0.1:9", client_id="c",
                         client_secret="s")
    internal = IdPConfig(name="corp", issuer="https://idp.corp.internal", client_id="c",
                         client_secret="s")
    assert OIDCProvider(loopback, MemoryStore())._outbound.allow_internal
    assert OIDCProvider(internal, MemoryStore())._outbound.allow_internal


def test_resource_server_jwks_does_not_reach_internal_addresses(now: int) -> None:
    from joserfc import jwt

    token = jwt.encode({"alg": "ES256", "kid": "k", "typ": "at+jwt"}, {"iss": "x"},
                       ECKey.generate_key("P-256"))
    verify = jwks_verifier(URI, issuer="x", outbound=Outbound(resolve=_internal))
    with pytest.raises(TemporarilyUnavailableError) as e:
        verify(token, now)
    assert e.value.debug == "jwks fetch: host resolves to an internal address"


def test_broker_check_metadata_does_not_reach_internal_addresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from authserver.broker import check
    from authserver.broker.profiles import Platform

    monkeypatch.setattr("authserver.outbound._resolve", _internal)
    platform = Platform.from_settings("ms", {"profile": "microsoft", "client_id": "a",
                                             "client_secret": "b", "scopes": ["offline_access"]})
    assert check._against_metadata(platform, "https://login.example.com/.well-known/x") == [
        "platform ms: metadata at login.example.com could not be read"]
