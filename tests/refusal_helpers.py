"""The specific reason of a refusal (docs/operating.md "Audit refusal reasons"): the `reason`
the server logged on its "request rejected" line, and the `reason` of the audit record written
under the same correlation id.

The server must run in this process (tests/stack.py) and the test must have set
`caplog.set_level("INFO", logger=REJECTION_LOGGER)`, as for `assert_rejected_because`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from tests.http_helpers import REJECTION_LOGGER

if TYPE_CHECKING:
    from tests.stack import Stack


def last_rejection(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [r for r in caplog.records
               if r.name == REJECTION_LOGGER and r.getMessage().startswith("request rejected")]
    assert records, "the server logged no refusal"
    return records[-1]


def assert_audited_reason(stack: Stack, caplog: pytest.LogCaptureFixture, reason: str, *,
                          event: str | None = None, audited: bool = True) -> dict[str, Any] | None:
    """The last refusal was for `reason`: logged, and (for a client that authenticated, so
    `audited`) the one audit record of that request has it as its `reason`. Returns the
    record."""
    record = last_rejection(caplog)
    assert getattr(record, "reason", None) == reason, (getattr(record, "reason", None),
                                                       getattr(record, "debug", None))
    cid = getattr(record, "correlation_id", None)
    assert cid, "the rejection was logged without a correlation id"
    records = stack.audit_for(cid)
    if not audited:
        assert records == [], records
        return None
    assert len(records) == 1, records
    assert records[0]["reason"] == reason, records[0]
    if event is not None:
        assert records[0]["event"] == event, records[0]
    return records[0]
