"""The receiver's side of Shared Signals stream management (OpenID SSF 1.0 §7, §8.1;
docs/standards.md SSF-09..12).

The transmitter owns a stream; the receiver keeps what it needs of it (authserver.models.ssf,
one stream per IdP with `ssf_audience`):

- **Registration** (`authserver ssf streams add`): the transmitter's metadata is read from
  its well-known document (SSF §7.1, §7.2: `/.well-known/ssf-configuration`, inserted before
  the issuer's path), whose `issuer` must be the IdP's `ssf_issuer`. Then either a stream is
  created at its `configuration_endpoint` (SSF §8.1.1.1: `delivery` with the method and, for
  push, our `endpoint_url`; `events_requested`), or an existing one (made in the IdP's
  console) is read by `stream_id` (§8.1.1.2). The stream's `iss` must be the transmitter and
  its `aud` must name `ssf_audience`; a poll stream must say where to poll (`endpoint_url`).
- **Status** (§8.1.2): `enabled`, `paused` or `disabled`, as the transmitter last told us: its
  status endpoint (`authserver ssf streams status --refresh`) or a stream-updated event
  (§8.1.5). A later event does not undo a newer status (an `iat` before the recorded time is
  ignored). On a **disabled** stream every SET but the stream events is refused as
  `access_denied` (the transmitter is not to transmit, §8.1.2; acting on it would act on a
  stream we were told is off), before it is spent, so it can be sent again once enabled.
  A **paused** stream's events are accepted and acted on: a transmitter releases held events
  when it resumes, perhaps before the stream-updated event, and dropping a revocation fails
  open.
- **Verification** (§8.1.4): `authserver ssf streams verify` sends `{"stream_id", "state"}` to
  the verification endpoint with a fresh random `state`, kept only as its SHA-256 for
  `VERIFICATION_TTL`; the verification event that carries it (compared in constant time)
  marks the stream verified. One with another or no state, or after the window, is
  accepted and audited and verifies nothing.

Every change is audited (`ssf_stream`, or the `ssf_event` of the SET that made it) with the
correlation id. Bearer tokens for the transmitter's endpoints are passed in, never stored.
No Flask here: the push endpoint is authserver/http/ssf.py, the commands authserver/ssf_cli.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from authserver import ssf
from authserver.audit import AuditRecord
from authserver.encoding import loads_strict_json
from authserver.identity.federation import IdPConfig, OIDCProvider
from authserver.models import SsfStream
from authserver.outbound import OutboundError
from authserver.services import Services

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
#: Our short names of the two delivery methods (SSF §6.1).
DELIVERY_METHODS: Mapping[str, str] = {"push": PUSH, "poll": POLL}
WELL_KNOWN = "/.well-known/ssf-configuration"
#: How long a verification `state` we sent is waited for.
VERIFICATION_TTL = 600
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_EVENTS_REQUESTED = 50
MAX_REASON = 255


class StreamError(Exception):
    """A stream operation that cannot be done; the message is for the operator."""


# --- the transmitter's endpoints ---------------------------------------------------------------


def well_known_url(issuer: str) -> str:
    """SSF §7.2: the well-known path goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + parts.path.rstrip("/"), "", ""))


