"""The credential-blind path (docs/standards.md A5): the agent calls
`<issuer>/gateway/<platform>/<path>` with its capability token and a DPoP proof (`ath`); the
broker makes the call with the user's own platform token, which the agent never sees.

Checks, in order: the capability token and its proof (RFC 9449 §7, authserver.resource), that
the token is still live (user, jti, connection epoch), that the request fits the intent (the
method is one of the action's own, `intent.ACTION_METHODS`: read GET/HEAD, create POST,
update and bulk_update PATCH/PUT, and only delete and bulk_delete DELETE; the platform's route
may narrow that; a GET/HEAD carries no body; the path must be exactly what the intent's
resource maps to), the per-token write budget (`count`). Then the call; after a 401 one forced
refresh, and the call is resent only if its method is idempotent (RFC 9110 §9.2.2: a POST or
PATCH the platform may have acted on is never sent twice); a size limit, and a response with
credentials and hop-by-hop headers stripped and downstream error text replaced by a safe
summary. Every call is audited with the request's correlation id, the method asked for and the
method forwarded (none when refused), and how many times it was sent.

One session per call, in two units of work: the reads (the token is live, the user's
connection) end before the platform is called, so a burst of slow calls does not hold the pool
the refresher needs; then the call's audit record. An allowed call's record joins the request's
transaction, which the HTTP handler commits before the response leaves (a failed commit: 503,
and the platform's answer is not relayed); a refused call's record goes through
`AuditLog.append_refusal`. A refresh of the user's platform token is a unit of its own
(authserver.broker.refresh: committed under the connection lock before the new token is used).

Round trips (issue 18): on PostgreSQL the read unit runs in autocommit (`_reads_in_autocommit`:
no BEGIN and no ROLLBACK; at READ COMMITTED each statement of a transaction sees its own
snapshot anyway, so the checks read exactly what they read in one), and everything the
liveness checks need comes in one statement (`_load_rows`: whether the jti is revoked, the
latest withdrawal of its agents, the user, the client, and the connection), which
`check_token_live` is handed instead of reading it again. Its checks, their order and their
errors are unchanged.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import requests
import urllib3
from sqlalchemy import bindparam
from sqlalchemy.orm import Session

from authserver.audit import AuditRecord, refused_unauthenticated
from authserver.broker.http_session import PLATFORM_CALLS, PlatformAnswer
from authserver.broker.profiles import Platform, api_request_headers
from authserver.broker.records import connect_uri, connection_sites, select_connection
from authserver.broker.refresh import force_refresh, get_access_token
from authserver.broker.revoke import epoch_value
from authserver.dpop import DPOP_SIGNING_ALGS
from authserver.errors import (
    InvalidTokenError,
    OAuthError,
    ResourceForbiddenError,
    TemporarilyUnavailableError,
)
from authserver.gateway_routes import (
    allowed_methods,
    path_matches_intent,
    resolve_path,
    resource_site,
)
from authserver.intent import ACTION_METHODS, INTENT_TYPE, READ
from authserver.models import Client, User
from authserver.models.broker import Connection
from authserver.resource import ResourceVerifier, protected_resource_metadata_url
from authserver.resource import protected_resource_metadata as _prm_document
from authserver.services import Services
from authserver.store import keys as store_keys
from authserver.tokens import (
    ACCEPTED_AT_TYPS,
    LivenessRead,
    TokenNotLiveError,
    check_token_live,
    liveness_params,
    liveness_read,
    liveness_select,
)

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD"})
#: RFC 9110 §9.2.2: sending these twice has the effect of sending them once, so after a 401
#: and a refresh the call may be resent. POST and PATCH are never resent: the platform may have
#: acted on the first one although it answered 401.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
GATEWAY_TIMEOUT = (3.05, 15.0)  # (connect, read) seconds
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
MAX_REQUEST_BYTES = 256 * 1024
#: Response headers worth passing on; everything else (Set-Cookie, auth, hop-by-hop) is dropped.
PASSED_RESPONSE_HEADERS = ("Content-Type", "ETag", "Last-Modified")
#: DPOP-40: every challenge the gateway sends names the proof algorithms it accepts (the
#: verifier's default list, which is what it is built with below).
CHALLENGE_ALGS = " ".join(DPOP_SIGNING_ALGS)


#: The process's pool of kept-alive connections to platforms (authserver.broker.http_session:
#: no redirects, no retries, no cookies).
_HTTP = PLATFORM_CALLS


@dataclass
class GatewayRequest:
    platform: str
    path: str  # after /gateway/<platform>/, with the query string, as sent
    method: str
    url: str  # external URL without query (DPoP htu)
    authorization: list[str]
    dpop: list[str]
    body: bytes = b""
    content_type: str | None = None
    correlation_id: str | None = None
    client_ip: str | None = None


@dataclass
class GatewayResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Call:
    """What the audit record says about one call."""

    claims: dict[str, Any] = field(default_factory=dict)
    intent: dict[str, Any] | None = None
    status: int | None = None
    #: The method sent to the platform (None: nothing was sent) and how many times.
    forwarded_method: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class _Rows:
    """What `_load_rows` read for (`user_id`, `platform`): the user's connection there (None:
    there is none), what `check_token_live` needs (`liveness`, with the user row) and whether
    the token's client exists."""

    user_id: str
    platform: str
    connection: Connection | None
    liveness: LivenessRead
    client_found: bool


