"""gunicorn's C request parser (gunicorn_h1c, issue 18) refuses what its Python parser refuses.

`gunicorn_h1c` is a dependency: gunicorn's default `http_parser = "auto"` then parses requests
with picohttpparser instead of Python (about 110 µs of worker CPU less per request,
bench/README.md). A parser is where request smuggling lives, so each hostile framing below is
sent over a raw socket to gunicorn (gunicorn.conf.py, one worker) under both parsers, and both
must refuse it with the same class of answer; a plain request must pass under both.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authserver.testing.server import free_port
from tests.test_gunicorn_smoke import REPO_ROOT, _wait_until_healthy, stop

#: name -> (raw request, the status line's code)
CASES: dict[str, tuple[bytes, str]] = {
    "content-length and transfer-encoding": (
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
    "two content-lengths": (
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"
        b"abcde", "400"),
    "transfer-encoding identity": (
        b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", "400"),
    "space before the colon": (
        b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "400"),
    "obsolete line folding": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "400"),
    "bare LF line ends": (b"GET /healthz HTTP/1.1\nHost: x\n\n", "400"),
    "NUL in a header value": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "400"),
    "negative content-length": (
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400"),
    "signed content-length": (
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", "400"),
    "invalid method token": (b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    "HTTP/2.0 on an HTTP/1 socket": (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", "400"),
    "space in a header name": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", "400"),
    "header over the size limit": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", "431"),
    "a plain request": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
}


@pytest.fixture(scope="module", params=["fast", "python"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp(f"parser-{request.param}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(AUTHSERVER_DATA_DIR=str(tmp / "data"),
               AUTHSERVER_ISSUER=f"http://127.0.0.1:{port}")
    log_path = tmp / "gunicorn.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py", "-w", "1",
         "-b", f"127.0.0.1:{port}", "--http-parser", request.param, "wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        yield port
    finally:
        stop(proc)
        log.close()


def status_code(port: int, raw: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    return status_line.split(b" ")[1].decode()


def test_the_c_parser_is_installed() -> None:
    """The dependency is there, so "auto" picks it (a missing wheel would fall back quietly)."""
    import gunicorn_h1c  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_framing_is_refused_by_either_parser(server: int, case: str) -> None:
    raw, expected = CASES[case]
    assert status_code(server, raw) == expected
