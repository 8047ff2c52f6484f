"""Smoke test of the production entry point: real gunicorn, two workers, real HTTP.

Starts `gunicorn -w 2 wsgi:app` from the repository root on a free loopback port, waits
(bounded) for /healthz, then registers a client, gets a client_credentials token and
introspects it. Requests land on either worker, so this also shows the workers agree on
keys and data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from authserver.testing.server import free_port
from tests.process_helpers import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE_POLLS = 300  # x 0.1 s: 30 s to import, migrate and fork
REQUESTS = 10


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(AUTHSERVER_DATA_DIR=str(tmp_path / "data"), AUTHSERVER_ISSUER=issuer)
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [str(gunicorn_bin), "-w", "2", "-b", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_healthy(proc, issuer, tmp_path / "gunicorn.log")
        yield issuer
    finally:
        stop_process(proc)
        log.close()


def _wait_until_healthy(proc: subprocess.Popen[Any], issuer: str, log: Path) -> None:
    for _ in range(STARTUP_DEADLINE_POLLS):
        try:
            if requests.get(f"{issuer}/healthz", timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or listening while the workers still import
        try:  # the pause between polls doubles as "did gunicorn die?"
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    pytest.fail(f"gunicorn did not become healthy:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_gunicorn_serves_registration_tokens_and_introspection(gunicorn: str) -> None:
    issuer = gunicorn
    metadata = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=5)
    assert metadata.status_code == 200
    assert metadata.json()["issuer"] == issuer
    # One Server header, and no version in it (gunicorn names itself only; the app sends none).
    page = requests.get(f"{issuer}/login", timeout=5)
    assert page.raw.headers.getlist("Server") == ["gunicorn"]
    assert page.headers["X-Frame-Options"] == "DENY"

    registered = requests.post(f"{issuer}/register", timeout=5,
                               json={"grant_types": ["client_credentials"]})
    assert registered.status_code == 201, registered.text
    auth = (registered.json()["client_id"], registered.json()["client_secret"])

    # Several rounds, so that both workers issue and both introspect.
    for _ in range(REQUESTS):
        token = requests.post(f"{issuer}/token", auth=auth, timeout=5,
                              data={"grant_type": "client_credentials", "scope": "read"})
        assert token.status_code == 200, token.text
        assert token.headers["Cache-Control"] == "no-store"
        info = requests.post(f"{issuer}/introspect", auth=auth, timeout=5,
                             data={"token": token.json()["access_token"]})
        assert info.status_code == 200
        assert info.json()["active"] is True
        assert info.json()["client_id"] == auth[0]

    denied = requests.post(f"{issuer}/token", auth=(auth[0], "wrong"), timeout=5,
                           data={"grant_type": "client_credentials"})
    assert denied.status_code == 401
    assert denied.json()["error"] == "invalid_client"
    assert denied.headers["WWW-Authenticate"]