@dataclass(frozen=True)
class Capability:
    """A verified capability token: its claims, and the rows read with its liveness checks
    (`rows`, None when nothing was read ahead: then `handle` reads the connection itself)."""

    claims: dict[str, Any]
    rows: _Rows | None = None


def handle(services: Services, session: Session, req: GatewayRequest, *, now: int
           ) -> GatewayResponse:
    """One gateway call. Raises `OAuthError` (rendered by the one error handler) on refusal,
    its record committed (`AuditLog.append_refusal`). On success the record is in `session`'s
    transaction, uncommitted: the caller commits it before it answers."""
    call = _Call()
    started = _time.perf_counter()
    try:
        platform = services.platforms.get(req.platform)
        if platform is None:
            raise InvalidTokenError("Unknown platform", algs=CHALLENGE_ALGS)
        rows = verify_capability(services, session, req, now=now, seen=call.claims).rows
        call.intent = check_fits_intent(services, platform, req, call.claims, now=now)
        if rows is not None and (rows.user_id, rows.platform) == (
                call.claims["sub"], platform.name):
            conn = rows.connection
        else:
            conn = select_connection(session, call.claims["sub"], platform.name)
        # The read unit ends: the connection goes back to the pool before we wait on the
        # platform (or on the refresh lock), and the rows read stay usable, detached.
        session.close()
        response = forward(services, platform, req, call.claims, now=now,
                           target=call.intent["path"], call=call,
                           site=resource_site(platform, call.intent["resource"]), loaded=conn)
        call.status = response.status
    except OAuthError as error:
        _audit_refusal(services, session, req, call,
                       outcome="denied" if error.status_code < 500 else "error",
                       reason=error.error, now=now)
        raise
    except Exception:
        _audit_refusal(services, session, req, call, outcome="error", reason="server_error",
                       now=now)
        raise
    services.audit.append(session, _record(req, call, outcome="allowed", reason=None), now=now)
    from authserver.observability import GATEWAY_CALLS, GATEWAY_LATENCY

    GATEWAY_CALLS.labels(platform=req.platform, method=req.method,
                         status=str(response.status)).inc()
    GATEWAY_LATENCY.labels(platform=req.platform).observe(_time.perf_counter() - started)
    return response


