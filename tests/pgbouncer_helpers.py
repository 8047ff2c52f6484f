"""A PgBouncer of our own in transaction mode, in front of the shared PostgreSQL
(tests/test_pgbouncer.py; bench/bench_exchange.py --database pgbouncer)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.process_helpers import stop_process

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer"
                                          if os.path.exists("/usr/sbin/pgbouncer") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_pgbouncer(databases: str, *, default_pool_size: int = 1,
                      max_client_conn: int = 100) -> Iterator[int]:
    """PgBouncer in transaction mode on a spare loopback port, trust auth for `postgres`,
    with `databases` as its [databases] section, in a temporary directory; yields the port
    once it accepts connections, and stops it afterwards."""
    assert PGBOUNCER is not None, "pgbouncer is not installed"
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    directory.chmod(0o755)  # run as `nobody` when we are root (PgBouncer refuses root)
    port = _free_port()
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(f"""\
[databases]
{databases}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = {default_pool_size}
max_client_conn = {max_client_conn}
ignore_startup_parameters = extra_float_digits,options
""")
    for path in directory.iterdir():
        path.chmod(0o644)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([PGBOUNCER, *user, str(directory / "pgbouncer.ini")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("pgbouncer did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        stop_process(process, timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
