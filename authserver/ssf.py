"""Shared Signals receiver: an IdP pushes Security Event Tokens and we act on them.

- OpenID Shared Signals Framework 1.0 (SSF): https://openid.net/specs/openid-sharedsignals-framework-1_0.html
  §4.1 (the SET profile: explicit `typ`, no `sub`, no `exp`, `iss`, `aud`), §3 (the
  top-level `sub_id` and subject members), §4.2.1 (one event per SET), §6.1.1 (push
  delivery, the stream's `authorization_header`), §8.1.4.1 (verification events).
- OpenID CAEP 1.0 (session-revoked, token-claims-change, credential-change) and OpenID RISC
  1.0 (account-disabled, account-purged, account-enabled).
- RFC 8417 (SET), RFC 9493 (subject identifiers), RFC 8935 (push delivery: 202 on success;
  400 with `{"err", "description"}` and an RFC 8935 §2.4 error code otherwise).

docs/standards.md SSF-01..08. Only an IdP configured with `ssf_audience` has a receiver,
at `<issuer>/ssf/events/<idp name>`. Each IdP speaks only for its own users. What each event
does (SSF-07):

- CAEP session-revoked: the user's revocation epoch moves to now (every token, assertion and
  standing grant of every agent acting for them dies on its next use, on every instance; the
  same epoch deprovisioning sets, but the user stays active) and their browser sessions end.
- CAEP credential-change: the user's browser sessions end.
- CAEP token-claims-change: the attributes `claim_map` maps (email, name, groups, roles,
  tenant) are updated from the event's `claims`, checked as at sign-in; Cedar sees them at
  the next exchange.
- RISC account-disabled and account-purged: deprovisioning, exactly as
  `authserver users deprovision` does (authserver.deprovisioning). Purged keeps our user row,
  deactivated, as SCIM DELETE does, so the audit trail still names them.
- RISC account-enabled: sign-in is allowed again (as SCIM `active=true`); nothing issued
  before comes back. An account-enabled SET whose `iat` is not after the deprovisioning is
  ignored (a late or reordered SET never undoes a newer disable).
- SSF verification and stream-updated: the registered stream's state (SSF-09..11,
  authserver/ssf_streams.py, which also runs every SET, pushed or polled, through here).

A SET about a subject we cannot map to exactly one of that IdP's users, or of an event type
we do not act on, is accepted (202: it was valid and delivered) and audited, and nothing
changes. Every accepted SET is audited (event `ssf_event`) with the correlation id; every
refused one is counted and logged rate-limited, never audited (no principal was established).

No Flask here: authserver/http/ssf.py is the endpoint; the subject lookup (SSF-08) is
authserver/ssf_subjects.py.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import update

from authserver.audit import AuditRecord
from authserver.config import JWT_LEEWAY
from authserver.deprovisioning import deprovision
from authserver.identity.federation import (
    ALLOWED_ALGORITHMS,
    MAX_TOKEN_LENGTH,
    IdentityError,
    IdPConfig,
    OIDCProvider,
    normalise_typ,
    parse_unverified,
)
from authserver.identity.users import reactivate_user, refresh_attributes, revoke_user_tokens
from authserver.models import Grant, User
from authserver.services import Services
from authserver.sessions import end_all_sessions
from authserver.ssf_subjects import find_user
from authserver.store import Store
from authserver.store import keys as store_keys

#: RFC 8417 §2.3: the media type of a SET, and (without `application/`) its JOSE `typ`.
MEDIA_TYPE = "application/secevent+jwt"
SET_TYP = "secevent+jwt"
#: How old a SET's `iat` may be. SETs have no `exp` (SSF §4.1.7), so this window bounds how
#: long a captured SET could be replayed, and how long its `jti` is remembered. It covers a
#: transmitter's retries for a few minutes after a failed delivery.
SET_MAX_AGE = 600
#: Clock skew tolerated on an `iat` in the future.
SET_LEEWAY = JWT_LEEWAY
MAX_SET_BYTES = MAX_TOKEN_LENGTH
MAX_JTI = 255
#: More event types than this in one SET is not "alternative URIs of one event" (SSF §4.2.1).
MAX_EVENTS = 4

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
CREDENTIAL_CHANGE = CAEP + "credential-change"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
ACCOUNT_DISABLED = RISC + "account-disabled"
ACCOUNT_PURGED = RISC + "account-purged"
ACCOUNT_ENABLED = RISC + "account-enabled"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
#: SSF §8.1.4.1, §8.1.5: events about the stream itself; their subject is the stream id.
STREAM_EVENTS = frozenset({VERIFICATION, STREAM_UPDATED})
#: SSF §8.1.2: a stream's status.
STREAM_STATUSES = frozenset({"enabled", "paused", "disabled"})
#: The event types we act on, and the short name the audit record gives each.
ACTIONS: Mapping[str, str] = {
    SESSION_REVOKED: "session_revoked",
    CREDENTIAL_CHANGE: "credential_change",
    TOKEN_CLAIMS_CHANGE: "token_claims_change",
    ACCOUNT_DISABLED: "account_disabled",
    ACCOUNT_PURGED: "account_purged",
    ACCOUNT_ENABLED: "account_enabled",
    VERIFICATION: "verification",
    STREAM_UPDATED: "stream_updated",
}
#: CAEP 1.0 §2 and §3.3.1 value sets.
_INITIATING_ENTITIES = frozenset({"admin", "user", "policy", "system"})
_CHANGE_TYPES = frozenset({"create", "revoke", "update", "delete"})

#: RFC 8935 §2.4 error codes.
INVALID_REQUEST = "invalid_request"
INVALID_KEY = "invalid_key"
INVALID_ISSUER = "invalid_issuer"
INVALID_AUDIENCE = "invalid_audience"
AUTHENTICATION_FAILED = "authentication_failed"
ACCESS_DENIED = "access_denied"


class SetError(Exception):
    """A SET we refuse: RFC 8935 §2.3, HTTP 400 with `{"err": ..., "description": ...}`.
    The description names the check (it helps the IdP's operator and gives an attacker
    nothing a spec does not)."""

    status = 400

    def __init__(self, err: str, description: str) -> None:
        super().__init__(description)
        self.err, self.description = err, description

    def body(self) -> dict[str, str]:
        return {"err": self.err, "description": self.description}


@dataclass(frozen=True)
class ReceivedSet:
    """A verified SET: who sent it, and the one event we act on (or None)."""

    idp: IdPConfig
    jti: str
    iat: int
    txn: str | None
    #: The event type we act on (a key of ACTIONS), or None when the SET carries none.
    event_type: str | None
    event: Mapping[str, Any]
    #: Every event type URI the SET carries (for the audit record).
    event_types: tuple[str, ...]
    #: The primary subject: top-level `sub_id`, else the event's `subject` (SSF §3.1.1).
    subject: Mapping[str, Any]


# --- authentication and verification ------------------------------------------------------------


def authenticate_transmitter(config: IdPConfig, authorization: str | None) -> None:
    """SSF-02: with `ssf_token_sha256`, the push must carry that bearer token (the stream's
    `authorization_header`, SSF §6.1.1), compared as SHA-256 in constant time."""
    expected = config.ssf_token_sha256
    if not expected:
        return
    scheme, _, token = (authorization or "").partition(" ")
    presented = hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
    if scheme.lower() != "bearer" or not token.strip() or not hmac.compare_digest(
            presented.encode(), expected.encode()):
        raise SetError(AUTHENTICATION_FAILED, "The push did not carry this stream's bearer "
                       "token")


def verify_set(provider: OIDCProvider, token: str, *, now: int) -> ReceivedSet:
    """SSF-03..05: the SET as RFC 8417 and SSF §4.1 define it, from this IdP's transmitter.
    Raises SetError; IdPUnavailableError (503) if the transmitter's keys cannot be fetched."""
    config = provider.config
    try:
        header, unverified = parse_unverified(token)
    except IdentityError as e:
        raise SetError(INVALID_REQUEST, "The body is not a signed JWT") from e
    typ = header.get("typ")
    if not isinstance(typ, str) or normalise_typ(typ) != SET_TYP:
        raise SetError(INVALID_REQUEST, f"typ must be {SET_TYP} (SSF 4.1.1)")
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise SetError(INVALID_REQUEST, "alg is not an accepted asymmetric algorithm")
    if "crit" in header:
        raise SetError(INVALID_REQUEST, "crit header not understood")
    if unverified.get("iss") != config.ssf_transmitter:
        raise SetError(INVALID_ISSUER, "iss is not this stream's transmitter")
    try:
        key = provider.verification_key(header.get("kid"), str(alg), now=now,
                                        jwks_uri=config.ssf_jwks_uri or None)
    except IdentityError as e:
        raise SetError(INVALID_KEY, "No key of the transmitter matches kid and alg") from e
    try:
        claims = dict(jwt.decode(token, key, algorithms=[str(alg)]).claims)
    except (JoseError, ValueError) as e:
        raise SetError(INVALID_KEY, "The signature does not verify") from e
    return _check_claims(config, claims, now=now)