def verify_capability(services: Services, session: Session, req: GatewayRequest, *, now: int,
                      seen: dict[str, Any] | None = None) -> Capability:
    """The verified capability token, or an OAuthError. `seen` receives the claims as soon as
    token and proof verify, so a refusal after that (a dead token, another platform) is
    audited under its principal; a refusal before it is anonymous (not audited). The user's
    connection at `req.platform`, read with the liveness rows, comes back with the claims."""
    settings = services.settings
    keyring = services.keyring
    resource = f"{settings.issuer}/gateway/{req.platform}"
    # RFC 9728 §5.1: every 401 names the resource's metadata.
    prm = {"resource_metadata": protected_resource_metadata_url(resource)}
    verifier = ResourceVerifier(
        issuer=settings.issuer,
        audience=resource,
        verify_jwt=lambda token, t: keyring.verify(token, typ=ACCEPTED_AT_TYPS, now=t),
        store=services.store,
        nonces=services.gateway_nonces,
        nonce_required=settings.dpop_nonce == "all",
        window=settings.dpop_proof_window,
        resource_metadata=prm["resource_metadata"],
    )
    # The connection's revocation epoch comes back with the proof's replay entry: one store
    # round trip for both (issue 18). It is compared below, after the liveness checks.
    claims, (epoch,) = verifier.verify_and_read(
        method=req.method, url=req.url, authorization=req.authorization, dpop=req.dpop,
        now=now, read=lambda verified: (_epoch_key(verified, req.platform),))
    if seen is not None:
        seen.update(claims)
    _reads_in_autocommit(session)
    rows = _load_rows(session, claims, req.platform)
    try:
        if rows is None:
            check_token_live(session, claims)
        else:
            check_token_live(session, claims, read=rows.liveness,
                             client_exists=lambda _client_id: rows.client_found)
    except TokenNotLiveError as e:
        raise InvalidTokenError("The access token is no longer valid", debug=e.reason,
                                algs=CHALLENGE_ALGS, extra_params=prm) from e
    # Disconnect and deprovisioning kill every capability token minted before them.
    if claims["iat"] <= epoch_value(epoch):
        raise InvalidTokenError("The connection behind this token was revoked",
                                algs=CHALLENGE_ALGS, extra_params=prm)
    if claims.get("platform") != req.platform:
        raise InvalidTokenError("The token is for another platform", algs=CHALLENGE_ALGS,
                                extra_params=prm)
    return Capability(claims, rows)


def _epoch_key(claims: Mapping[str, Any], platform: str) -> str:
    """The store key of the revocation epoch of the connection a capability token acts on
    (our tokens always carry a `sub`; `check_token_live` reads it too)."""
    return store_keys.connection_epoch(str(claims.get("sub")), platform)


def _reads_in_autocommit(session: Session) -> None:
    """PostgreSQL: run the request's reads, up to `session.close()` in `handle`, without a
    transaction (two round trips fewer: BEGIN and ROLLBACK). Only on a session that has not
    begun (nothing read or written yet); the pool restores the connection's isolation level
    when the connection goes back, so the audit record's unit is an ordinary transaction."""
    if session.in_transaction() or session.get_bind().dialect.name != "postgresql":
        return
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


#: `_load_rows`' statement, built once (building it and its cache key per call costs more than
#: running it): the liveness row (authserver.tokens.liveness_select: jti revoked, latest
#: withdrawal, the user) with the client and the user's connection outer-joined. Always one
#: row: a missing user, client or connection is a None in it.
_ROWS_STATEMENT = (
    liveness_select(Client.client_id, Connection)
    .outerjoin(Client, Client.client_id == bindparam("client_id"))
    .outerjoin(Connection, (Connection.user_id == User.id)
               & (Connection.platform == bindparam("platform")))
)


def _load_rows(session: Session, claims: dict[str, Any], platform: str) -> _Rows | None:
    """One statement for everything `check_token_live` reads of a user's token (the jti, the
    user, the withdrawals of its agents, whether its client exists) and the user's connection
    at `platform`, which `handle` uses. None (nothing read: `check_token_live` reads itself)
    for a token that is not a user's."""
    user_id, client_id = claims.get("sub"), claims.get("client_id")
    if not isinstance(user_id, str) or not isinstance(client_id, str) or user_id == client_id \
            or not isinstance(claims.get("jti"), str):
        return None
    params = liveness_params(claims)
    row = session.execute(_ROWS_STATEMENT, {**params, "client_id": client_id,
                                            "platform": platform}).one()
    return _Rows(user_id, platform, connection=row[4], liveness=liveness_read(params, row),
                 client_found=row[3] is not None)


def protected_resource_metadata(services: Services, platform: str) -> dict[str, Any]:
    """RFC 9728 document of `<issuer>/gateway/<platform>`: our tokens only, DPoP-bound."""
    issuer = services.settings.issuer
    return _prm_document(
        f"{issuer}/gateway/{platform}", authorization_servers=[issuer], dpop_required=True,
        resource_name=services.platforms[platform].display_name,
        authorization_details_types=[INTENT_TYPE])


def _forbidden(description: str) -> ResourceForbiddenError:
    return ResourceForbiddenError(description, algs=CHALLENGE_ALGS)


