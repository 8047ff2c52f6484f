"""RFC 9449 §11.1 replay detection across instances (DPOP-12): two gunicorn processes of one
deployment, sharing PostgreSQL and Redis, accept a given proof exactly once between them.

https://www.rfc-editor.org/rfc/rfc9449#section-11.1 — both processes have the same issuer (the
proof's `htu` is the issuer's token endpoint, valid at either), secret key and KEK file.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from authserver.testing.server import free_port
from tests.conftest import REDIS_URL, delete_prefixed, fresh_postgres_database
from tests.dpop_helpers import ProofKey
from tests.process_helpers import stop_process

pytestmark = [pytest.mark.slow, pytest.mark.services]

REPO = Path(__file__).resolve().parent.parent
#: Upper bound for a gunicorn process to migrate, build its services and answer /readyz.
STARTUP_DEADLINE = 60
POLL_INTERVAL = 0.1
REQUEST_TIMEOUT = 30


@dataclass
class Deployment:
    issuer: str
    instances: list[str]  # base URLs of the two processes

    @property
    def htu(self) -> str:
        return self.issuer + "/token"


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if requests.get(base_url + "/readyz", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or the worker is still importing the app
        time.sleep(POLL_INTERVAL)  # polling for startup only; no assertion depends on timing
    raise AssertionError(f"gunicorn at {base_url} not ready:\n{log.read_text()}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("two-processes")
    with fresh_postgres_database() as database_url:
        prefix = f"test:{uuid.uuid4().hex}:"
        ports = [free_port(), free_port()]
        issuer = f"http://127.0.0.1:{ports[0]}"
        shared = {
            "AUTHSERVER_ISSUER": issuer,
            "AUTHSERVER_DATABASE_URL": database_url,
            "AUTHSERVER_REDIS_URL": REDIS_URL,
            "AUTHSERVER_REDIS_KEY_PREFIX": prefix,
            "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(48),
            "AUTHSERVER_KEK_FILE": str(tmp / "kek.key"),
            "AUTHSERVER_LOG_LEVEL": "WARNING",
        }
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for i, port in enumerate(ports):
                data_dir = tmp / f"data{i}"
                log = tmp / f"gunicorn{i}.log"
                env = {**os.environ, **shared, "AUTHSERVER_DATA_DIR": str(data_dir)}
                env.pop("AUTHSERVER_CONFIG", None)
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                         "wsgi:app"],
                        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
                procs.append(proc)
                # One after the other: the first migrates the database and creates the signing key.
                _wait_ready(proc, f"http://127.0.0.1:{port}", log)
            yield Deployment(issuer=issuer, instances=[f"http://127.0.0.1:{p}" for p in ports])
        finally:
            for proc in procs:
                stop_process(proc, timeout=15)
            delete_prefixed(REDIS_URL, prefix)


@pytest.fixture(scope="module")
def registered(deployment: Deployment) -> dict[str, Any]:
    response = requests.post(deployment.instances[0] + "/register", json={
        "grant_types": ["client_credentials"], "scope": "read",
        "token_endpoint_auth_method": "client_secret_post"}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()


def send(base_url: str, registered: dict[str, Any], proof: str) -> requests.Response:
    return requests.post(base_url + "/token", headers={"DPoP": proof}, data={
        "grant_type": "client_credentials", "client_id": registered["client_id"],
        "client_secret": registered["client_secret"], "scope": "read"},
        timeout=REQUEST_TIMEOUT)


def assert_accepted(deployment: Deployment, response: requests.Response, key: ProofKey) -> None:
    """200 and a DPoP-bound token, verified with the keys either instance publishes."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    for base_url in deployment.instances:
        jwks = requests.get(base_url + "/jwks.json", timeout=REQUEST_TIMEOUT).json()
        claims = jwt.decode(body["access_token"], KeySet.import_key_set(jwks),
                            algorithms=["ES256"]).claims
        assert claims["cnf"] == {"jkt": key.jkt}


def assert_replay_refused(response: requests.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_dpop_proof",
                               "error_description": "DPoP proof replayed"}
    assert response.headers["Cache-Control"] == "no-store"


def test_each_instance_accepts_a_fresh_proof(deployment: Deployment,
                                             registered: dict[str, Any]) -> None:
    # Both instances serve the one issuer: a proof for its token endpoint is valid at either.
    key = ProofKey()
    for base_url in deployment.instances:
        assert_accepted(deployment, send(base_url, registered, key.proof(deployment.htu)), key)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["first-then-second",
                                                         "second-then-first"])
def test_proof_replayed_at_the_other_instance_is_invalid_dpop_proof(
        deployment: Deployment, registered: dict[str, Any], order: tuple[int, int]) -> None:
    key = ProofKey()
    proof = key.proof(deployment.htu)
    first, second = (deployment.instances[i] for i in order)
    assert_accepted(deployment, send(first, registered, proof), key)
    assert_replay_refused(send(second, registered, proof))


def test_same_proof_sent_to_both_instances_at_once_is_accepted_once(
        deployment: Deployment, registered: dict[str, Any]) -> None:
    key = ProofKey()
    proof = key.proof(deployment.htu)
    barrier = threading.Barrier(len(deployment.instances))
    responses: dict[str, requests.Response] = {}
    errors: list[BaseException] = []

    def race(base_url: str) -> None:
        try:
            barrier.wait(timeout=REQUEST_TIMEOUT)
            responses[base_url] = send(base_url, registered, proof)
        except BaseException as e:  # re-raised in the test thread below
            errors.append(e)

    threads = [threading.Thread(target=race, args=(url,)) for url in deployment.instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * REQUEST_TIMEOUT)
    assert not errors, errors
    statuses = sorted(r.status_code for r in responses.values())
    assert statuses == [200, 400], [r.text for r in responses.values()]
    for response in responses.values():
        if response.status_code == 200:
            assert_accepted(deployment, response, key)
        else:
            assert_replay_refused(response)
