"""authserver.clients: redirect URI matching and registration rules (unit level)."""

from __future__ import annotations

import pytest

from authserver.clients import OAuthClient, validate_client_metadata
from authserver.errors import InvalidClientMetadataError
from authserver.models import Client

SCOPES = ("openid", "read")


def _client(*redirect_uris: str) -> OAuthClient:
    return OAuthClient(Client(client_id="cli_x", secret_hash=None,
                              token_endpoint_auth_method="none",
                              client_metadata={"redirect_uris": list(redirect_uris)},
                              attributes={}, client_id_issued_at=0))


def test_redirect_uri_exact_match() -> None:
    assert _client("https://app.example/cb").check_redirect_uri("https://app.example/cb")


@pytest.mark.parametrize("presented", [
    "https://app.example/cb/", "https://app.example/CB", "https://app.example/cb?x=1",
    "https://app.example:8443/cb", "http://app.example/cb",
])
def test_redirect_uri_other_strings_do_not_match(presented: str) -> None:
    assert not _client("https://app.example/cb").check_redirect_uri(presented)


@pytest.mark.parametrize(("registered", "presented"), [
    ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"),
    ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51234/cb"),
    ("http://[::1]/cb", "http://[::1]:6000/cb"),
    ("http://localhost/cb", "http://localhost:51234/cb"),  # issue 14: localhost too
    ("http://localhost:3000/callback", "http://localhost:49152/callback"),
    ("http://localhost:3000/callback", "http://LOCALHOST:49152/callback"),
])
def test_loopback_redirect_uri_port_may_vary(registered: str, presented: str) -> None:
    # RFC 8252 §7.3: native apps pick the loopback port at run time.
    assert _client(registered).check_redirect_uri(presented)


@pytest.mark.parametrize("presented", [
    "http://127.0.0.1:51234/other", "http://localhost:51234/cb", "https://127.0.0.1:51234/cb",
    "http://127.0.0.1:99999/cb", "http://127.0.0.2:51234/cb",
])
def test_loopback_port_leniency_changes_nothing_else(presented: str) -> None:
    assert not _client("http://127.0.0.1/cb").check_redirect_uri(presented)


@pytest.mark.parametrize("uri", [
    "com.example.app:/jwks", "http://keys.example/jwks", "https://keys.example/jwks#x", "ftp://x/y",
])
def test_jwks_uri_must_be_https(uri: str) -> None:
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata({"token_endpoint_auth_method": "private_key_jwt",
                                  "grant_types": ["client_credentials"], "jwks_uri": uri},
                                 scopes=SCOPES)


def test_jwks_uri_https_accepted() -> None:
    md = validate_client_metadata({"token_endpoint_auth_method": "private_key_jwt",
                                   "grant_types": ["client_credentials"],
                                   "jwks_uri": "https://keys.example/jwks"}, scopes=SCOPES)
    assert md["jwks_uri"] == "https://keys.example/jwks"


@pytest.mark.parametrize("uri", [
    "https://127.0.0.1/jwks", "https://10.0.0.5/jwks", "https://169.254.169.254/latest",
    "https://[::1]/jwks", "https://localhost/jwks", "https://no-such-host.invalid/jwks",
    "https://[::ffff:10.0.0.5]/jwks", "http://keys.example/jwks",
])
def test_jwks_uri_pointing_inside_is_not_fetched(uri: str) -> None:
    """The SSRF rule of authserver.outbound (tests/test_outbound.py has one test per rule)."""
    from authserver.clients import JwksCache
    from authserver.errors import InvalidClientError
    from authserver.outbound import Outbound

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("must not be fetched")

    with pytest.raises(InvalidClientError):
        JwksCache(Outbound(connect=refuse)).get(uri)  # type: ignore[arg-type]


@pytest.mark.parametrize("presented", [
    "http://localhost:51234/other", "http://127.0.0.1:51234/cb", "https://localhost:51234/cb",
    "http://localhost.example.com:51234/cb", "http://localhost:0x10/cb",
    "http://user@localhost:51234/cb", "http://localhost:51234/cb#x",
])
def test_localhost_port_leniency_changes_nothing_else(presented: str) -> None:
    """The port is the only part that may vary; the host stays the registered one."""
    assert not _client("http://localhost:3000/cb").check_redirect_uri(presented)
