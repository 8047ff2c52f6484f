"""authserver.broker.http_session: the platform client reads the environment once, keeps
connections alive per thread and never keeps cookies between calls (issue 18)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from authserver.broker import http_session


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen_cookies: list[str | None] = []

    def do_GET(self) -> None:
        _Handler.seen_cookies.append(self.headers.get("Cookie"))
        body = b"{}"
        self.send_response(200)
        self.send_header("Set-Cookie", "session=alice-only; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen_cookies.clear()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_a_cookie_set_for_one_call_is_never_sent_on_the_next(server_url: str) -> None:
    session = http_session.new_session()
    for _ in range(2):
        assert session.request("GET", server_url, timeout=5).status_code == 200
    assert _Handler.seen_cookies == [None, None]
    assert len(session.cookies) == 0


def test_one_session_per_thread() -> None:
    sessions = http_session.ThreadLocalSessions()
    mine = sessions.session
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(sessions.session))
    thread.start()
    thread.join()
    assert sessions.session is mine and other[0] is not mine


def test_environment_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert http_session.environment_needs_trust_env() is False
    monkeypatch.setenv("NO_PROXY", "example.com")  # no proxy configured: still not needed
    assert http_session.environment_needs_trust_env() is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert http_session.environment_needs_trust_env() is True
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/a.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/b.pem")
    assert http_session.environment_ca_bundle() == "/etc/ssl/a.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert http_session.environment_ca_bundle() == "/etc/ssl/b.pem"


def test_sessions_take_the_ca_bundle_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_session, "_TRUST_ENV", False)
    monkeypatch.setattr(http_session, "_CA_BUNDLE", "/etc/ssl/bundle.pem")
    session = http_session.new_session()
    assert session.trust_env is False and session.verify == "/etc/ssl/bundle.pem"
