"""Throwaway PostgreSQL and Redis servers for the fault tests (tests/test_faults.py).

Each runs on a free loopback port of its own, in a temporary directory, so a test may stop,
start and pause it at will; the shared services on 5432 and 6379 are never touched.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user (its
directory is chowned to it and every pg_ctl call goes through `runuser -u postgres`). The waits
below are readiness deadlines, never timing assertions.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from authserver.testing.server import free_port

#: How long a service may take to come up or go down (a deadline, not an assertion).
READY_DEADLINE = 30.0


def service_env() -> dict[str, str]:
    """The environment for the throwaway PostgreSQL and Redis: like the shared services, they
    keep the real time when the suite runs under TEST_CLOCK (libfaketime is not preloaded)."""
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


def wait_until(condition: Callable[[], bool], what: str,
               deadline: float = READY_DEADLINE) -> None:
    """Poll `condition` until it holds; fail naming `what` if it never does."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        threading.Event().wait(0.1)
    raise AssertionError(f"{what}: not within {deadline:.0f}s")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise AssertionError("the fault tests need PostgreSQL's server binaries (initdb, "
                             "pg_ctl): apt-get install postgresql")
    return Path(pg_ctl).parent


class PostgresCluster:
    """`initdb` into a temporary directory; `start`/`stop` with pg_ctl (trust auth)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="authserver-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self._as_user, str(self.bin / tool), *args],
                                capture_output=True, text=True, timeout=120, check=False,
                                env=service_env())
        if result.returncode != 0:
            raise AssertionError(f"{tool} failed: {result.stdout}{result.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # Durability off: a throwaway cluster, and the tests stop it with -m fast.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", str(int(READY_DEADLINE)), "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def ensure_running(self) -> None:
        """Start the cluster if a test left it stopped (the next test starts from a good state)."""
        if not self.accepts_queries():
            self.start()

    def accepts_queries(self) -> bool:
        import psycopg

        try:
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                            connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """redis-server without persistence: `stop`/`start` on the same port; `pause` (SIGSTOP, as
    a Redis stuck in a swap storm or behind a partition) or `pause_writes` (CLIENT PAUSE WRITE,
    as during a failover), then `resume`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="authserver-faults-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("the fault tests need redis-server: apt-get install "
                                 "redis-server")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root),
             "--logfile", str(self.root / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=service_env())
        wait_until(self.answers, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=READY_DEADLINE)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections still complete (the kernel's backlog), nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def pause_writes(self, milliseconds: int = 30_000) -> None:
        """CLIENT PAUSE <ms> WRITE: reads are answered, every write waits (a failover)."""
        self._command("CLIENT", "PAUSE", str(milliseconds), "WRITE")

    def resume(self) -> None:
        """End either pause."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self._command("CLIENT", "UNPAUSE")

    def _command(self, *args: str) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.execute_command(*args)
        finally:
            client.close()

    def ensure_running(self) -> None:
        """Resume or restart it if a test left it paused or stopped."""
        if self.process is None:
            self.start()
        else:
            self.resume()

    def answers(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def destroy(self) -> None:
        if self.process is not None:
            self.resume()  # a paused process ignores SIGTERM until it runs again
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
