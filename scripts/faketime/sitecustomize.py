"""Loaded only by `TEST_CLOCK=... ./scripts/test` (through PYTHONPATH), never in production.

libfaketime is run with the monotonic clock left real (FAKETIME_DONT_FAKE_MONOTONIC=1): a faked
monotonic clock makes every timed lock wait (threading.Event.wait, queue.get) hang, because
CPython waits on the real clock with sem_clockwait, which libfaketime does not intercept. With
the monotonic clock real, libfaketime 0.9.10 turns CPython 3.11's absolute-deadline
clock_nanosleep in time.sleep into EINVAL; this sleeps with select() instead, which is
relative and unaffected.
"""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
