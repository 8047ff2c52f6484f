"""deploy/nginx stays in step with the app (issue 13): the body limit, the placeholders the
README and scripts/tls-stack render, and a client address nginx saw rather than one it was told.
scripts/tls-stack runs the real thing (nginx, TLS, two instances) in CI."""

from __future__ import annotations

import re
from pathlib import Path

from authserver.app import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "nginx" / "authserver.conf.template"
PLACEHOLDERS = {"AUTHSERVER_LISTEN", "AUTHSERVER_SERVER_NAME", "AUTHSERVER_TLS_CERT",
                "AUTHSERVER_TLS_KEY", "AUTHSERVER_UPSTREAM_1", "AUTHSERVER_UPSTREAM_2"}


def directives() -> str:
    """The template without comments."""
    return "\n".join(line.split("#", 1)[0] for line in TEMPLATE.read_text().splitlines())


def test_body_limit_is_the_apps() -> None:
    (value,) = re.findall(r"client_max_body_size\s+(\d+)k;", directives())
    assert int(value) * 1024 == MAX_BODY_BYTES


def test_placeholders_are_the_documented_ones() -> None:
    used = set(re.findall(r"\$\{(AUTHSERVER_[A-Z0-9_]+)\}", directives()))
    assert used == PLACEHOLDERS
    for doc in (TEMPLATE, ROOT / "deploy" / "README.md", ROOT / "scripts" / "tls-stack"):
        listed = re.search(r"envsubst '([^']+)'", doc.read_text())
        assert listed, doc
        assert set(re.findall(r"\$\{(\w+)\}", listed.group(1))) == PLACEHOLDERS, doc


def test_client_address_is_what_nginx_saw() -> None:
    text = directives()
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr;", text)
    assert "proxy_add_x_forwarded_for" not in text  # appending would keep a client's claim
    for header in ("X-Forwarded-Protocol", "X-Forwarded-Ssl", "Forwarded", "X-Real-IP"):
        assert re.search(rf'proxy_set_header\s+{header}\s+"";', text), header


def test_slow_clients_end_at_nginx() -> None:
    text = directives()
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert re.search(rf"{directive}\s+\d+s;", text), directive
    assert re.search(r"proxy_request_buffering\s+on;", text)
    assert len(re.findall(r"^\s*server\s+\$\{AUTHSERVER_UPSTREAM_\d\}", text, re.M)) == 2
