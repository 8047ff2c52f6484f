"""The one JWK Set cache: every key set we verify signatures with and fetch from a URL.

Its users: a client's `jwks_uri` (private_key_jwt, authserver.clients), a configured IdP's
`jwks_uri` and an SSF transmitter's `ssf_jwks_uri` (authserver.identity.discovery), and our
own issuer's JWKS at a resource server (`authserver.resource.jwks_verifier`). Each is fetched
by the one outbound fetcher (authserver.outbound: the SSRF rule at connect time, no
redirects, a size limit, timeouts) and kept in its bounded `FetchCache`:

- **Lifetime**: the response's `Cache-Control` within the fetcher's bounds, or a fixed
  `lifetime` (a configured IdP's, a resource server's `cache_seconds`).
- **Rotation**: a `kid` the cached set does not hold refetches the set, at most once per
  `refetch_interval` per URL (a flood of made-up `kid`s must not become a flood of requests),
  measured from the last such refetch, or with `interval_from_any_fetch` from any fetch.
- **Fail closed**: a fetch that fails, or a document that is not a JWK Set `parse` accepts,
  is an error (the user's `error`), never stale keys; only accepted sets are cached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, overload

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from authserver.errors import InvalidClientError
from authserver.outbound import FetchResult, Outbound, OutboundError

#: Largest JWK Set read from a client's `jwks_uri`.
JWKS_URI_MAX_BYTES = 64 * 1024
#: An unknown `kid` refetches a key set at most once per this many seconds.
JWKS_REFETCH_MIN_INTERVAL = 30

T = TypeVar("T")


class JwksError(Exception):
    """A key set could not be fetched, or is not a usable JWK Set; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _client_keys_error(e: JwksError) -> Exception:
    return InvalidClientError("Client keys could not be retrieved", debug=f"jwks_uri: {e.reason}")


def _key_set(doc: dict[str, Any]) -> KeySet:
    return KeySet.import_key_set(doc)  # type: ignore[arg-type]


def _key_set_kids(keys: KeySet) -> Iterable[str | None]:
    return (key.kid for key in keys.keys)


class JwksCache(Generic[T]):
    """JWK Sets by URL, parsed by `parse` (a JSON object with a `keys` array in, the caller's
    key form out; it raises to refuse) and found by `kid` through `kids`.

    Without `parse`, a joserfc `KeySet` (every key must import) and errors for a client
    (`InvalidClientError`): the private_key_jwt cache. `allow_internal` (a loopback
    issuer only, development) builds a fetcher that may reach internal hosts when no
    `outbound` is given.
    """

    @overload
    def __init__(self: JwksCache[KeySet], outbound: Outbound | None = None, *,
                 allow_internal: bool = False) -> None: ...

    @overload
    def __init__(self, outbound: Outbound | None = None, *, allow_internal: bool = False,
                 parse: Callable[[dict[str, Any]], T], kids: Callable[[T], Iterable[str | None]],
                 error: Callable[[JwksError], Exception], max_bytes: int = ...,
                 lifetime: int | None = None, refetch_interval: int = ...,
                 interval_from_any_fetch: bool = False) -> None: ...

    def __init__(self, outbound: Outbound | None = None, *, allow_internal: bool = False,
                 parse: Callable[[dict[str, Any]], Any] = _key_set,
                 kids: Callable[[Any], Iterable[str | None]] = _key_set_kids,
                 error: Callable[[JwksError], Exception] = _client_keys_error,
                 max_bytes: int = JWKS_URI_MAX_BYTES, lifetime: int | None = None,
                 refetch_interval: int = JWKS_REFETCH_MIN_INTERVAL,
                 interval_from_any_fetch: bool = False) -> None:
        self.outbound = outbound or Outbound(allow_internal=allow_internal)
        self._parse = parse
        self._kids = kids
        self._error = error
        self._refetch_interval = refetch_interval
        self._interval_from_any_fetch = interval_from_any_fetch
        self._cache = self.outbound.cache(self._document, max_bytes=max_bytes,
                                          lifetime=lifetime)
        self._mutex = threading.Lock()
        self._last_refetch: dict[str, float] = {}

    def get(self, uri: str, *, refresh: bool = False, kid: str | None = None,
            now: float | None = None) -> T:
        """The key set at `uri`: cached, or fetched (always with `refresh`; once per
        interval when the cached set lacks `kid`). `now` defaults to the fetcher's clock.
        Raises what `error` makes of a `JwksError`."""
        now = self.outbound.clock() if now is None else now
        try:
            hit = None if refresh else self._cache.cached(uri, now=now)
            if hit is None:
                return self._cache.get(uri, refresh=refresh, now=now)
            fetched_at, keys = hit
            if kid is None or kid in set(self._kids(keys)) or not self._may_refetch(
                    uri, now, fetched_at):
                return keys
            return self._cache.get(uri, refresh=True, now=now)
        except OutboundError as e:
            raise self._error(JwksError(e.reason)) from e
        except (JoseError, ValueError, TypeError, KeyError) as e:
            raise self._error(JwksError(type(e).__name__)) from e

    def _may_refetch(self, uri: str, now: float, fetched_at: float) -> bool:
        with self._mutex:
            last = self._last_refetch.get(uri)
            if self._interval_from_any_fetch:
                last = fetched_at if last is None else max(last, fetched_at)
            if last is not None and 0 <= now - last < self._refetch_interval:
                return False
            self._last_refetch[uri] = now
            return True

    def _document(self, result: FetchResult) -> Any:
        doc = json.loads(result.body)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWK Set")
        return self._parse(doc)
