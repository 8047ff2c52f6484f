"""Settings are typed and checked at start-up: a wrong value stops the start and names itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from authserver.config import ConfigError, Settings

LOOPBACK_IDP = {"issuer": "http://127.0.0.1:9000", "client_id": "authserver",
                "client_secret": "idp-secret"}


def load_env(**env: str) -> Settings:
    return Settings.load(environ={f"AUTHSERVER_{k}": v for k, v in env.items()})


def load_toml(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "authserver.toml"
    path.write_text(text)
    return Settings.load(environ={"AUTHSERVER_CONFIG": str(path),
                                  **{f"AUTHSERVER_{k}": v for k, v in env.items()}})


# --- the four silent cases the operator met ----------------------------------------------------


def test_a_misspelt_boolean_is_an_error_not_false() -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_LOCAL_LOGIN: must be true or false"):
        load_env(LOCAL_LOGIN="flase")


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("off", False),
                                               ("TRUE", True), ("yes", True), (" 1 ", True)])
def test_booleans_in_the_environment(raw: str, expected: bool) -> None:
    assert load_env(LOCAL_LOGIN=raw).local_login is expected


def test_a_table_in_the_environment_must_be_json() -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_RATE_LIMITS: must be a JSON object"):
        load_env(RATE_LIMITS="read=5")
    settings = load_env(RATE_LIMITS='{"read": {"limit": 5, "window": 60}}')
    assert settings.rate_limits == {"read": {"limit": 5, "window": 60}}


def test_a_negative_ttl_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_ACCESS_TOKEN_TTL: must be between 1 and"):
        load_env(ACCESS_TOKEN_TTL="-5")


def test_a_ttl_with_a_unit_names_the_variable() -> None:
    with pytest.raises(ConfigError,
                       match=r"^AUTHSERVER_ACCESS_TOKEN_TTL: must be a whole number of seconds, "
                             r"got '10m'"):
        load_env(ACCESS_TOKEN_TTL="10m")


@pytest.mark.parametrize("name", ["ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "USER_ASSERTION_TTL",
                                  "CAPABILITY_TOKEN_TTL", "DPOP_PROOF_WINDOW"])
@pytest.mark.parametrize("value", ["0", "-1", "99999999999"])
def test_absurd_windows_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^AUTHSERVER_{name}: must be between"):
        load_env(**{name: value})


def test_choices_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_DPOP_NONCE: must be one of off, all"):
        load_env(DPOP_NONCE="always")
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_LOG_LEVEL: must be one of"):
        load_env(LOG_LEVEL="verbose")


def test_a_short_secret_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_SECRET_KEY: must be at least 32"):
        load_env(SECRET_KEY="short")


# --- the TOML file -------------------------------------------------------------------------


def test_an_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^`acess_token_ttl` in .*authserver.toml: unknown "
                                          r"setting \(did you mean `access_token_ttl`\?\)"):
        load_toml(tmp_path, "acess_token_ttl = 60\n")


def test_a_wrong_type_in_the_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^`access_token_ttl` in .*: must be a whole number"):
        load_toml(tmp_path, 'access_token_ttl = "600"\n')
    with pytest.raises(ConfigError, match=r"^`local_login` in .*: must be true or false"):
        load_toml(tmp_path, 'local_login = "false"\n')
    with pytest.raises(ConfigError, match=r"^`scopes` in .*: must be a list of strings"):
        load_toml(tmp_path, 'scopes = "openid read"\n')


def test_file_lists_become_tuples_and_the_environment_wins(tmp_path: Path) -> None:
    settings = load_toml(tmp_path, 'scopes = ["openid", "read"]\naccess_token_ttl = 300\n',
                         ACCESS_TOKEN_TTL="120")
    assert settings.scopes == ("openid", "read")
    assert settings.access_token_ttl == 120


def test_an_unreadable_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_CONFIG: cannot read"):
        Settings.load(environ={"AUTHSERVER_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_CONFIG: .* is not valid TOML"):
        load_toml(tmp_path, "issuer = \n")


@pytest.mark.parametrize(("table", "message"), [
    ("[rate_limits]\nread = { limit = 5, window = 0 }\n",
     r"`rate_limits.read.window` in .*: must be a positive whole number, got 0"),
    ("[rate_limits]\nread = { limit = 5, window = 604800 }\n",
     r"`rate_limits.read.window` in .*: must be at most 86400 seconds"),
    ("[rate_limits]\nread = { limit = -1 }\n",
     r"`rate_limits.read.limit` in .*: must be a positive whole number"),
    ("[rate_limits]\nreads = { limit = 5 }\n", r"`rate_limits.reads` in .*: unknown limit"),
    ("[rate_limits]\nread = 5\n", r"`rate_limits.read` in .*: must be a table of `limit`"),
])
def test_rate_limit_tables_are_checked(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        load_toml(tmp_path, table)


def test_idp_and_platform_tables_are_checked_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^`idps.corp` in .*: idps.corp: unknown keys"):
        load_toml(tmp_path, '[idps.corp]\nissuer = "https://login.example.com"\nclaims = 1\n')
    with pytest.raises(ConfigError, match=r"^`platforms.crm` in .*: platform crm: unknown"):
        load_toml(tmp_path, '[platforms.crm]\nprofile = "salesforce"\nclient_idd = "x"\n')


def test_with_an_https_issuer_every_idp_and_platform_url_is_https(tmp_path: Path) -> None:
    idp = 'issuer = "http://127.0.0.1:9000"\nclient_id = "a"\nclient_secret = "b"\n'
    # Loopback http is fine for a development issuer...
    assert load_toml(tmp_path, "[idps.corp]\n" + idp).idps["corp"]["client_id"] == "a"
    # ...but not once the issuer is a real https one.
    with pytest.raises(ConfigError, match=r"^`idps.corp.issuer` in .*: must be https when the "
                                          r"issuer is https, got 'http://127.0.0.1:9000'"):
        load_toml(tmp_path, 'issuer = "https://auth.example.com"\n[idps.corp]\n' + idp)
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_PLATFORMS \(platforms.crm.token_url\): "
                                          r"must be https"):
        load_env(ISSUER="https://auth.example.com",
                 PLATFORMS='{"crm": {"token_url": "http://127.0.0.1:1/token"}}')


def test_the_issuer_must_be_https_off_loopback() -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_ISSUER: must be https \(plain http only"):
        load_env(ISSUER="http://auth.example.com")


def test_unknown_overrides_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown settings: nope"):
        Settings.load({"nope": 1}, environ={})


# --- what `config check` prints ---------------------------------------------------------------


def test_effective_configuration_masks_secrets() -> None:
    settings = Settings.load({
        "secret_key": "s" * 40, "admin_token": "admin-token-value",
        "redis_url": "redis://:hunter2@redis:6379/0",
        "database_url": "postgresql://authserver:pw@db:5432/authserver",
        "idps": {"corp": LOOPBACK_IDP}}, environ={})
    shown = settings.effective()
    assert shown["secret_key"] == "***" and shown["admin_token"] == "***"
    assert shown["registration_token"] == ""
    assert shown["redis_url"] == "redis://:***@redis:6379/0"
    assert shown["database_url"] == "postgresql://authserver:***@db:5432/authserver"
    assert shown["idps"]["corp"] == {**LOOPBACK_IDP, "client_secret": "***"}
    assert shown["scopes"] == list(settings.scopes)
    assert "testing" not in shown
    text = repr(shown)
    for secret in ("s" * 40, "admin-token-value", "hunter2", ":pw@", "idp-secret"):
        assert secret not in text


def test_cimd_trusted_hosts_are_hostnames_compared_lower_case() -> None:
    settings = Settings.load(environ={"AUTHSERVER_CIMD_TRUSTED_HOSTS":
                                      "Client.Example.com,tools.example.net"})
    assert settings.cimd_trusted_hosts == ("client.example.com", "tools.example.net")


@pytest.mark.parametrize("value", ["https://client.example.com", "client.example.com:443",
                                   "*.example.com", "client.example.com/x", "-bad.example"])
def test_cimd_trusted_hosts_refuse_what_is_not_a_hostname(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_CIMD_TRUSTED_HOSTS: must be hostnames"):
        Settings.load(environ={"AUTHSERVER_CIMD_TRUSTED_HOSTS": value})
