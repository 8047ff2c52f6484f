"""RFC 9449 §4.2 DPoP proofs for HTTP tests, built byte for byte so a test controls every field.

The RFC 7638 thumbprint is computed here from the JWK members, independently of the server's
`authserver.dpop.jwk_thumbprint`, so a test that compares it with `cnf.jkt` checks the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, Key

from tests.conftest import base_settings
from tests.http_helpers import ISSUER, RESOURCE

TOKEN_ENDPOINT = ISSUER + "/token"

#: RFC 7638 §3.2: the required members, per key type, that the thumbprint hashes.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                       "OKP": ("crv", "kty", "x")}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jws(header: dict[str, Any], claims: Any, key: Key) -> str:
    """Compact JWS over exactly `header` and `claims` (no library defaults added)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = jws.JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode(), key)
    return signing_input + "." + b64url(signature)


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return b64url(hashlib.sha256(canonical).digest())


class ProofKey:
    """A client's DPoP key (ES256 on P-256 unless given) and the proofs it signs."""

    def __init__(self, key: Key | None = None, alg: str = "ES256") -> None:
        self.key = key or ECKey.generate_key("P-256")
        self.alg = alg

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    @property
    def jkt(self) -> str:
        return rfc7638_thumbprint(self.public_jwk)

    def proof(
        self,
        htu: str,
        *,
        htm: str = "POST",
        iat: float | None = None,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        signing_key: Key | None = None,
        **claims: Any,
    ) -> str:
        """A proof for `htm htu`. `header`/`claims` override or add fields (a header field set
        to None is removed), `drop` removes claims, `signing_key` signs with another key than
        the one in `jwk`."""
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": htm,
            "htu": htu,
            "iat": int(time.time()) if iat is None else iat,
        }
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims)
        for name in drop:
            body.pop(name, None)
        jose_header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk,
                       **(header or {})}
        jose_header = {name: value for name, value in jose_header.items() if value is not None}
        return sign_jws(jose_header, body, signing_key or self.key)


# --- app settings for DPoP HTTP tests -----------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra `create_app` settings; a test sets them with `with_settings(...)`."""
    return {}


@pytest.fixture
def app_config(tmp_path: Any, database_url: str, redis_url: str,
               settings_overrides: dict[str, Any]) -> dict[str, Any]:
    """tests.http_helpers' settings (conftest `base_settings`), plus `settings_overrides`."""
    return {**base_settings(tmp_path, database_url, redis_url, issuer=ISSUER),
            "resources": (RESOURCE,), **settings_overrides}


def with_settings(**settings: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("settings_overrides", [settings],
                                   ids=[",".join(f"{k}={v}" for k, v in settings.items())])
