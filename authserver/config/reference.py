"""What the settings look like from outside: every value with secrets masked
(`Settings.effective`, `authserver config check`) and the reference table generated from the
declarations (`reference()`, the README's settings table)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authserver.config.settings import Settings
from authserver.config.spec import default_of, kind_of, spec_of

_SECRET_KEY_NAMES = re.compile(r"secret|password|(^|_)token$", re.I)


def effective(settings: Settings) -> dict[str, Any]:
    """Every setting's value, secrets masked: what `authserver config check` prints."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        if spec_of(f).internal:
            continue
        value = getattr(settings, f.name)
        out[f.name] = _mask(value) if spec_of(f).secret else _plain(value)
    return out


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
    spec, default = spec_of(f), default_of(f)
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
    """The settings table of README.md, generated from the declarations (`config/settings.py`)."""
    lines = ["| key (`AUTHSERVER_…`) | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        spec = spec_of(f)
        if spec.internal:
            continue
        doc = spec.doc
        if kind_of(f) == "integer":
            doc += f"; seconds, {spec.minimum} to {spec.maximum}"
        if kind_of(f) == "table":
            doc += "; in the environment, a JSON object"
        lines.append(f"| `{f.name.upper()}` | {_default_text(f)} | {doc} |")
    return "\n".join(lines) + "\n"
