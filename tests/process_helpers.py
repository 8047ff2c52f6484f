"""Stopping a server process a test started (gunicorn, PgBouncer)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, wait up to `timeout` seconds for a graceful exit, then SIGKILL and reap."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
