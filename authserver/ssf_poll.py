"""Poll-based SET delivery (RFC 8936; docs/standards.md SSF-12): we ask the transmitter's
poll endpoint for SETs instead of it pushing them.

One round (`poll_once`, `authserver ssf poll <stream>`): POST `{"maxEvents", "returnImmediately",
"ack", "setErrs"}` (RFC 8936 §2.2) to the stream's `endpoint_url`, with the bearer token of
the transmitter's endpoints; the answer is `{"sets": {jti: SET}, "moreAvailable"}` (§2.3).
Each SET goes through exactly the push path (authserver.ssf_streams.receive: verification,
the stream's status, replay, acting, audit). Accepted ones are acknowledged (`ack`, §2.4.2),
refused ones reported in `setErrs` with their RFC 8935 error code and description (§2.4.4),
in the next request: the next round's, or an acknowledgement-only request (`maxEvents: 0`,
`returnImmediately: true`, §2.4.3) that ends the round. While `moreAvailable`, the round
polls again, at most `MAX_REQUESTS` times. A SET we could not judge (keys or store
unavailable) is neither acknowledged nor refused: the transmitter delivers it again.

A poll stream on a disabled stream is not polled (SSF §8.1.2). `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authserver import ssf, ssf_streams
from authserver.errors import TemporarilyUnavailableError
from authserver.identity.federation import IdentityError, parse_unverified
from authserver.models import SsfStream
from authserver.services import Services
from authserver.ssf_streams import StreamError

DEFAULT_MAX_EVENTS = 25
MAX_MAX_EVENTS = 100
#: Polls per round while the transmitter says more are available.
MAX_REQUESTS = 10
_ENVELOPE_BYTES = 64 * 1024


@dataclass
class PollResult:
    """What one round did: counts, the jtis acknowledged and refused, and whether the
    transmitter still has more."""

    requests: int = 0
    received: int = 0
    acked: list[str] = field(default_factory=list)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    unjudged: list[str] = field(default_factory=list)
    more_available: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "received": self.received, "acked": self.acked,
                "set_errors": self.errors, "unjudged": self.unjudged,
                "more_available": self.more_available}


def _sets(answer: Mapping[str, Any]) -> tuple[dict[str, str], bool]:
    sets, more = answer.get("sets"), answer.get("moreAvailable", False)
    if not isinstance(sets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in sets.items()):
        raise StreamError("the poll answer has no sets object of jti: SET (RFC 8936 2.3)")
    if not isinstance(more, bool):
        raise StreamError("moreAvailable is not a boolean (RFC 8936 2.3)")
    return sets, more


def poll_once(services: Services, ref: str, *, token: str | None, now: int,
              correlation_id: str | None, max_events: int = DEFAULT_MAX_EVENTS,
              return_immediately: bool = True) -> PollResult:
    """SSF-12: one round against the stream `ref` (its IdP or stream id)."""
    if not 0 < max_events <= MAX_MAX_EVENTS:
        raise StreamError(f"maxEvents is 1 to {MAX_MAX_EVENTS}")
    with services.db.session() as session:
        row: SsfStream = ssf_streams.find(session, ref)
        idp, url, delivery, status = row.idp, row.poll_url, row.delivery, row.status
    if delivery != "poll" or not url:
        raise StreamError(f"the stream of {idp!r} is delivered by push, not polled")
    if status == "disabled":
        raise StreamError(f"the stream of {idp!r} is disabled (SSF 8.1.2): not polled")
    provider = services.require_federation().get(idp)
    result = PollResult()
    ack: list[str] = []
    errs: dict[str, dict[str, str]] = {}
    wanted = max_events
    while True:
        request: dict[str, Any] = {"maxEvents": wanted, "returnImmediately": return_immediately}
        if wanted == 0:
            request["returnImmediately"] = True
        if ack:
            request["ack"] = ack
        if errs:
            request["setErrs"] = errs
        raw = ssf_streams.call(services, url, request, token=token, ok=(200, 202),
                               max_bytes=_ENVELOPE_BYTES + wanted * ssf.MAX_SET_BYTES * 2)
        result.requests += 1
        result.acked += ack
        result.errors.update(errs)
        ack, errs = [], {}
        if wanted == 0:
            break
        sets, more = _sets(ssf_streams.json_body(raw, "the poll answer"))
        for jti, token_ in sets.items():
            result.received += 1
            outcome = _judge(services, provider, jti, token_, now=now,
                             correlation_id=correlation_id)
            if outcome is None:
                ack.append(jti)
            elif isinstance(outcome, dict):
                errs[jti] = outcome
            else:
                result.unjudged.append(jti)
        result.more_available = more
        if not (ack or errs):
            if not more or result.requests >= MAX_REQUESTS:
                break
        elif not more or result.requests >= MAX_REQUESTS:
            wanted = 0  # acknowledge only, and end the round
    return result


def _judge(services: Services, provider: Any, jti: str, token: str, *, now: int,
           correlation_id: str | None) -> dict[str, str] | str | None:
    """None: accepted (ack); an RFC 8935 error object (setErrs); "unjudged": neither."""
    try:
        claimed = parse_unverified(token)[1].get("jti")
    except IdentityError:
        claimed = None
    if claimed is not None and claimed != jti:
        # RFC 8936 §2.3: each SET is keyed by its jti; checked before anything is acted on.
        return {"err": ssf.INVALID_REQUEST,
                "description": "The SET's jti is not the key it was delivered under"}
    try:
        ssf_streams.receive(services, provider, token, now=now, correlation_id=correlation_id)
    except ssf.SetError as e:
        return e.body()
    except TemporarilyUnavailableError:
        return "unjudged"
    return None