def json_body(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = loads_strict_json(data)
    except ValueError as e:
        raise StreamError(f"{what} is not a JSON object") from e
    if not isinstance(value, dict):
        raise StreamError(f"{what} is not a JSON object")
    return value


def call(services: Services, url: str, body: Mapping[str, Any] | None, *, token: str | None,
         ok: tuple[int, ...] = (200,), max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """GET `url` (no body) or POST `body` as JSON, through the one outbound fetcher (OUT-01);
    the response body. Raises StreamError naming the reason."""
    outbound = services.outbound
    authorization = f"Bearer {token}" if token else None
    try:
        if body is None:
            return bytes(outbound.get(url, max_bytes=max_bytes,
                                      authorization=authorization).body)
        result = outbound.post(url, json.dumps(body).encode(), max_bytes=max_bytes,
                               content_type="application/json", ok=ok,
                               authorization=authorization)
        return bytes(result.body)
    except OutboundError as e:
        raise StreamError(f"{url}: {e.reason}") from e


def discover(services: Services, config: IdPConfig) -> dict[str, Any]:
    """SSF §7.1 transmitter metadata, whose `issuer` must be this IdP's transmitter."""
    url = well_known_url(config.ssf_transmitter)
    metadata = json_body(call(services, url, None, token=None), "the SSF configuration")
    if metadata.get("issuer") != config.ssf_transmitter:
        raise StreamError(f"{url}: issuer is not {config.ssf_transmitter} (SSF 7.2)")
    for name in ("configuration_endpoint", "status_endpoint", "verification_endpoint"):
        if name in metadata and not isinstance(metadata[name], str):
            raise StreamError(f"{url}: {name} is not a string")
    return metadata


def _receiver_config(services: Services, idp: str) -> IdPConfig:
    federation = services.federation
    try:
        provider: OIDCProvider | None = federation.get(idp) if federation is not None else None
    except KeyError:
        provider = None
    if provider is None or not provider.config.ssf_audience:
        raise StreamError(f"no Shared Signals receiver for {idp!r} (the IdP needs "
                          "ssf_audience)")
    return provider.config


def _with_query(url: str, **params: str) -> str:
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return url + ("&" if urlsplit(url).query else "?") + query


# --- registration ------------------------------------------------------------------------------


def add(services: Services, idp: str, *, delivery: str, events: Sequence[str],
        stream_id: str | None, token: str | None, token_env: str | None, receiver_url: str,
        now: int, correlation_id: str | None) -> dict[str, Any]:
    """SSF-09: register the IdP's stream (created now, or the existing `stream_id`)."""
    if delivery not in DELIVERY_METHODS:
        raise StreamError("delivery is push or poll")
    if len(events) > MAX_EVENTS_REQUESTED or not all(isinstance(e, str) and e for e in events):
        raise StreamError(f"at most {MAX_EVENTS_REQUESTED} event type URIs")
    config = _receiver_config(services, idp)
    with services.db.session() as session:
        if session.get(SsfStream, idp) is not None:
            raise StreamError(f"{idp!r} already has a stream (one per IdP)")
    metadata = discover(services, config)
    endpoint = metadata.get("configuration_endpoint")
    if not isinstance(endpoint, str):
        raise StreamError("the transmitter publishes no configuration_endpoint")
    if stream_id is None:
        requested: dict[str, Any] = {"delivery": {"method": DELIVERY_METHODS[delivery]},
                                     "events_requested": list(events),
                                     "description": f"authserver ({idp})"}
        if delivery == "push":
            requested["delivery"]["endpoint_url"] = receiver_url
        raw = call(services, endpoint, requested, token=token, ok=(200, 201))
    else:
        raw = call(services, _with_query(endpoint, stream_id=stream_id), None, token=token)
    stream = _check_stream(config, json_body(raw, "the stream configuration"),
                           delivery=delivery, stream_id=stream_id)
    row = SsfStream(
        idp=idp, stream_id=stream["stream_id"], delivery=delivery,
        poll_url=stream["delivery"].get("endpoint_url") if delivery == "poll" else None,
        configuration_endpoint=endpoint, status_endpoint=metadata.get("status_endpoint"),
        verification_endpoint=metadata.get("verification_endpoint"), token_env=token_env,
        events_requested=list(stream.get("events_requested") or events),
        events_delivered=list(stream.get("events_delivered") or []),
        status="enabled", status_reason=None, status_at=now, created_at=now)
    with services.db.session() as session:
        session.add(row)
        session.flush()
        result = as_dict(row)
        _audit(services, session, "added", row, now=now, correlation_id=correlation_id)
    return result


def _check_stream(config: IdPConfig, stream: Mapping[str, Any], *, delivery: str,
                  stream_id: str | None) -> dict[str, Any]:
    """The §8.1.1 stream configuration the transmitter answered, as we can use it."""
    sid = stream.get("stream_id")
    if not isinstance(sid, str) or not sid or len(sid) > 255:
        raise StreamError("the stream has no stream_id")
    if stream_id is not None and sid != stream_id:
        raise StreamError("the transmitter answered for another stream_id")
    if stream.get("iss") != config.ssf_transmitter:
        raise StreamError(f"the stream's iss is not {config.ssf_transmitter}")
    aud = stream.get("aud")
    if config.ssf_audience not in ([aud] if isinstance(aud, str) else aud or []):
        raise StreamError(f"the stream's aud does not name {config.ssf_audience}")
    method = stream.get("delivery")
    if not isinstance(method, dict) or method.get("method") != DELIVERY_METHODS[delivery]:
        raise StreamError(f"the stream's delivery method is not {DELIVERY_METHODS[delivery]}")
    if delivery == "poll" and not isinstance(method.get("endpoint_url"), str):
        raise StreamError("a poll stream needs the transmitter's endpoint_url")
    for name in ("events_requested", "events_delivered"):
        value = stream.get(name)
        if value is not None and (not isinstance(value, list) or not all(
                isinstance(e, str) for e in value)):
            raise StreamError(f"the stream's {name} is not a list of URIs")
    return dict(stream)


def find(session: Session, ref: str) -> SsfStream:
    """The stream named by its IdP or its `stream_id`; LookupError if none."""
    row = session.scalars(select(SsfStream).where(
        or_(SsfStream.idp == ref, SsfStream.stream_id == ref))).first()
    if row is None:
        raise LookupError(ref)
    return row


def as_dict(row: SsfStream) -> dict[str, Any]:
    return {"idp": row.idp, "stream_id": row.stream_id, "delivery": row.delivery,
            "poll_url": row.poll_url, "status": row.status, "status_reason": row.status_reason,
            "status_at": row.status_at, "events_requested": list(row.events_requested),
            "events_delivered": list(row.events_delivered), "verified_at": row.verified_at,
            "verification_pending": row.verification_state_sha256 is not None,
            "token_env": row.token_env, "created_at": row.created_at}


def _audit(services: Services, session: Session, action: str, row: SsfStream, *, now: int,
           correlation_id: str | None, reason: str | None = None,
           outcome: str = "allowed", **detail: Any) -> None:
    services.audit.append(session, AuditRecord(
        event="ssf_stream", outcome=outcome, reason=reason, correlation_id=correlation_id,
        detail={"idp": row.idp, "stream_id": row.stream_id, "action": action, **detail}),
        now=now)


# --- verification and status -------------------------------------------------------------------


def _endpoint(services: Services, ref: str, name: str) -> tuple[str, str]:
    """(the stream's `name` endpoint, its stream id); StreamError if none was published."""
    with services.db.session() as session:
        row = find(session, ref)
        endpoint, stream_id = getattr(row, name), row.stream_id
    if not endpoint:
        raise StreamError(f"the transmitter publishes no {name}")
    return str(endpoint), stream_id


def request_verification(services: Services, ref: str, *, token: str | None, now: int,
                         correlation_id: str | None) -> dict[str, Any]:
    """SSF-11: ask the transmitter for a verification event carrying a fresh `state`."""
    endpoint, stream_id = _endpoint(services, ref, "verification_endpoint")
    state = secrets.token_urlsafe(24)
    with services.db.session() as session:
        row = find(session, ref)
        row.verification_state_sha256 = _state_hash(state)
        row.verification_requested_at = now
    # The state is remembered before the request: a push transmitter may deliver the event
    # before it answers.
    call(services, endpoint, {"stream_id": stream_id, "state": state}, token=token,
         ok=(200, 202, 204))
    with services.db.session() as session:
        row = find(session, ref)
        _audit(services, session, "verification_requested", row, now=now,
               correlation_id=correlation_id)
        return as_dict(row)


def refresh_status(services: Services, ref: str, *, token: str | None, now: int,
                   correlation_id: str | None) -> dict[str, Any]:
    """SSF-10: read the stream's status from the transmitter's status endpoint (§8.1.2.1)."""
    endpoint, stream_id = _endpoint(services, ref, "status_endpoint")
    answer = json_body(call(services, _with_query(endpoint, stream_id=stream_id), None,
                            token=token), "the stream status")
    status, reason = answer.get("status"), answer.get("reason")
    if status not in ssf.STREAM_STATUSES or (reason is not None and not isinstance(reason, str)):
        raise StreamError("the status is not enabled, paused or disabled (SSF 8.1.2)")
    with services.db.session() as session:
        row = find(session, ref)
        _set_status(services, session, row, str(status), reason, now=now, at=now,
                    correlation_id=correlation_id, source="status_endpoint")
        return as_dict(row)


def _set_status(services: Services, session: Session, row: SsfStream, status: str,
                reason: str | None, *, now: int, at: int, correlation_id: str | None,
                source: str) -> bool:
    """Record a status the transmitter reported at `at`; False if it is older than ours."""
    if at < row.status_at:
        return False
    before = row.status
    row.status, row.status_reason, row.status_at = status, (reason or None), at
    if row.status_reason is not None:
        row.status_reason = row.status_reason[:MAX_REASON]
    if before != status:
        _audit(services, session, "status_changed", row, now=now,
               correlation_id=correlation_id, source=source, previous=before, status=status)
    return True


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


# --- what the receiver does with each SET ------------------------------------------------------


def admit(services: Services, received: ssf.ReceivedSet) -> None:
    """SSF-10: refuse a SET on a disabled stream (`access_denied`), stream events aside."""
    if received.event_type in ssf.STREAM_EVENTS:
        return
    with services.db.session() as session:
        row = session.get(SsfStream, received.idp.name)
        disabled = row is not None and row.status == "disabled"
    if disabled:
        raise ssf.SetError(ssf.ACCESS_DENIED, "This stream is disabled; the transmitter must "
                           "not transmit on it (SSF 8.1.2)")


def on_stream_event(services: Services, received: ssf.ReceivedSet, detail: dict[str, Any],
                    now: int, correlation_id: str | None) -> str | None:
    """SSF-10/11: a verification or stream-updated event for the IdP's registered stream.
    Returns the audit reason (None: the stream's state changed as the event says)."""
    with services.db.session() as session:
        row = session.get(SsfStream, received.idp.name)
        if row is None:
            return "no_registered_stream"
        if received.subject.get("id") != row.stream_id:
            return "unknown_stream"
        if received.event_type == ssf.STREAM_UPDATED:
            status = str(received.event["status"])
            detail["status"] = status
            changed = _set_status(services, session, row, status,
                                  received.event.get("reason"), now=now, at=received.iat,
                                  correlation_id=correlation_id, source="stream_updated")
            return None if changed else "older_than_status"
        state = received.event.get("state")
        pending, asked_at = row.verification_state_sha256, row.verification_requested_at or 0
        if pending is None:
            return "no_verification_pending"
        if not isinstance(state, str) or not hmac.compare_digest(
                _state_hash(state).encode(), pending.encode()):
            return "state_mismatch"
        if now > asked_at + VERIFICATION_TTL:
            return "verification_expired"
        row.verification_state_sha256, row.verification_requested_at = None, None
        row.verified_at = now
        detail["verified"] = True
        return None


def receive(services: Services, provider: OIDCProvider, token: str, *, now: int,
            correlation_id: str | None) -> ssf.ReceivedSet:
    """One SET, however it was delivered (push or poll): verified (SSF-03..05), admitted by
    the stream's status, spent once (SSF-06), acted on (SSF-07), audited. Raises
    ssf.SetError for a SET refused; other errors (503s) leave it unspent."""
    received = ssf.verify_set(provider, token, now=now)
    admit(services, received)
    key = ssf.spend(services.store, received, now=now)
    try:
        ssf.handle(services, received, now=now, correlation_id=correlation_id,
                   on_stream_event=on_stream_event)
    except BaseException:
        # Not acted on: the transmitter's retry must not be taken for a replay.
        services.store.delete(key)
        raise
    return received
