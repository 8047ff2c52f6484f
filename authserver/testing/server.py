"""Run a WSGI app on a loopback port in a background thread (tests and the demo)."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class ServerThread:
    """`with ServerThread(app) as base_url: ...` or `.start()` / `.stop()`.

    `ssl_context` (or, when None, the class-wide `default_ssl_context` that a process such as
    conformance/hooks/cast.py --tls-cert sets once) serves https instead of http."""

    #: An `ssl.SSLContext` every new server of this process uses unless given its own.
    default_ssl_context: Any = None

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                 ssl_context: Any = None) -> None:
        from authserver.http.browser import BannerlessRequestHandler

        context = ssl_context if ssl_context is not None else ServerThread.default_ssl_context
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=BannerlessRequestHandler,
            ssl_context=context)
        self.port = self._server.server_port
        self.base_url = f"{'https' if context is not None else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> str:
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
