"""The one JWK Set cache: `jwks_uri` documents fetched by the one outbound fetcher
(authserver.outbound: the SSRF rule at connect time, no redirects, a size limit, a cache that
honours Cache-Control within bounds). Only a valid JWK Set is cached."""

from __future__ import annotations

import json

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from authserver.errors import InvalidClientError
from authserver.outbound import FetchResult, Outbound, OutboundError

JWKS_URI_MAX_BYTES = 64 * 1024


class JwksCache:
    """Clients' `jwks_uri` documents, fetched and cached by the one outbound fetcher
    (authserver.outbound: the SSRF rule at connect time, no redirects, a size limit, a
    cache that honours Cache-Control within bounds). Only a valid JWK Set is cached."""

    def __init__(self, outbound: Outbound | None = None, *,
                 allow_internal: bool = False) -> None:
        #: `allow_internal`: development only (a loopback issuer), client key URLs may point
        #: at internal hosts.
        self.outbound = outbound or Outbound(allow_internal=allow_internal)
        self._cache = self.outbound.cache(_key_set, max_bytes=JWKS_URI_MAX_BYTES)

    def get(self, uri: str, *, refresh: bool = False) -> KeySet:
        try:
            return self._cache.get(uri, refresh=refresh)
        except OutboundError as e:
            raise InvalidClientError("Client keys could not be retrieved",
                                     debug=f"jwks_uri: {e.reason}") from e
        except (JoseError, ValueError, TypeError, KeyError) as e:
            raise InvalidClientError("Client keys could not be retrieved",
                                     debug=f"jwks_uri: {type(e).__name__}") from e


def _key_set(result: FetchResult) -> KeySet:
    return KeySet.import_key_set(json.loads(result.body))