def _check_claims(config: IdPConfig, claims: Mapping[str, Any], *, now: int) -> ReceivedSet:
    if claims.get("iss") != config.ssf_transmitter:
        raise SetError(INVALID_ISSUER, "iss is not this stream's transmitter")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences) \
            or config.ssf_audience not in audiences:
        raise SetError(INVALID_AUDIENCE, "aud does not name this receiver")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise SetError(INVALID_REQUEST, "iat is required")
    if iat > now + SET_LEEWAY or iat < now - SET_MAX_AGE:
        raise SetError(INVALID_REQUEST, f"iat is outside the accepted window ({SET_MAX_AGE} s)")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI:
        raise SetError(INVALID_REQUEST, "jti is required")
    for forbidden in ("sub", "exp"):
        # SSF §4.1.2, §4.1.3, §4.1.7: these would let a SET pass for another kind of JWT.
        if forbidden in claims:
            raise SetError(INVALID_REQUEST, f"a SET must not carry {forbidden} (SSF 4.1)")
    txn = claims.get("txn")
    if txn is not None and not isinstance(txn, str):
        raise SetError(INVALID_REQUEST, "txn must be a string")
    event_type, event, types = _the_event(claims.get("events"))
    subject = claims.get("sub_id")
    if subject is None and event_type not in STREAM_EVENTS:
        subject = event.get("subject")  # SSF §3.1.1: existing CAEP/RISC events may
    if not isinstance(subject, dict) or not isinstance(subject.get("format"), str):
        raise SetError(INVALID_REQUEST, "sub_id is required: a subject identifier with a "
                       "format (SSF 3.1, RFC 9493)")
    if event_type in STREAM_EVENTS and (subject.get("format") != "opaque"
                                        or not isinstance(subject.get("id"), str)):
        raise SetError(INVALID_REQUEST, "a stream event's sub_id is opaque, the stream id "
                       "(SSF 8.1.4.1, 8.1.5)")
    return ReceivedSet(idp=config, jti=jti, iat=int(iat), txn=txn, event_type=event_type,
                       event=event, event_types=types, subject=subject)