def check_fits_intent(services: Services, platform: Platform, req: GatewayRequest,
                      claims: dict[str, Any], *, now: int) -> dict[str, Any]:
    intents = [d for d in claims.get("authorization_details") or []
               if isinstance(d, dict) and d.get("type") == INTENT_TYPE]
    if len(intents) != 1:
        raise _forbidden("The token carries no intent")
    intent = intents[0]
    action = (intent.get("actions") or [None])[0]
    resource = intent.get("identifier")
    if not isinstance(action, str) or not isinstance(resource, str):
        raise _forbidden("The token's intent is malformed")
    # Each action only its own methods (Part A5): reads never write, and nothing but a
    # destructive intent (delete, bulk_delete) ever sends DELETE.
    own = ACTION_METHODS.get(action)
    if own is None:
        raise _forbidden("The token's intent is malformed")
    if req.method not in own:
        raise _forbidden(f"A {action!r} intent does not allow {req.method} "
                         f"(only {', '.join(sorted(own))})")
    if req.method in SAFE_METHODS and req.body:
        raise _forbidden(f"A {req.method} request carries no body")
    target = resolve_path(platform, resource)
    if target is None:
        raise _forbidden("The request does not match the intent's resource")
    # The platform's route may narrow the action's methods (e.g. PATCH but no PUT).
    if req.method not in allowed_methods(platform, resource, action):
        raise _forbidden(f"The platform does not allow {req.method} on this resource")
    # `req.path` follows "/gateway/<platform>/": a leading "/" is an empty segment ("//").
    if req.path.startswith("/") or not path_matches_intent(
            platform, resource, req.method, req.path):
        raise _forbidden("The request does not match the intent's resource")
    if action not in READ:
        count = intent.get("count", 1)
        uses = services.store.incr(store_keys.capability_writes(claims["jti"]),
                                   ttl=max(1, int(claims["exp"]) - now + 60))
        if not isinstance(count, int) or uses > count:
            raise _forbidden("The intent's record count is used up")
    # `path` is what is forwarded: the intent's own canonical API path, never the client's
    # spelling of it (no parser differential between our match and the platform's router).
    return {"action": action, "resource": resource, "count": intent.get("count", 1),
            "path": target}


def forward(services: Services, platform: Platform, req: GatewayRequest,
            claims: dict[str, Any], *, now: int, target: str, call: _Call | None = None,
            site: str | None = None, loaded: Connection | None = None) -> GatewayResponse:
    """Call `target` (relative to the API base; checked against the intent by the caller).

    `call`, when given, records the method sent and how many times (for the audit). `site`
    is the intent's `{cloud_id}` (`gateway_routes.resource_site`): on a platform with sites it
    must be one the connection stores (`api_base`). `loaded`: the user's connection as the
    caller already read it (else it is read here)."""
    if len(req.body) > MAX_REQUEST_BYTES:
        raise _forbidden("Request body too large")
    s = services
    call = call if call is not None else _Call()
    user_id = claims["sub"]
    reconnect = connect_uri(s.settings.issuer, platform.name)
    token, conn = get_access_token(s.db, s.store, s.vault, platform, user_id=user_id, now=now,
                                   connect_uri=reconnect, loaded=loaded)
    base = api_base(platform, conn, site)
    call.forwarded_method = req.method
    call.attempts += 1
    response = _send(platform, base, token, req, target)
    if response.status == 401:
        # The platform says the token is dead although we thought it fresh: refresh once, so
        # the next call works. Resend only an idempotent request; a POST or PATCH may already
        # have taken effect, and its 401 is relayed as 502 like any 401 that outlives a refresh.
        token, conn = force_refresh(s.db, s.store, s.vault, platform, user_id=user_id,
                                    rejected_access_token=token, now=now,
                                    connect_uri=reconnect)
        if req.method in IDEMPOTENT_METHODS:
            call.attempts += 1
            response = _send(platform, api_base(platform, conn, site), token, req, target)
    return _relay(response)


