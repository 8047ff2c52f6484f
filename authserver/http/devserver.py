"""The development server `authserver serve` runs: Werkzeug's, one process, threaded, without
the reloader, and with no version in the `Server` header (production runs gunicorn)."""

from __future__ import annotations

from flask import Flask
from werkzeug.serving import run_simple

from authserver.http.browser import BannerlessRequestHandler


def run_development_server(app: Flask, host: str, port: int) -> None:
    """Serve `app` on host:port until interrupted."""
    run_simple(host, port, app, threaded=True, use_reloader=False,
               request_handler=BannerlessRequestHandler)