def _the_event(events: Any) -> tuple[str | None, Mapping[str, Any], tuple[str, ...]]:
    """SSF §4.2.1: `events` holds one event (several URIs only as aliases of one type)."""
    if not isinstance(events, dict) or not events or len(events) > MAX_EVENTS or not all(
            isinstance(v, dict) for v in events.values()):
        raise SetError(INVALID_REQUEST, "events must be an object of one event (SSF 4.2.1)")
    types = tuple(sorted(events))
    known = [t for t in types if t in ACTIONS]
    if len(known) > 1:
        raise SetError(INVALID_REQUEST, "events holds more than one event (SSF 4.2.1)")
    if not known:
        return None, {}, types
    event_type = known[0]
    event: Mapping[str, Any] = events[event_type]
    _check_event(event_type, event)
    return event_type, event, types


def _check_event(event_type: str, event: Mapping[str, Any]) -> None:
    """The event payload as CAEP 1.0 §2-3 and RISC 1.0 §2 define it (RFC 8935 §2.4:
    otherwise invalid_request). Members we do not use are not checked (SSF §4.2.3)."""
    def fail(what: str) -> SetError:
        return SetError(INVALID_REQUEST, f"{what} ({event_type.rsplit('/', 1)[-1]})")

    timestamp = event.get("event_timestamp")
    if timestamp is not None and (not isinstance(timestamp, int | float)
                                  or isinstance(timestamp, bool)):
        raise fail("event_timestamp must be a number")
    entity = event.get("initiating_entity")
    if entity is not None and entity not in _INITIATING_ENTITIES:
        raise fail("initiating_entity must be admin, user, policy or system")
    for name in ("reason_admin", "reason_user"):
        if name in event and not isinstance(event[name], dict):
            raise fail(f"{name} must be an object")
    if event_type == CREDENTIAL_CHANGE:
        if not isinstance(event.get("credential_type"), str):
            raise fail("credential_type is required")
        if event.get("change_type") not in _CHANGE_TYPES:
            raise fail("change_type must be create, revoke, update or delete")
    elif event_type == TOKEN_CLAIMS_CHANGE and (not isinstance(event.get("claims"), dict)
                                                or not event["claims"]):
        raise fail("claims is required (an object)")
    if event_type == STREAM_UPDATED and event.get("status") not in STREAM_STATUSES:
        raise fail("status must be enabled, paused or disabled")
    for name, event_of in (("reason", ACCOUNT_DISABLED), ("state", VERIFICATION),
                           ("reason", STREAM_UPDATED)):
        if event_type == event_of and name in event and not isinstance(event[name], str):
            raise fail(f"{name} must be a string")


