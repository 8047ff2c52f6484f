"""Settings and the named windows every rule uses.

Settings come from `AUTHSERVER_*` environment variables and, optionally, a TOML file named by
`AUTHSERVER_CONFIG` (its top-level keys are the variable names without the prefix, lower-case;
tables `idps`, `platforms` and `rate_limits` hold structured settings). Environment
beats file; explicit overrides (tests) beat both.

Every setting is declared once, below, with its type, bounds and documentation. `Settings.load`
checks each value where it comes from and raises `ConfigError` naming it (`AUTHSERVER_X`, or
`x` in the TOML file): unknown keys, wrong types, out-of-range windows and non-https URLs stop
the start. `reference()` renders the same declarations as the README's settings table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authserver.urls import is_https_or_loopback_url

# --- windows and lifetimes (seconds); named so a reviewer finds every number in one place ------
ACCESS_TOKEN_TTL = 600
REFRESH_TOKEN_TTL = 30 * 24 * 3600
#: How long after a rotation the same client may present the rotated refresh token again and
#: get the same successor back (a lost token response, issue 13 item 6); 0 turns it off.
#: 30 s covers a client's read timeout plus a retry with backoff; see README, "Refresh tokens".
REFRESH_TOKEN_REUSE_INTERVAL = 30
AUTHORIZATION_CODE_TTL = 60
USER_ASSERTION_TTL = 300
CAPABILITY_TOKEN_TTL = 60
CLIENT_ASSERTION_MAX_AGE = 300
DPOP_PROOF_WINDOW = 60
DPOP_FUTURE_SKEW = 5
DPOP_NONCE_TTL = 300
JWT_LEEWAY = 30
APPROVAL_TTL = 600
APPROVAL_POLL_INTERVAL = 2
#: Browser sessions (authserver/sessions.py): absolute lifetime from sign-in, idle lifetime
#: from the last request, and how often a request refreshes "last used" in the store.
SESSION_TTL = 8 * 3600
SESSION_IDLE_TTL = 30 * 60
SESSION_TOUCH_INTERVAL = 60

DAY = 24 * 3600
#: Upper bound of a rate-limit window: anything longer is a typo (minutes meant as seconds…).
MAX_RATE_LIMIT_WINDOW = DAY

PACKAGE_DIR = Path(__file__).resolve().parent
#: Shipped inside the package (`authserver/policies` is the repository's `policies/`).
DEFAULT_POLICY_DIR = PACKAGE_DIR / "policies"
ENV_PREFIX = "AUTHSERVER_"


class ConfigError(ValueError):
    """A setting with an unknown name, a wrong type or an out-of-range value; the message
    starts with where it came from (`AUTHSERVER_X`, or `x` in the TOML file)."""


@dataclass(frozen=True)
class Spec:
    """What one setting is: its documentation and the checks its value must pass."""

    doc: str
    #: How the default reads in the reference (else the default itself).
    default_doc: str | None = None
    secret: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    #: For strings: if set, at least this many characters (the empty string means "unset").
    min_length: int = 0
    #: An https URL (plain http only on loopback).
    https_url: bool = False
    #: For lists: each item an IP address or network (CIDR).
    ip_networks: bool = False
    #: For lists: each item a DNS hostname (compared lower-case; no scheme, port or path).
    hostnames: bool = False
    #: Not an operator setting (the test suite's switches); left out of the reference.
    internal: bool = False


def _setting(default: Any, doc: str, **spec: Any) -> Any:
    metadata = {"spec": Spec(doc, **spec)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


_TTL = {"minimum": 1}
#: A DNS hostname (RFC 1123 §2.1): dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_URL_SECRET = "the password in the URL is masked by `authserver config check`"


@dataclass(frozen=True)
class Settings:
    issuer: str = _setting(
        "http://127.0.0.1:8000",
        "the public base URL. It is used for DPoP `htu` and token `aud` comparisons, so behind a "
        "proxy use the external URL. It must be https (plain http only on loopback).",
        https_url=True)
    data_dir: str = _setting("var", "SQLite file, KEK file and generated secret live here")
    database_url: str = _setting(
        "", "e.g. `postgresql://user@db:5432/authserver` (psycopg 3)",
        default_doc="SQLite in `DATA_DIR`", secret=True)
    redis_url: str = _setting(
        "", "e.g. `redis://redis:6379/0` (required with more than one process)",
        default_doc="*(unset: embedded store, one process only)*", secret=True)
    #: Namespace for every key in Redis (deployments, or test runs, sharing one Redis).
    redis_key_prefix: str = _setting("authserver:", "namespace for keys in a shared Redis")
    kek_file: str = _setting(
        "", "the local key-encryption key (32 random bytes, base64, created 0600 on first start)",
        default_doc="`DATA_DIR/kek.key`")
    #: Older KEK files, still accepted for decryption during a KEK rotation.
    previous_kek_files: tuple[str, ...] = _setting(
        (), "older KEK files still accepted for decryption during a KEK rotation "
        "(comma-separated)", default_doc="*(none)*")
    secret_key: str = _setting(
        "", "sessions and DPoP nonces (≥ 32 characters). Every instance of a deployment must "
        "share it.", default_doc="generated into `DATA_DIR/secret.key`", secret=True,
        min_length=32)
    policy_dir: str = _setting(
        str(DEFAULT_POLICY_DIR),
        "Cedar schema and policies. The app refuses to start if they do not validate.",
        default_doc="`policies/` (shipped in the package)")
    registration_token: str = _setting(
        "", "initial access token required at `/register`",
        default_doc="*(open registration)*", secret=True)
    admin_token: str = _setting(
        "", "Bearer token for `/admin/*`", default_doc="*(admin API off)*", secret=True)
    dpop_nonce: str = _setting(
        "off", "`off`, `all` (every client), or `per_client` (clients created with "
        "`--dpop-nonce`)", choices=("off", "all", "per_client"))
    dpop_required_grants: tuple[str, ...] = _setting(
        ("urn:ietf:params:oauth:grant-type:token-exchange",),
        "grants that must present a DPoP proof (comma-separated)", default_doc="token exchange")
    resources: tuple[str, ...] = _setting(
        (), "extra RFC 8707 resources tokens may be audience-restricted to (comma-separated)",
        default_doc="*(none)*")
    trusted_proxies: tuple[str, ...] = _setting(
        (), "reverse proxies (IP addresses or CIDR networks, comma-separated) whose "
        "`X-Forwarded-For` gives the client address for per-address rate limits, logs and "
        "audit; gunicorn.conf.py uses it for `FORWARDED_ALLOW_IPS` too when that is unset "
        "(see deploy/)", default_doc="*(none: the peer address is the client)*",
        ip_networks=True)
    cimd_trusted_hosts: tuple[str, ...] = _setting(
        (), "hosts whose client metadata documents (URL client ids) the consent page shows "
        "without the *unverified* mark (comma-separated hostnames, exact match)",
        default_doc="*(none: every such client is marked unverified)*", hostnames=True)
    scopes: tuple[str, ...] = _setting(
        ("openid", "profile", "email", "offline_access", "read", "write"), "supported scopes")
    access_token_ttl: int = _setting(ACCESS_TOKEN_TTL, "access tokens",
                                     **_TTL, maximum=DAY)
    refresh_token_ttl: int = _setting(REFRESH_TOKEN_TTL, "refresh tokens",
                                      minimum=60, maximum=366 * DAY)
    refresh_token_reuse_interval: int = _setting(
        REFRESH_TOKEN_REUSE_INTERVAL,
        "for this long after a rotation, the same client (its credentials and DPoP key) "
        "presenting the rotated refresh token again gets the same successor back: a lost "
        "response is retried, not taken for theft (see *Refresh tokens* below); 0 turns it off",
        minimum=0, maximum=300)
    user_assertion_ttl: int = _setting(
        USER_ASSERTION_TTL, "the edge-minted user assertion",
        **_TTL, maximum=3600)
    capability_token_ttl: int = _setting(
        CAPABILITY_TOKEN_TTL, "the gateway token", **_TTL, maximum=600)
    dpop_proof_window: int = _setting(
        DPOP_PROOF_WINDOW, "how old a proof's `iat` may be", **_TTL, maximum=600)
    local_login: bool = _setting(
        True, "allow local accounts; set to `false` in production so people sign in at the "
        "IdP only")
    log_level: str = _setting(
        "INFO", "JSON logs on stderr, one line per request with its correlation id",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    auto_migrate: bool = _setting(
        True, "run migrations at start-up (set to `false` and run `authserver db upgrade` once "
        "per deploy when many replicas start together)")
    testing: bool = _setting(False, "Flask's test mode, for the test suite only", internal=True)
    idps: Mapping[str, Any] = _setting(
        {}, "corporate OpenID Connect IdPs: TOML tables `[idps.NAME]` (below)",
        default_doc="*(none)*", secret=True)
    platforms: Mapping[str, Any] = _setting(
        {}, "downstream platforms the broker connects users to: TOML tables "
        "`[platforms.NAME]` (below)", default_doc="*(none)*", secret=True)
    rate_limits: Mapping[str, Any] = _setting(
        {}, "per user × `read`/`write`/`destructive`, and per `agent`: TOML table "  # noqa: RUF001
        "`[rate_limits]` of `{ limit, window }` (window: 1 to 86400 seconds)",
        default_doc="120, 30, 5 and 300 per 60 s")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f, getattr(self, f.name), f.name))
        object.__setattr__(self, "issuer", self.issuer.rstrip("/"))
        data_dir = Path(self.data_dir)
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(data_dir / 'authserver.db').resolve()}"
            )
        if not self.kek_file:
            object.__setattr__(self, "kek_file", str(data_dir / "kek.key"))

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from the TOML file, then the environment, then `overrides`; every value is
        checked where it comes from (`ConfigError` names it)."""
        environ = os.environ if environ is None else environ
        overrides = dict(overrides or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        labels: dict[str, str] = {}
        config_file = overrides.pop("config_file", None) or environ.get("AUTHSERVER_CONFIG")
        if config_file:
            for key, value in _read_toml(str(config_file)).items():
                label = f"`{key}` in {config_file}"
                if key not in fields:
                    raise ConfigError(f"{label}: unknown setting{_did_you_mean(key, fields)}")
                values[key], labels[key] = _check(fields[key], value, label), label
        for name, f in fields.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                label = ENV_PREFIX + name.upper()
                values[name], labels[name] = _check(f, _parse(f, raw, label), label), label
        unknown = set(overrides) - set(fields)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        for name, value in overrides.items():
            values[name], labels[name] = _check(fields[name], value, name), name
        settings = cls(**values)
        _check_tables(settings, labels)
        return settings

    def effective(self) -> dict[str, Any]:
        """Every setting's value, secrets masked: what `authserver config check` prints."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if _spec(f).internal:
                continue
            value = getattr(self, f.name)
            out[f.name] = _mask(value) if _spec(f).secret else _plain(value)
        return out


# --- checks --------------------------------------------------------------------------------


def _spec(f: dataclasses.Field[Any]) -> Spec:
    spec = f.metadata["spec"]
    assert isinstance(spec, Spec)
    return spec


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _kind(f: dataclasses.Field[Any]) -> str:
    default = _default(f)
    for kind, types in (("boolean", bool), ("integer", int), ("string", str),
                        ("list", tuple), ("table", dict)):
        if isinstance(default, types):
            return kind
    raise AssertionError(f.name)  # pragma: no cover


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse(f: dataclasses.Field[Any], raw: str, label: str) -> Any:
    """An environment variable's text as the setting's type."""
    kind = _kind(f)
    if kind == "boolean":
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(f"{label}: must be true or false, got {raw!r}")
    if kind == "integer":
        if not re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            raise ConfigError(f"{label}: must be a whole number of seconds, got {raw!r}")
        return int(raw)
    if kind == "list":
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    if kind == "table":
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ConfigError(
                f"{label}: must be a JSON object, e.g. {{\"read\": {{\"limit\": 120, "
                f"\"window\": 60}}}}, got {raw!r} (or use a [{f.name}] table in the "
                "AUTHSERVER_CONFIG file)")
        return value
    return raw


def _check(f: dataclasses.Field[Any], value: Any, label: str) -> Any:
    """`value` if it is of the setting's type and within its bounds (lists become tuples)."""
    spec, kind = _spec(f), _kind(f)
    if kind == "boolean" and not isinstance(value, bool):
        raise ConfigError(f"{label}: must be true or false, got {value!r}")
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label}: must be a whole number of seconds, got {value!r}")
        if (spec.minimum is not None and value < spec.minimum) or \
                (spec.maximum is not None and value > spec.maximum):
            raise ConfigError(f"{label}: must be between {spec.minimum} and {spec.maximum} "
                              f"seconds, got {value}")
    if kind == "string":
        if not isinstance(value, str):
            raise ConfigError(f"{label}: must be a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{label}: must be one of {', '.join(spec.choices)}, "
                              f"got {value!r}")
        if spec.min_length and value and len(value) < spec.min_length:
            raise ConfigError(f"{label}: must be at least {spec.min_length} characters")
        if spec.https_url and not is_https_or_loopback_url(value.rstrip("/")):
            raise ConfigError(f"{label}: must be https (plain http only on loopback, for "
                              f"development), got {value!r}")
    if kind == "list":
        if not isinstance(value, list | tuple) or not all(
                isinstance(x, str) and x for x in value):
            raise ConfigError(f"{label}: must be a list of strings, got {value!r}")
        value = tuple(value)
        if spec.ip_networks:
            import ipaddress

            for item in value:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ConfigError(f"{label}: must be IP addresses or networks (CIDR), "
                                      f"got {item!r}") from None
        if spec.hostnames:
            for item in value:
                if not _HOSTNAME.fullmatch(item):
                    raise ConfigError(f"{label}: must be hostnames (such as "
                                      f"client.example.com), got {item!r}")
            value = tuple(item.lower() for item in value)
    if kind == "table" and not isinstance(value, Mapping):
        raise ConfigError(f"{label}: must be a table, got {value!r}")
    return value


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"AUTHSERVER_CONFIG: cannot read {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"AUTHSERVER_CONFIG: {path} is not valid TOML: {e}") from e


