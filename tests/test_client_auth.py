"""authserver.client_auth, private_key_jwt: the registered `jwks` documents it imports are kept
by their exact content (issue 18), so a client whose keys change is verified with its new keys
at once, never with the old entry's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from joserfc.jwk import ECKey

from authserver.client_auth import _client_keys, verify_client_assertion
from authserver.clients import OAuthClient
from authserver.errors import InvalidClientError
from authserver.jwks import JwksCache
from authserver.store.memory import MemoryStore
from tests.http_helpers import ISSUER, client_assertion, ec_key, public_jwks

NOW = 1_900_000_000
CLIENT_ID = "agent-1"


@dataclass
class Row:
    """A registered private_key_jwt client, as client authentication reads it."""

    client_metadata: dict[str, Any]
    client_id: str = CLIENT_ID
    token_endpoint_auth_method: str = "private_key_jwt"
    attributes: dict[str, Any] = field(default_factory=dict)


def verify(row: Row, key: ECKey) -> dict[str, Any]:
    return verify_client_assertion(
        client_assertion(key, row.client_id, now=NOW), OAuthClient(row),  # type: ignore[arg-type]
        issuer=ISSUER, token_endpoint=ISSUER + "/token", store=MemoryStore(),
        jwks_cache=JwksCache(), now=NOW)


def test_changed_jwks_is_not_answered_from_the_old_entry() -> None:
    old, new = ec_key(), ec_key()
    row = Row({"jwks": public_jwks(old)})
    assert verify(row, old)["sub"] == CLIENT_ID
    row.client_metadata = {"jwks": public_jwks(new)}  # the admin replaced the client's keys
    with pytest.raises(InvalidClientError) as refused:
        verify(row, old)
    assert refused.value.reason == "client_assertion_bad_signature"
    assert verify(row, new)["sub"] == CLIENT_ID


def test_the_same_jwks_content_is_imported_once() -> None:
    key = ec_key()
    jwks = public_jwks(key)
    reordered = {"keys": [dict(reversed(list(k.items()))) for k in jwks["keys"]]}
    cache = JwksCache()
    first = _client_keys(OAuthClient(Row({"jwks": jwks})), cache)  # type: ignore[arg-type]
    again = _client_keys(OAuthClient(Row({"jwks": reordered})), cache)  # type: ignore[arg-type]
    assert again is first
    other = _client_keys(OAuthClient(Row({"jwks": public_jwks(key, ec_key())})),  # type: ignore[arg-type]
                         cache)
    assert other is not first and len(other.keys) == 2


@pytest.mark.parametrize("jwks", [{"keys": [{"kty": "EC", "crv": "P-256"}]}, {"keys": "x"}, []])
def test_unusable_jwks_is_refused_every_time(jwks: Any) -> None:
    for _ in range(2):
        with pytest.raises(InvalidClientError) as refused:
            verify(Row({"jwks": jwks}), ec_key())
        assert refused.value.reason == "client_keys_unusable"
