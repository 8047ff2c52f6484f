"""RFC 9068 JWT access tokens, and the checks that decide whether one is still live.

`typ: at+jwt`, claims `iss sub aud exp iat jti client_id` (+ `scope`, `cnf`, `act`,
`authorization_details`, `gid` = the grant it came from). Binding is derived, never supplied by
a caller: a token has `cnf.jkt` exactly when it was issued against a DPoP proof, and its
`token_type` follows from that (RFC 9449 §5, §6.1).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, exists, func, literal_column, select
from sqlalchemy.orm import Session

from authserver.config import JWT_LEEWAY
from authserver.keys import InvalidSignatureError, KeyRing
from authserver.models import AgentRevocation, Client, Grant, RevokedToken, User

ACCESS_TOKEN_TYP = "at+jwt"
ACCEPTED_AT_TYPS = ("at+jwt", "application/at+jwt")


@dataclass(frozen=True)
class AccessToken:
    value: str
    claims: dict[str, Any]
    expires_in: int

    @property
    def token_type(self) -> str:
        return "DPoP" if "cnf" in self.claims else "Bearer"

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])


@dataclass
class TokenRequestContext:
    """What a grant decided, handed to `issue_access_token`."""

    sub: str
    client_id: str
    audience: str | list[str]
    scope: str = ""
    ttl: int = 600
    jkt: str | None = None
    act: dict[str, Any] | None = None
    authorization_details: list[dict[str, Any]] | None = None
    grant_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def issue_access_token(
    keyring: KeyRing, issuer: str, ctx: TokenRequestContext, *, now: int
) -> AccessToken:
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": ctx.sub,
        "aud": ctx.audience,
        "iat": now,
        "exp": now + ctx.ttl,
        "jti": secrets.token_urlsafe(18),
        "client_id": ctx.client_id,
    }
    if ctx.scope:
        claims["scope"] = ctx.scope
    if ctx.jkt:
        claims["cnf"] = {"jkt": ctx.jkt}
    if ctx.act:
        claims["act"] = ctx.act
    if ctx.authorization_details:
        claims["authorization_details"] = ctx.authorization_details
    if ctx.grant_id:
        claims["gid"] = ctx.grant_id
    claims.update(ctx.extra)
    return AccessToken(keyring.sign(claims, typ=ACCESS_TOKEN_TYP), claims, ctx.ttl)


#: `TokenNotLiveError.code` for each `reason` (free text for logs): the stable snake_case
#: suffix of the audit refusal reason (`subject_token_expired`, `actor_token_revoked`, …).
TOKEN_NOT_LIVE_CODES = {
    "signature": "bad_signature",
    "iss": "wrong_issuer",
    "claims": "bad_claims",
    "expired": "expired",
    "iat in the future": "issued_in_future",
    "revoked": "revoked",
    "grant revoked": "grant_revoked",
    "client deleted": "client_deleted",
    "user inactive": "user_inactive",
    "issued before the user's revocation epoch": "before_revocation_epoch",
    "the user withdrew this agent": "agent_withdrawn",
}


class TokenNotLiveError(Exception):
    """A token is not (or no longer) acceptable. `reason` is for logs and audit only; `code`
    is its stable snake_case name (`TOKEN_NOT_LIVE_CODES`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = TOKEN_NOT_LIVE_CODES.get(reason, "not_live")


def verify_access_token(
    keyring: KeyRing, issuer: str, token: str, *, now: int, leeway: int = JWT_LEEWAY
) -> dict[str, Any]:
    """Signature, `typ`, `iss` and lifetime of one of our access tokens; returns its claims.

    Does not consult the database; `check_token_live` does. Raises `TokenNotLiveError`.
    """
    try:
        claims = keyring.verify(token, typ=ACCEPTED_AT_TYPS, now=now)
    except InvalidSignatureError as e:
        raise TokenNotLiveError("signature") from e
    if claims.get("iss") != issuer:
        raise TokenNotLiveError("iss")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise TokenNotLiveError("claims")
    if exp <= now - leeway:
        raise TokenNotLiveError("expired")
    if iat > now + leeway:
        raise TokenNotLiveError("iat in the future")
    for name in ("sub", "jti", "client_id"):
        if not isinstance(claims.get(name), str):
            raise TokenNotLiveError("claims")
    return claims


# The liveness checks' statements, built once (issue 18): a statement built per call costs its
# construction and its cache key every time (SQLAlchemy memoizes the key on the object), and
# `Session.get` builds its SELECT per call too. Core columns where no ORM object is wanted.
_REVOKED = RevokedToken.__table__.c
_REVOKED_JTI = select(_REVOKED.jti, _REVOKED.expires_at).where(
    _REVOKED.jti == bindparam("jti"))
_WITHDRAWN = AgentRevocation.__table__.c

# What a user's token needs of the database, in one row whatever exists (`liveness_select`):
# whether its jti is revoked, the latest withdrawal (`revoked_before`) among its agents for its
# user (NULL: none), and the user's row, outer-joined (None: no such user; its jti is still
# seen, and refused first).
_LIVE_REVOKED = exists().where(_REVOKED.jti == bindparam("jti")).label("live_revoked")
_LIVE_WITHDRAWN = (
    select(func.max(_WITHDRAWN.revoked_before))
    .where(_WITHDRAWN.user_id == bindparam("user_id"),
           _WITHDRAWN.agent_id.in_(bindparam("agents", expanding=True)))
    .scalar_subquery().label("live_withdrawn_before"))
_ONE_ROW = select(literal_column("1").label("one")).subquery("one")


def liveness_select(*also: Any) -> Select[Any]:
    """The liveness statement: one row of (jti revoked, latest withdrawal, the user or None),
    then `also`, which the caller outer-joins onto it (authserver.gateway adds the client and
    the connection). Parameters: `liveness_params(claims)` and the caller's own; the row is
    read back with `liveness_read`. Build it once, at import."""
    return (select(_LIVE_REVOKED, _LIVE_WITHDRAWN, User, *also).select_from(_ONE_ROW)
            .outerjoin(User, User.id == bindparam("user_id")))


_LIVENESS = liveness_select()


@dataclass(frozen=True)
class LivenessRead:
    """What `check_token_live` reads of the database for a user's token, in one statement
    (`read_liveness`, or a caller's own built on `liveness_select`): whether the jti is
    revoked, the user's row (None: there is none) and the latest withdrawal among its agents
    (None: none). `params` are the bind parameters it was read with (`liveness_params`);
    `check_token_live` uses it only for claims with those same parameters. It holds the user
    row: the session's identity map holds its objects weakly."""

    params: dict[str, Any]
    revoked: bool
    user: User | None
    withdrawn_before: int | None


def liveness_params(claims: dict[str, Any]) -> dict[str, Any]:
    """The bind parameters of `liveness_select` for a user's token: `jti`, `user_id` and
    `agents`, every agent the token acts through (its client and each actor of `act`:
    withdrawing one that delegated stops the agents it delegated to as well).
    A malformed `act` reads with the client alone: `check_token_live` refuses it ("claims")
    where it always did, after the checks before it."""
    return _params(claims, _agents(claims))


def read_liveness(session: Session, claims: dict[str, Any]) -> LivenessRead:
    """`LivenessRead` for a user's token, in one prebuilt statement."""
    return _read(session, liveness_params(claims))


def liveness_read(params: dict[str, Any], row: Sequence[Any]) -> LivenessRead:
    """The `LivenessRead` in a row of a `liveness_select` statement run with `params`."""
    return LivenessRead(params, bool(row[0]), row[2], row[1])


def _params(claims: dict[str, Any], agents: list[str] | None) -> dict[str, Any]:
    return {"jti": claims["jti"], "user_id": claims["sub"],
            "agents": agents if agents is not None else [claims["client_id"]]}


def _read(session: Session, params: dict[str, Any]) -> LivenessRead:
    # An ORM statement: the session autoflushes first, so what this unit of work revoked,
    # withdrew or deactivated counts.
    return liveness_read(params, session.execute(_LIVENESS, params).one())


def check_token_live(session: Session, claims: dict[str, Any], *, epoch: int | None = None,
                     client_exists: Callable[[str], bool] | None = None,
                     read: LivenessRead | None = None) -> User | None:
    """Revocation: the jti, its grant, its client, its user (deprovisioning epoch), its agents
    (withdrawals). Checked in that order: the first that fails is the `TokenNotLiveError`.

    A user's token is read in one statement (`read_liveness`: the jti, the user's row, the
    withdrawals), unless the caller read that ahead in its own (`read`, authserver.gateway);
    a `read` made for other claims is not used. A client's own token (`sub` = `client_id`)
    reads only its jti. The grant, when the token names one, is read by itself.
    `epoch` overrides the user's `tokens_valid_after` (the caller may have it from the store).
    `client_exists` answers whether the token's client still exists (default: its row), for a
    caller that has the client already or a cache of them (authserver.client_cache).
    Returns the token's user row (live and active) when its `sub` is a user, else None, so
    the caller need not load it again. Raises `TokenNotLiveError`; a database error
    propagates.
    """
    if claims["sub"] == claims["client_id"]:
        if session.execute(_REVOKED_JTI, {"jti": claims["jti"]}).first() is not None:
            raise TokenNotLiveError("revoked")
        _check_grant_and_client(session, claims, client_exists)
        return None
    agents = _agents(claims)
    params = _params(claims, agents)
    if read is None or read.params != params:
        read = _read(session, params)
    if read.revoked:
        raise TokenNotLiveError("revoked")
    _check_grant_and_client(session, claims, client_exists)
    user = read.user
    if user is None or not user.active:
        raise TokenNotLiveError("user inactive")
    valid_after = user.tokens_valid_after if epoch is None else max(
        epoch, user.tokens_valid_after
    )
    if valid_after and claims["iat"] <= valid_after:
        raise TokenNotLiveError("issued before the user's revocation epoch")
    if agents is None:
        raise TokenNotLiveError("claims")
    # Any withdrawal of one of its agents at or after its iat kills the token: the latest does.
    if read.withdrawn_before is not None and claims["iat"] <= read.withdrawn_before:
        raise TokenNotLiveError("the user withdrew this agent")
    return user


def _check_grant_and_client(session: Session, claims: dict[str, Any],
                            client_exists: Callable[[str], bool] | None) -> None:
    gid = claims.get("gid")
    if gid is not None:
        grant = session.get(Grant, gid)
        if grant is None or grant.revoked_at is not None:
            raise TokenNotLiveError("grant revoked")
    if client_exists is None:
        found = session.get(Client, claims["client_id"]) is not None
    else:
        found = client_exists(claims["client_id"])
    if not found:
        raise TokenNotLiveError("client deleted")


def _agents(claims: dict[str, Any]) -> list[str] | None:
    """Every agent a token acts through, sorted (None: its `act` chain is malformed)."""
    try:
        return sorted({claims["client_id"], *_actors(claims.get("act"))})
    except TokenNotLiveError:
        return None


#: `act` nesting deeper than this is not from us (token exchange caps chains at 4).
MAX_ACT_CHAIN = 16


def _actors(act: Any) -> list[str]:
    """The `sub` of every actor in a nested `act` claim (RFC 8693 §4.1); a malformed chain
    is not live."""
    actors: list[str] = []
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str) \
                or len(actors) >= MAX_ACT_CHAIN:
            raise TokenNotLiveError("claims")
        actors.append(act["sub"])
        act = act.get("act")
    return actors


def revoke_access_token(session: Session, claims: dict[str, Any]) -> None:
    if session.get(RevokedToken, claims["jti"]) is None:
        session.add(RevokedToken(jti=claims["jti"], expires_at=int(claims["exp"])))