def _did_you_mean(key: str, names: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(names), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


#: The keys of `idps` and `platforms` tables that are URLs.
_TABLE_URLS = {"idps": ("issuer",),
               "platforms": ("authorize_url", "token_url", "revocation_url", "api_base_url")}


def _check_tables(settings: Settings, labels: Mapping[str, str]) -> None:
    """The structured tables, by the same code that will use them, plus: with an https issuer
    every configured IdP and platform URL is https (loopback http is for development)."""
    from authserver.broker.profiles import Platform
    from authserver.identity.federation import IdPConfig
    from authserver.ratelimit import DEFAULT_LIMITS

    def where(name: str, path: str) -> str:
        label = labels.get(name, name)
        if label.startswith("`"):  # `key` in FILE
            return f"`{path}` in {label.split(' in ', 1)[1]}"
        return path if label == name else f"{label} ({path})"

    https = settings.issuer.startswith("https://")
    for table, build in (("idps", IdPConfig.from_settings), ("platforms", Platform.from_settings)):
        for entry, mapping in getattr(settings, table).items():
            if not isinstance(mapping, Mapping):
                raise ConfigError(f"{where(table, f'{table}.{entry}')}: must be a table")
            for key in _TABLE_URLS[table]:
                url = mapping.get(key)
                if https and url is not None and not str(url).startswith("https://"):
                    raise ConfigError(f"{where(table, f'{table}.{entry}.{key}')}: must be https "
                                      f"when the issuer is https, got {url!r}")
            try:
                build(entry, mapping)
            except ValueError as e:
                raise ConfigError(f"{where(table, f'{table}.{entry}')}: {e}") from e
    for name, spec in settings.rate_limits.items():
        path = f"rate_limits.{name}"
        if name not in DEFAULT_LIMITS:
            raise ConfigError(f"{where('rate_limits', path)}: unknown limit (known: "
                              f"{', '.join(DEFAULT_LIMITS)})")
        if not isinstance(spec, Mapping) or set(spec) - {"limit", "window"}:
            raise ConfigError(f"{where('rate_limits', path)}: must be a table of `limit` and "
                              f"`window`, got {spec!r}")
        for key in ("limit", "window"):
            value = spec.get(key, getattr(DEFAULT_LIMITS[name], key))
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where('rate_limits', f'{path}.{key}')}: must be a positive "
                                  f"whole number, got {value!r}")
        window = spec.get("window", DEFAULT_LIMITS[name].window)
        if window > MAX_RATE_LIMIT_WINDOW:
            raise ConfigError(f"{where('rate_limits', f'{path}.window')}: must be at most "
                              f"{MAX_RATE_LIMIT_WINDOW} seconds, got {window}")