def api_base(platform: Platform, conn: Any, site: str | None) -> str:
    """The API base for a call on `conn`. On a platform whose profile discovers sites
    (Atlassian), fail closed: a `site` the connection does not store is refused (so is any
    site when none is stored, e.g. a row from before sites were kept: reconnect), and a base
    with a `{cloud_id}` placeholder (several sites) is filled with the intent's site only."""
    base = conn.api_base_url or platform.api_base_url or ""
    if platform.profile.sites_from_discovery is None:
        return base
    sites = connection_sites(conn)
    if site is not None and (sites is None or site not in {s["id"] for s in sites}):
        raise _forbidden("The intent names a site this connection does not cover")
    if "{cloud_id}" in base:
        if site is None:
            raise _forbidden("The intent names no site, and the connection covers several")
        base = base.replace("{cloud_id}", site)
    return base


def _send(platform: Platform, api_base: str, token: str, req: GatewayRequest, target: str
          ) -> PlatformAnswer:
    headers = api_request_headers(platform, token)
    headers["Accept"] = "application/json"
    if req.correlation_id:
        headers["X-Request-ID"] = req.correlation_id
    # A read never carries a body to the platform (check_fits_intent refuses one; this holds
    # for any other caller too).
    payload = b"" if req.method in SAFE_METHODS else req.body
    if req.content_type and payload:
        headers["Content-Type"] = req.content_type
    url = api_base.rstrip("/") + "/" + target.lstrip("/")
    try:
        answer = _HTTP.send(req.method, url, body=payload or None, headers=headers,
                            timeout=GATEWAY_TIMEOUT, max_bytes=MAX_RESPONSE_BYTES)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        raise TemporarilyUnavailableError("The platform did not answer",
                                          debug=f"gateway: {type(e).__name__}") from e
    if len(answer.body) > MAX_RESPONSE_BYTES:
        raise TemporarilyUnavailableError("The platform's response is too large")
    # The status the answer stands for (Slack says "token_expired" with a 200): a 401 here is
    # refreshed once like a real one, and an error never passes as a success.
    status = platform.profile.api_response_status(
        answer.status, answer.headers.get("Content-Type", ""), answer.body)
    return PlatformAnswer(status, answer.headers, answer.body)


def _relay(response: PlatformAnswer) -> GatewayResponse:
    status = response.status
    if 200 <= status < 300 or status == 304:
        headers = {h: response.headers[h] for h in PASSED_RESPONSE_HEADERS
                   if h in response.headers and h != "Location"}
        return GatewayResponse(status, response.body, headers)
    # Downstream error text never reaches the agent verbatim (it may carry injected
    # instructions or internals): a status and a generic summary only.
    import json

    try:
        summary = HTTPStatus(status).phrase
    except ValueError:
        summary = "Platform error"
    body = json.dumps({"error": "platform_error", "status": status, "summary": summary})
    # A 401 that survived our refresh is about OUR credential at the platform, not the agent's:
    # relayed as 401 (and without a challenge, RFC 9110 §15.5.2) it would read as "your token
    # is bad". Like 3xx and 5xx it becomes 502; other 4xx are relayed.
    relayed = status if 400 <= status < 500 and status != 401 else 502
    return GatewayResponse(relayed, body.encode(), {"Content-Type": "application/json"})


def _audit_refusal(services: Services, session: Session, req: GatewayRequest, call: _Call, *,
                   outcome: str, reason: str, now: int) -> None:
    if not call.claims:
        # No verified token: nobody to hold to account, and an audit append would take the
        # chain's lock for an anonymous client (issue 13, item 8). Counted and logged instead.
        refused_unauthenticated("gateway_call", reason)
        return
    services.audit.append_refusal(session, _record(req, call, outcome=outcome, reason=reason),
                                  now=now)


def _record(req: GatewayRequest, call: _Call, *, outcome: str, reason: str | None
            ) -> AuditRecord:
    claims = call.claims
    act = claims.get("act") or {}
    return AuditRecord(
        event="gateway_call",
        outcome=outcome,
        reason=reason,
        correlation_id=req.correlation_id,
        user_id=claims.get("sub"),
        agent_id=claims.get("client_id"),
        actor_chain=[act["sub"]] if "sub" in act else [],
        platform=req.platform,
        intent=call.intent,
        intent_hash=claims.get("intent_hash"),
        token_jti=claims.get("jti"),
        client_ip=req.client_ip,
        detail={"method": req.method, "forwarded_method": call.forwarded_method,
                "attempts": call.attempts, "status": call.status},
    )
