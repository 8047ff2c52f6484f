"""Connecting a platform (RFC 6749 §4.1 + RFC 7636): the authorization request, and the
callback that redeems the code and stores the grant.

`state` is bound to the signed-in user and the browser session that started the flow and is
single-use. A reconnect replaces the stored grant under the connection lock, then revokes the
superseded one at the platform.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping

from authserver.broker.oauth_client import (
    PlatformInvalidGrant,
    build_authorize_url,
    exchange_code,
    s256,
)
from authserver.broker.profiles import Platform
from authserver.broker.records import connection_lock, open_all_tokens, select_connection
from authserver.broker.revoke import revoke_superseded
from authserver.broker.vault import Vault
from authserver.db import Database
from authserver.errors import InvalidGrantError, InvalidRequestError
from authserver.models.broker import CONNECTION_ACTIVE, Connection
from authserver.store import Store
from authserver.store import keys as store_keys

log = logging.getLogger(__name__)

#: How long a started connect flow may take (the user signs in at the platform meanwhile).
CONNECT_STATE_TTL = 600
STATE_BYTES = 32
CODE_VERIFIER_BYTES = 48  # 64 characters: RFC 7636 §4.1 allows 43-128


def start_connect(store: Store, platform: Platform, *, user_id: str, session_binding: str,
                  redirect_uri: str, now: int) -> str:
    """Begin the code flow for the signed-in `user_id`; returns the platform's authorize URL.

    `session_binding` is a secret tied to the browser session (e.g. its session id): the flow
    can only be finished by the same user in the same session (RFC 9700 §4.7, CSRF).
    """
    if not session_binding or not user_id:
        raise ValueError("start_connect needs a signed-in user and a session binding")
    state = secrets.token_urlsafe(STATE_BYTES)
    code_verifier = secrets.token_urlsafe(CODE_VERIFIER_BYTES)
    record = {
        "user_id": user_id,
        "platform": platform.name,
        "code_verifier": code_verifier,
        "session": _digest(session_binding),
        "redirect_uri": redirect_uri,
        "created_at": now,
    }
    store.set(store_keys.connect_state(state), json.dumps(record), ttl=CONNECT_STATE_TTL)
    return build_authorize_url(platform, redirect_uri=redirect_uri, state=state,
                               code_challenge=s256(code_verifier))


def finish_connect(db: Database, store: Store, vault: Vault, platform: Platform, *, state: str,
                   code: str, user_id: str, session_binding: str, redirect_uri: str,
                   now: int) -> Connection:
    """Redeem the platform's code and store the grant (replacing an older one).

    Raises InvalidRequestError for an unknown, expired, replayed or foreign `state`, and
    InvalidGrantError when the platform refuses the code. The state is spent either way.
    """
    record = _claim_state(store, state)
    _check_state_owner(record, platform, user_id, session_binding, redirect_uri, now)
    try:
        tokens = exchange_code(platform, code, str(record["code_verifier"]), redirect_uri)
    except PlatformInvalidGrant as e:
        raise InvalidGrantError("The platform did not accept the authorization",
                                debug=e.debug) from e
    superseded: dict[str, str] = {}
    with connection_lock(store, user_id, platform.name) as fence, db.session() as session:
        conn = select_connection(session, user_id, platform.name)
        if conn is None:
            conn = Connection(id="con_" + secrets.token_urlsafe(16), user_id=user_id,
                              platform=platform.name, created_at=now, generation=0)
            session.add(conn)
        elif platform.profile.revoke_superseded_grant:
            superseded = open_all_tokens(vault, conn)
        # The fencing token, unless the shared store lost its counter (then one past the row).
        conn.generation = fence if fence > conn.generation else conn.generation + 1
        conn.status = CONNECTION_ACTIVE
        conn.access_token_ciphertext = vault.seal(user_id, platform.name, "access_token",
                                                  tokens.access_token)
        conn.refresh_token_ciphertext = None if tokens.refresh_token is None else vault.seal(
            user_id, platform.name, "refresh_token", tokens.refresh_token)
        conn.access_expires_at = None if tokens.expires_in is None else now + tokens.expires_in
        conn.access_obtained_at = now
        conn.api_base_url = tokens.api_base_url
        conn.scope = tokens.scope or " ".join(platform.scopes)
        conn.account_label = tokens.account_label
        conn.sites = None if tokens.sites is None else json.dumps(list(tokens.sites))
        conn.updated_at = now
    log.info("connected user to platform %s", platform.name)
    if superseded:
        revoke_superseded(platform, superseded, tokens)
    return conn


def _claim_state(store: Store, state: str) -> dict[str, object]:
    key = store_keys.connect_state(state)
    raw = store.get(key)
    if raw is None:
        raise InvalidRequestError("The connection request is unknown or expired",
                                  debug="connect: unknown or expired state")
    # Single use even under concurrency: only one caller can add the marker.
    if not store.add_if_absent(key + ":used", CONNECT_STATE_TTL):
        raise InvalidRequestError("The connection request was already used",
                                  debug="connect: state replayed")
    store.delete(key)
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise InvalidRequestError("The connection request is invalid", debug="connect: record")
    return record


def _check_state_owner(record: Mapping[str, object], platform: Platform, user_id: str,
                       session_binding: str, redirect_uri: str, now: int) -> None:
    def reject(reason: str) -> InvalidRequestError:
        return InvalidRequestError("The connection request does not belong to this session",
                                   debug=f"connect: {reason}")

    created_at = record.get("created_at")
    if not isinstance(created_at, int) or now - created_at > CONNECT_STATE_TTL:
        raise InvalidRequestError("The connection request is unknown or expired",
                                  debug="connect: state expired")
    if record.get("platform") != platform.name:
        raise reject("state was issued for another platform")
    # The user who finishes must be the user who started, in the same browser session.
    if not hmac.compare_digest(str(record.get("user_id", "")).encode(), user_id.encode()):
        raise reject("state was issued to another user")
    if not hmac.compare_digest(str(record.get("session", "")), _digest(session_binding)):
        raise reject("state was issued to another session")
    if record.get("redirect_uri") != redirect_uri:
        raise reject("redirect_uri differs from the one the flow started with")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
