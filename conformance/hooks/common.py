"""Shared by the hooks: the stack's state file and HTML form scraping (CSRF tokens, inputs)."""

from __future__ import annotations

import html
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

HTTP_TIMEOUT = 30
_CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"|value="([^"]+)"\s+name="csrf_token"')


class HookError(RuntimeError):
    """The stack did not behave as the HTTP contract says; the hook exits non-zero."""


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_private_json(path: str | Path, value: Any) -> None:
    """Write JSON readable by this user only (the files hold secrets and private keys)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2)
    tmp.replace(path)


def csrf_from(page: str) -> str:
    match = _CSRF.search(page)
    if match is None:
        raise HookError("no csrf_token field on the page")
    return html.unescape(match.group(1) or match.group(2))


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"),
                               "fields": [], "buttons": []})
        elif self.forms and tag == "input" and a.get("name"):
            self.forms[-1]["fields"].append((a["name"], a.get("value", "")))
        elif self.forms and tag == "button" and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))


def forms(page: str) -> list[dict[str, Any]]:
    """Every form on the page: action, method, (name, value) of inputs and named buttons."""
    parser = _Forms()
    parser.feed(page)
    return parser.forms