# --- masking and the reference -------------------------------------------------------------


_SECRET_KEY_NAMES = re.compile(r"secret|password|(^|_)token$", re.I)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _mask(value: Any) -> Any:
    """Secrets as `***`; a URL keeps everything but its password; tables keep their
    non-secret keys."""
    if isinstance(value, Mapping):
        return {k: _mask(v) if isinstance(v, Mapping) or _SECRET_KEY_NAMES.search(str(k))
                else _plain(v) for k, v in value.items()}
    if not value:
        return value
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.password is None:
            return value
        netloc = f"{parts.username}:***@{parts.hostname}" + (
            f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return "***"


def _default_text(f: dataclasses.Field[Any]) -> str:
    spec, default = _spec(f), _default(f)
    if spec.default_doc is not None:
        return spec.default_doc
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, int):
        return str(default)
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{default}`"


def reference() -> str:
    """The settings table of README.md, generated from the declarations above."""
    lines = ["| key (`AUTHSERVER_…`) | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        spec = _spec(f)
        if spec.internal:
            continue
        doc = spec.doc
        if _kind(f) == "integer":
            doc += f"; seconds, {spec.minimum} to {spec.maximum}"
        if _kind(f) == "table":
            doc += "; in the environment, a JSON object"
        lines.append(f"| `{f.name.upper()}` | {_default_text(f)} | {doc} |")
    return "\n".join(lines) + "\n"
