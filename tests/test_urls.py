"""One "https, or plain http on loopback" rule (authserver/urls.py), used by every place that
decides it: the issuer setting, IdP issuers and discovered endpoints, platform endpoints, and
client redirect URIs. A host is loopback only if it is exactly `localhost` or a loopback IP
literal; `localhost.example.com` is an ordinary DNS name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authserver.broker.profiles import Platform, is_allowed_url
from authserver.clients import is_acceptable_redirect_uri
from authserver.config import Settings
from authserver.identity.federation import IdPConfig
from authserver.urls import (
    is_https_or_loopback_url,
    is_https_url,
    is_loopback_host,
    is_loopback_http_url,
)

LOOPBACK = ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
            "http://127.0.0.2", "http://LOCALHOST"]
NOT_LOOPBACK = [
    "http://localhost.example.com",  # a prefix match is not loopback
    "http://127.0.0.1.example.com",
    "http://localhost@evil.example",  # userinfo: the host is evil.example
    "http://127.0.0.1@evil.example",
    "http://evil.example#@localhost",
    "http://localhostx",
    "http://127.1",  # numeric shorthands are not literals
    "http://2130706433",
    "http://0.0.0.0",
    "http://[::]",
    "http://10.0.0.1",
    "http://localhost.",  # a trailing dot is a DNS lookup, not the loopback name
    "http://localhost:99999",  # malformed port
    "ftp://localhost",
]


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "127.0.0.1", "127.255.0.9", "::1",
                                  "[::1]"])
def test_loopback_hosts(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["", None, "localhost.example.com", "127.0.0.1.example.com",
                                  "localhost.", "127.1", "0.0.0.0", "::", "::ffff:7f00:1x",
                                  "example.com", "10.0.0.1"])
def test_not_loopback_hosts(host):
    assert not is_loopback_host(host)


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_http_urls(url):
    assert is_loopback_http_url(url)
    assert is_https_or_loopback_url(url)


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_not_loopback_http_urls(url):
    assert not is_loopback_http_url(url)
    assert not is_https_or_loopback_url(url)


@pytest.mark.parametrize("url", ["https://auth.example.com", "https://localhost.example.com"])
def test_https_urls(url):
    assert is_https_or_loopback_url(url)
    assert not is_loopback_http_url(url)


@pytest.mark.parametrize("url", ["https://", "https://user@auth.example.com", "auth.example.com"])
def test_not_https_urls(url):
    assert not is_https_or_loopback_url(url)
    assert not is_https_url(url)


# --- cases where two spellings of the rule used to disagree ----------------------------------


@pytest.mark.parametrize("url", ["https://auth.example.com", "HTTPS://auth.example.com",
                                 "Https://localhost:8443"])
def test_https_scheme_is_case_insensitive(url):
    # `startswith("https://")` (the app's cookie flags, HSTS) said no to "HTTPS://", while the
    # issuer setting accepted it as https.
    assert is_https_url(url)
    assert is_https_or_loopback_url(url)


@pytest.mark.parametrize("url", [*LOOPBACK, "https://", "https://u:p@auth.example.com",
                                 "https://auth.example.com:99999", "ftp://auth.example.com"])
def test_not_https(url):
    # `startswith("https://")` took "https://" with no host and "https://u:p@..." as https.
    assert not is_https_url(url)


def test_an_uppercase_https_issuer_gets_secure_cookies(tmp_path: Path):
    from authserver.app import create_app

    app = create_app({"data_dir": str(tmp_path / "data"), "testing": True,
                      "issuer": "HTTPS://auth.example.com"})
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.config["SESSION_COOKIE_NAME"] == "__Host-authserver"
    finally:
        app.extensions["authserver"].db.engine.dispose()


def test_an_uppercase_https_issuer_still_requires_https_idps(tmp_path: Path):
    # The configuration's "with an https issuer, every IdP URL is https" check used
    # `startswith("https://")`, so "HTTPS://..." let a plain-http IdP through.
    config = tmp_path / "authserver.toml"
    config.write_text('issuer = "HTTPS://auth.example.com"\n[idps.corp]\n'
                      'issuer = "http://127.0.0.1:9000"\nclient_id = "a"\nclient_secret = "b"\n')
    with pytest.raises(ValueError, match="must be https when the issuer is https"):
        Settings.load(environ={"AUTHSERVER_CONFIG": str(config)})
    config.write_text('issuer = "https://auth.example.com"\n[idps.corp]\n'
                      'issuer = "HTTPS://idp.example.com"\nclient_id = "a"\nclient_secret = "b"\n')
    assert Settings.load(environ={"AUTHSERVER_CONFIG": str(config)}).idps["corp"]["client_id"] \
        == "a"


@pytest.mark.parametrize("url", ["http://localhost.example.com/jwks",
                                 "http://127.0.0.1.example.com/jwks"])
def test_the_fetcher_applies_the_same_loopback_rule(url):
    # Internal addresses allowed (a loopback issuer), still no plain http off loopback.
    from authserver.outbound import Outbound, OutboundError

    with pytest.raises(OutboundError, match="only https"):
        Outbound(allow_internal=True).get(url, max_bytes=10)


# --- every caller applies the same rule --------------------------------------------------------


@pytest.mark.parametrize("issuer", NOT_LOOPBACK)
def test_issuer_setting_refuses_a_non_loopback_http_issuer(tmp_path: Path, issuer: str):
    with pytest.raises(ValueError, match=r"^issuer: must be https"):
        Settings(issuer=issuer, data_dir=str(tmp_path))


@pytest.mark.parametrize("issuer", [*LOOPBACK, "https://auth.example.com"])
def test_issuer_setting_accepts_https_and_loopback(tmp_path: Path, issuer: str):
    assert Settings(issuer=issuer, data_dir=str(tmp_path)).issuer == issuer


@pytest.mark.parametrize("issuer", NOT_LOOPBACK)
def test_idp_issuer_refuses_a_non_loopback_http_issuer(issuer: str):
    with pytest.raises(ValueError):
        IdPConfig(name="corp", issuer=issuer, client_id="authserver", client_secret="s")


@pytest.mark.parametrize("issuer", LOOPBACK)
def test_idp_issuer_accepts_loopback(issuer: str):
    assert IdPConfig(name="corp", issuer=issuer, client_id="a", client_secret="s").issuer == issuer


def _platform(token_url: str) -> Platform:
    return Platform.from_settings("crm", {
        "authorize_url": "https://crm.example.com/authorize", "token_url": token_url,
        "revocation_url": "https://crm.example.com/revoke", "client_id": "c", "client_secret": "s"})


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_platform_endpoint_refuses_a_non_loopback_http_url(url: str):
    assert not is_allowed_url(url)
    with pytest.raises(ValueError, match="must be https"):
        _platform(url + "/token")


@pytest.mark.parametrize("url", LOOPBACK)
def test_platform_endpoint_accepts_loopback(url: str):
    assert is_allowed_url(url + "/token")
    assert _platform(url + "/token").token_url == url + "/token"


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_redirect_uri_refuses_a_non_loopback_http_uri(url: str):
    assert not is_acceptable_redirect_uri(url + "/cb")


@pytest.mark.parametrize("url", LOOPBACK)
def test_redirect_uri_accepts_loopback(url: str):
    assert is_acceptable_redirect_uri(url + "/cb")


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_jwks_uri_refuses_a_non_loopback_http_uri(url: str):
    from authserver.clients import validate_client_metadata
    from authserver.errors import InvalidClientMetadataError

    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata({"redirect_uris": ["https://app.example.com/cb"],
                                  "token_endpoint_auth_method": "private_key_jwt",
                                  "jwks_uri": url + "/jwks.json"}, scopes=("read",))


# --- RFC 8707 resource comparison (RFC 3986 §6.2.2-6.2.3, issue 14) ---------------------------

from authserver.urls import match_resource, normalize_resource  # noqa: E402


@pytest.mark.parametrize(("given", "normal"), [
    ("https://api.example.com/mcp", "https://api.example.com/mcp"),
    ("HTTPS://API.Example.COM/mcp", "https://api.example.com/mcp"),  # scheme and host
    ("https://api.example.com:443/mcp", "https://api.example.com/mcp"),  # default port
    ("http://127.0.0.1:80/x", "http://127.0.0.1/x"),
    ("https://api.example.com:8443/mcp", "https://api.example.com:8443/mcp"),
    ("https://api.example.com", "https://api.example.com/"),  # empty path is "/"
    ("https://api.example.com/", "https://api.example.com/"),
    ("https://api.example.com/mcp/", "https://api.example.com/mcp"),  # one trailing slash
    ("https://api.example.com/MCP", "https://api.example.com/MCP"),  # the path keeps its case
    ("https://api.example.com/mcp?v=1", "https://api.example.com/mcp?v=1"),
    ("https://[::1]:443/a", "https://[::1]/a"),
])
def test_resource_normalisation(given: str, normal: str) -> None:
    assert normalize_resource(given) == normal


@pytest.mark.parametrize("bad", [
    "https://api.example.com/mcp#frag", "urn:example:api", "ftp://api.example.com/",
    "https://user@api.example.com/", "https:///path", "https://api.example.com:99999/",
    "/relative",
])
def test_not_a_resource_indicator(bad: str) -> None:
    assert normalize_resource(bad) is None


def test_match_resource_returns_the_registered_form() -> None:
    known = {"https://api.example.com/mcp", "https://other.example.com/"}
    assert match_resource("HTTPS://api.EXAMPLE.com:443/mcp/", known) == \
        "https://api.example.com/mcp"
    assert match_resource("https://other.example.com", known) == "https://other.example.com/"
    assert match_resource("https://api.example.com/mcp/x", known) is None
    assert match_resource("https://api.example.com/mcp//", known) is None  # only one slash
