"""`authserver serve`: the single-process development server."""

from __future__ import annotations

import os

import click

from authserver.cli.common import load_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run a single-process development server (production: gunicorn, see README)."""
    from authserver import create_app

    settings = load_settings({"issuer": f"http://{host}:{port}"} if not _issuer_set() else {})
    app = create_app(settings)
    click.echo(f"authserver on {settings.issuer} (data in {settings.data_dir}/)")
    click.echo(f"  metadata:  {settings.issuer}/.well-known/oauth-authorization-server")
    click.echo("  register a client:")
    click.echo(f"    curl -s -X POST {settings.issuer}/register \\")
    click.echo("      -H 'Content-Type: application/json' \\")
    click.echo("      -d '{\"grant_types\":[\"client_credentials\"]}'")
    from authserver.http.devserver import run_development_server

    run_development_server(app, host, port)


def _issuer_set() -> bool:
    return "AUTHSERVER_ISSUER" in os.environ