# --- replay ------------------------------------------------------------------------------------


def spend(store: Store, received: ReceivedSet, *, now: int) -> str:
    """SSF-06: accept a SET once (RFC 8417 §2.2: `iss` + `jti`), remembered in the shared
    store for as long as its `iat` is in the window. Returns the store key (the caller
    releases it if acting on the SET fails, so the transmitter's retry is not a replay).
    Raises SetError for a SET already received; store failures propagate (503)."""
    key = store_keys.ssf_set(received.idp.ssf_transmitter, received.jti)
    ttl = max(received.iat + SET_MAX_AGE + SET_LEEWAY - now, 1)
    if not store.add_if_absent(key, ttl):
        raise SetError(INVALID_REQUEST, "This SET (iss, jti) was already received")
    return key


# --- acting on it ------------------------------------------------------------------------------


#: Acts on a verification or stream-updated event (authserver.ssf_streams.on_stream_event):
#: fills the detail, returns the audit reason (None: done).
StreamHook = Callable[[Services, ReceivedSet, dict[str, Any], int, "str | None"],
                      "str | None"]


def handle(services: Services, received: ReceivedSet, *, now: int,
           correlation_id: str | None, on_stream_event: StreamHook | None = None
           ) -> dict[str, Any]:
    """SSF-07: act on a verified, spent SET, then append its audit record. Returns the
    record's detail. Raises SetError for a claim we cannot apply (token-claims-change).
    Stream events go to `on_stream_event` (SSF-09/10); without it they change nothing."""
    s = services
    config = received.idp
    detail: dict[str, Any] = {"idp": config.name, "set_jti": received.jti,
                              "event_types": list(received.event_types)}
    if received.txn is not None:
        detail["txn"] = received.txn
    action = ACTIONS.get(received.event_type or "")
    outcome, reason, user_id = "allowed", None, None
    if action is None:
        reason = "unsupported_event"
    elif action in ("verification", "stream_updated"):
        detail["stream_id"] = received.subject.get("id")
        if action == "verification":
            detail["state_present"] = "state" in received.event
        if on_stream_event is not None:
            reason = on_stream_event(s, received, detail, now, correlation_id)
    else:
        with s.db.session() as session:
            user_id, why = find_user(session, config, received.subject)
        if user_id is None:
            reason = why
        else:
            outcome, reason = _act(s, config, action, received, user_id, detail, now=now,
                                   correlation_id=correlation_id)
    if action is not None:
        detail["action"] = action
    with s.db.session() as session:
        s.audit.append(session, AuditRecord(
            event="ssf_event", outcome=outcome, reason=reason,
            correlation_id=correlation_id, user_id=user_id, detail=detail), now=now)
    return detail


def _act(s: Services, config: IdPConfig, action: str, received: ReceivedSet, user_id: str,
         detail: dict[str, Any], *, now: int, correlation_id: str | None
         ) -> tuple[str, str | None]:
    """(outcome, reason) of one event for one user."""
    if action == "session_revoked":
        with s.db.session() as session:
            revoke_user_tokens(session, s.store, user_id, now=now)
            revoked = session.execute(update(Grant).where(
                Grant.user_id == user_id, Grant.revoked_at.is_(None)).values(revoked_at=now))
            detail["grants_revoked"] = int(getattr(revoked, "rowcount", 0) or 0)
        end_all_sessions(s.store, user_id)
        return "revoked", None
    if action == "credential_change":
        end_all_sessions(s.store, user_id)
        return "revoked", None
    if action == "token_claims_change":
        try:
            with s.db.session() as session:
                detail["attributes"] = refresh_attributes(session, config, user_id,
                                                          received.event["claims"])
        except IdentityError as e:
            raise SetError(INVALID_REQUEST, "A changed claim is not acceptable (the checks "
                           "of sign-in, claim_map)") from e
        return "allowed", None
    with s.db.session() as session:
        user = session.get(User, user_id)
        active = bool(user is not None and user.active)
        valid_after = int(user.tokens_valid_after or 0) if user is not None else 0
    if action in ("account_disabled", "account_purged"):
        if not active:
            return "allowed", "already_deprovisioned"
        deprovision(s, user_id, now=now, correlation_id=correlation_id)
        return "revoked", None
    # account_enabled
    if active:
        return "allowed", "already_active"
    if received.iat <= valid_after:
        return "allowed", "older_than_deprovisioning"
    with s.db.session() as session:
        reactivate_user(session, user_id)
    return "allowed", None
