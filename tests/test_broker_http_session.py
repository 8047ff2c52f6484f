"""authserver.broker.http_session: the platform clients read the environment once, keep
connections alive (per thread for `requests`, per process for the gateway's urllib3 pool),
never keep cookies between calls, follow no redirect and read no more than they are allowed
(issue 18)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3

from authserver.broker import http_session
from tests.tls_helpers import Route, TLSServer, tls_server  # noqa: F401


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


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` on a loopback port, in a thread; yields its base URL (no trailing /)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server_url() -> Iterator[str]:
    _Handler.seen_cookies.clear()
    with _serving(_Handler) as url:
        yield url + "/"


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


# --- PlatformCalls: the gateway's pooled urllib3 client --------------------------------------


class _Platform(http.server.BaseHTTPRequestHandler):
    """A platform that keeps connections alive: /ok, /cookie (sets one), /redirect (302),
    /big (100 bytes), /slow (answers after 2 s). Records each request's path, headers and
    connection (the client's port)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str], int]] = []

    def do_GET(self) -> None:
        _Platform.seen.append((self.path, dict(self.headers.items()), self.client_address[1]))
        headers = {"Content-Type": "application/json"}
        body, status = b'{"ok": true}', 200
        if self.path == "/cookie":
            headers["Set-Cookie"] = "session=alice-only; Path=/"
        elif self.path == "/redirect":
            status, headers["Location"] = 302, "/ok"
        elif self.path == "/big":
            body = b"x" * 100
        elif self.path == "/slow":
            time.sleep(2)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def platform_url() -> Iterator[str]:
    _Platform.seen.clear()
    with _serving(_Platform) as url:
        yield url


def _send(calls: http_session.PlatformCalls, url: str, *, max_bytes: int = 1024,
          timeout: tuple[float, float] = (3.0, 5.0)) -> http_session.PlatformAnswer:
    return calls.send("GET", url, body=None, headers={"Accept": "application/json"},
                      timeout=timeout, max_bytes=max_bytes)


def test_platform_calls_reuse_one_kept_alive_connection(platform_url: str) -> None:
    calls = http_session.PlatformCalls(trust_env=False)
    answers = [_send(calls, platform_url + "/ok") for _ in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b'{"ok": true}')] * 3
    assert answers[0].headers.get("content-type") == "application/json"  # any case
    assert len({port for _path, _headers, port in _Platform.seen}) == 1


def test_platform_calls_keep_no_cookie_and_ask_for_no_content_coding(platform_url: str) -> None:
    calls = http_session.PlatformCalls(trust_env=False)
    _send(calls, platform_url + "/cookie")
    _send(calls, platform_url + "/ok")
    sent = [headers for _path, headers, _port in _Platform.seen]
    assert all("Cookie" not in h and h.get("Accept-Encoding", "identity") == "identity"
               for h in sent)
    assert sent[1]["Accept"] == "application/json"


def test_platform_calls_follow_no_redirect(platform_url: str) -> None:
    answer = _send(http_session.PlatformCalls(trust_env=False), platform_url + "/redirect")
    assert (answer.status, answer.headers["Location"]) == (302, "/ok")
    assert [path for path, _headers, _port in _Platform.seen] == ["/redirect"]


def test_platform_calls_read_at_most_one_byte_past_the_limit_and_drop_that_connection(
        platform_url: str) -> None:
    calls = http_session.PlatformCalls(trust_env=False)
    assert len(_send(calls, platform_url + "/big", max_bytes=10).body) == 11
    assert len(_send(calls, platform_url + "/big", max_bytes=100).body) == 100
    ports = [port for _path, _headers, port in _Platform.seen]
    assert ports[0] != ports[1]  # the cut-off connection was closed, not reused


def test_platform_calls_time_out(platform_url: str) -> None:
    with pytest.raises(urllib3.exceptions.HTTPError):
        _send(http_session.PlatformCalls(trust_env=False), platform_url + "/slow",
              timeout=(3.0, 0.2))


def test_platform_calls_raise_when_nothing_listens() -> None:
    with pytest.raises(urllib3.exceptions.HTTPError):
        _send(http_session.PlatformCalls(trust_env=False), f"http://127.0.0.1:{_closed_port()}/")


def test_platform_calls_with_a_proxy_environment_go_through_requests(
        platform_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a proxy or netrc in the environment, `requests` applies them per URL: the same
    answer, through PLATFORM_HTTP."""
    through: list[str] = []
    original = http_session.PLATFORM_HTTP.request

    def recording(method: str, url: str, **kwargs: object) -> object:
        through.append(url)
        return original(method, url, **kwargs)

    monkeypatch.setattr(http_session.PLATFORM_HTTP, "request", recording)
    calls = http_session.PlatformCalls(trust_env=True)
    answer = _send(calls, platform_url + "/big", max_bytes=10)
    assert (answer.status, len(answer.body)) == (200, 11)
    redirect = _send(calls, platform_url + "/redirect")
    assert redirect.status == 302
    assert through == [platform_url + "/big", platform_url + "/redirect"]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_platform_calls_verify_tls_against_the_given_ca(tls_server: TLSServer) -> None:
    tls_server.routes["/ok"] = Route(body=b'{"ok": true}')
    answer = _send(http_session.PlatformCalls(trust_env=False, ca_certs=str(tls_server.ca_file)),
                   tls_server.url("/ok"))
    assert (answer.status, answer.body) == (200, b'{"ok": true}')


def test_platform_calls_refuse_a_certificate_no_trusted_ca_signed(tls_server: TLSServer) -> None:
    """Without the test CA (the default: the environment's bundle, else certifi's), the
    platform's certificate does not verify and nothing is sent."""
    tls_server.routes["/ok"] = Route()
    with pytest.raises(urllib3.exceptions.SSLError):
        _send(http_session.PlatformCalls(trust_env=False), tls_server.url("/ok"))
    assert tls_server.requests == []

