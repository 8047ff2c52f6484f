"""Loading the settings: the TOML file named by `AUTHSERVER_CONFIG`, then `AUTHSERVER_*`
environment variables (their text parsed as the setting's type), then explicit overrides (tests);
each value checked where it comes from, and the structured tables (`idps`, `platforms`,
`rate_limits`) checked by the code that will use them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authserver.config.spec import ConfigError, check_value, kind_of
from authserver.config.windows import MAX_RATE_LIMIT_WINDOW
from authserver.urls import is_https_url

if TYPE_CHECKING:
    from authserver.config.settings import Settings

ENV_PREFIX = "AUTHSERVER_"


def load_settings(cls: type[Settings], overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """`Settings.load`: from the TOML file, then the environment, then `overrides`; every value
    is checked where it comes from (`ConfigError` names it)."""
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
            values[key], labels[key] = check_value(fields[key], value, label), label
    for name, f in fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            label = ENV_PREFIX + name.upper()
            values[name], labels[name] = check_value(f, _parse(f, raw, label), label), label
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    for name, value in overrides.items():
        values[name], labels[name] = check_value(fields[name], value, name), name
    settings = cls(**values)
    _check_tables(settings, labels)
    return settings


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse(f: dataclasses.Field[Any], raw: str, label: str) -> Any:
    """An environment variable's text as the setting's type."""
    kind = kind_of(f)
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

    https = is_https_url(settings.issuer)
    for table, build in (("idps", IdPConfig.from_settings), ("platforms", Platform.from_settings)):
        for entry, mapping in getattr(settings, table).items():
            if not isinstance(mapping, Mapping):
                raise ConfigError(f"{where(table, f'{table}.{entry}')}: must be a table")
            for key in _TABLE_URLS[table]:
                url = mapping.get(key)
                if https and url is not None and not is_https_url(str(url)):
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
