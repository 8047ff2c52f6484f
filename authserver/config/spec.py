"""What a setting is (`Spec`: its documentation, bounds and kind) and the check every value
passes, wherever it comes from (`check_value`); a bad one is a `ConfigError` naming where it
came from."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authserver.urls import is_https_or_loopback_url


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


def setting(default: Any, doc: str, **spec: Any) -> Any:
    """A `Settings` field: its default and its `Spec`."""
    metadata = {"spec": Spec(doc, **spec)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


#: The bounds of a lifetime: at least a second.
TTL = {"minimum": 1}
#: A DNS hostname (RFC 1123 §2.1): dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def spec_of(f: dataclasses.Field[Any]) -> Spec:
    spec = f.metadata["spec"]
    assert isinstance(spec, Spec)
    return spec


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def kind_of(f: dataclasses.Field[Any]) -> str:
    default = default_of(f)
    for kind, types in (("boolean", bool), ("integer", int), ("string", str),
                        ("list", tuple), ("table", dict)):
        if isinstance(default, types):
            return kind
    raise AssertionError(f.name)  # pragma: no cover


def check_value(f: dataclasses.Field[Any], value: Any, label: str) -> Any:
    """`value` if it is of the setting's type and within its bounds (lists become tuples)."""
    spec, kind = spec_of(f), kind_of(f)
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
