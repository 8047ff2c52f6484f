"""authserver.tokens: issuing our RFC 9068 access tokens, verifying them, and liveness.

Unit tests at a fixed `now`, one per rejection reason, each asserting `TokenNotLiveError.reason`
(and, for a signature failure, which check of `KeyRing.verify` refused it), so that no test
passes because some other check refused the token. The keyring is real (a LocalKMS KEK, keys in
a SQLite file); the liveness checks run on SQLite and PostgreSQL (`database_url`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from sqlalchemy import bindparam, event, select
from sqlalchemy.exc import DBAPIError

from authserver.config import JWT_LEEWAY
from authserver.db import Database
from authserver.keys import KeyRing
from authserver.kms import LocalKMS
from authserver.models import AgentRevocation, Client, Grant, RevokedToken, SigningKey, User
from authserver.models.base import Base
from authserver.tokens import (
    ACCESS_TOKEN_TYP,
    MAX_ACT_CHAIN,
    AccessToken,
    LivenessRead,
    TokenNotLiveError,
    TokenRequestContext,
    check_token_live,
    issue_access_token,
    liveness_params,
    liveness_read,
    liveness_select,
    revoke_access_token,
    verify_access_token,
)

ISSUER = "https://as.example"
AGENT = "agent-1"
USER_ID = "usr_alice"


# --- fixtures ---------------------------------------------------------------------------------


def _database(url: str) -> Database:
    database = Database(url)
    Base.metadata.create_all(database.engine)
    return database


@pytest.fixture
def keyring(tmp_path: Path, now: int) -> Iterator[KeyRing]:
    """A real keyring with one signing key (SQLite: signing and verifying touch no other
    table; the liveness checks below run on both databases)."""
    database = _database(f"sqlite:///{tmp_path}/keys.db")
    ring = KeyRing(database, LocalKMS(tmp_path / "kek.key"))
    with database.session() as session:
        ring.ensure_key(session, now)
    yield ring
    database.engine.dispose()


@pytest.fixture
def db(database_url: str, now: int) -> Iterator[Database]:
    """Our client AGENT and our user USER_ID, active, with no revocation epoch."""
    database = _database(database_url)
    with database.session() as s:
        s.add(Client(client_id=AGENT, token_endpoint_auth_method="private_key_jwt",
                     client_id_issued_at=now))
        s.add(User(id=USER_ID, idp_issuer="https://idp.example", idp_subject="alice",
                   created_at=now))
    yield database
    database.engine.dispose()


def ctx(**overrides: Any) -> TokenRequestContext:
    values: dict[str, Any] = {"sub": USER_ID, "client_id": AGENT,
                              "audience": "https://rs.example", "ttl": 300}
    values.update(overrides)
    return TokenRequestContext(**values)


def claims(now: int, **overrides: Any) -> dict[str, Any]:
    """The claims of a live token for USER_ID by AGENT, issued at `now`."""
    values: dict[str, Any] = {"iss": ISSUER, "sub": USER_ID, "aud": "https://rs.example",
                              "iat": now, "exp": now + 300, "jti": "jti-1", "client_id": AGENT}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def active_kid(keyring: KeyRing, now: int) -> str:
    [key] = keyring.jwks(now)["keys"]
    return str(key["kid"])


def rejected(keyring: KeyRing, token: str, now: int, **kw: Any) -> TokenNotLiveError:
    with pytest.raises(TokenNotLiveError) as caught:
        verify_access_token(keyring, ISSUER, token, now=now, **kw)
    return caught.value


def signature_check(error: TokenNotLiveError) -> str:
    """Which check of KeyRing.verify refused the token (InvalidSignatureError's message)."""
    assert error.reason == "signature"
    return str(error.__cause__)


def not_live(db: Database, token_claims: dict[str, Any], **kw: Any) -> str:
    with db.session() as s, pytest.raises(TokenNotLiveError) as caught:
        check_token_live(s, token_claims, **kw)
    return caught.value.reason


def live(db: Database, token_claims: dict[str, Any], **kw: Any) -> None:
    with db.session() as s:
        check_token_live(s, token_claims, **kw)


# --- issue_access_token -----------------------------------------------------------------------


def test_issued_token_is_an_rfc9068_jwt_signed_by_the_active_key(keyring: KeyRing,
                                                                  now: int) -> None:
    token = issue_access_token(keyring, ISSUER, ctx(), now=now)
    header = header_of(token.value)
    assert header == {"alg": "ES256", "kid": active_kid(keyring, now), "typ": "at+jwt"}
    assert ACCESS_TOKEN_TYP == "at+jwt"
    assert token.claims == {"iss": ISSUER, "sub": USER_ID, "aud": "https://rs.example",
                            "iat": now, "exp": now + 300, "jti": token.jti,
                            "client_id": AGENT}
    assert verify_access_token(keyring, ISSUER, token.value, now=now) == token.claims


@pytest.mark.parametrize("ttl", [1, 60, 600])
def test_lifetime_is_the_ttl(keyring: KeyRing, now: int, ttl: int) -> None:
    token = issue_access_token(keyring, ISSUER, ctx(ttl=ttl), now=now)
    assert token.claims["iat"] == now
    assert token.claims["exp"] - token.claims["iat"] == ttl
    assert token.expires_in == ttl


def test_unbound_token_is_bearer_without_cnf(keyring: KeyRing, now: int) -> None:
    token = issue_access_token(keyring, ISSUER, ctx(), now=now)
    assert "cnf" not in token.claims
    assert token.token_type == "Bearer"


def test_dpop_bound_token_carries_cnf_jkt_and_is_dpop(keyring: KeyRing, now: int) -> None:
    jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    token = issue_access_token(keyring, ISSUER, ctx(jkt=jkt), now=now)
    assert token.claims["cnf"] == {"jkt": jkt}
    assert token.token_type == "DPoP"
    assert verify_access_token(keyring, ISSUER, token.value, now=now)["cnf"] == {"jkt": jkt}


@pytest.mark.parametrize("audience", ["https://rs.example",
                                      ["https://rs.example", "https://other.example"]])
def test_audience_is_issued_as_given(keyring: KeyRing, now: int,
                                     audience: str | list[str]) -> None:
    token = issue_access_token(keyring, ISSUER, ctx(audience=audience), now=now)
    assert token.claims["aud"] == audience
    assert verify_access_token(keyring, ISSUER, token.value, now=now)["aud"] == audience


def test_optional_claims_only_when_given(keyring: KeyRing, now: int) -> None:
    details = [{"type": "agent_intent", "actions": ["read"]}]
    token = issue_access_token(keyring, ISSUER, ctx(
        scope="read write", act={"sub": AGENT}, authorization_details=details,
        grant_id="grant-1", extra={"platform": "crm"}), now=now)
    assert token.claims["scope"] == "read write"
    assert token.claims["act"] == {"sub": AGENT}
    assert token.claims["authorization_details"] == details
    assert token.claims["gid"] == "grant-1"
    assert token.claims["platform"] == "crm"
    bare = issue_access_token(keyring, ISSUER, ctx(scope="", act=None), now=now).claims
    assert not {"scope", "cnf", "act", "authorization_details", "gid"} & set(bare)


def test_every_token_has_its_own_jti(keyring: KeyRing, now: int) -> None:
    jtis = {issue_access_token(keyring, ISSUER, ctx(), now=now).jti for _ in range(20)}
    assert len(jtis) == 20
    assert all(isinstance(j, str) and len(j) >= 24 for j in jtis)


def test_access_token_properties() -> None:
    assert AccessToken("v", {"jti": "j", "cnf": {"jkt": "k"}}, 5).token_type == "DPoP"
    assert AccessToken("v", {"jti": "j"}, 5).token_type == "Bearer"
    assert AccessToken("v", {"jti": "j"}, 5).jti == "j"


# --- verify_access_token: signature, typ, alg (KeyRing.verify) ---------------------------------


def test_tampered_signature(keyring: KeyRing, now: int) -> None:
    head, body, sig = issue_access_token(keyring, ISSUER, ctx(), now=now).value.split(".")
    bad = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert signature_check(rejected(keyring, f"{head}.{body}.{bad}", now)) \
        == "BadSignatureError"


def test_tampered_claims(keyring: KeyRing, now: int) -> None:
    head, _, sig = issue_access_token(keyring, ISSUER, ctx(), now=now).value.split(".")
    forged = b64(claims(now, sub="usr_mallory"))
    assert signature_check(rejected(keyring, f"{head}.{forged}.{sig}", now)) \
        == "BadSignatureError"


def test_foreign_key_with_our_kid(keyring: KeyRing, now: int) -> None:
    foreign = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": active_kid(keyring, now)},
                       claims(now), foreign)
    assert signature_check(rejected(keyring, token, now)) == "BadSignatureError"


def test_unknown_kid(keyring: KeyRing, now: int) -> None:
    """A kid we never published: one reload of the key set (a rotation elsewhere), then no."""
    foreign = ECKey.generate_key("P-256", auto_kid=True)
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": foreign.kid}, claims(now),
                       foreign)
    assert signature_check(rejected(keyring, token, now)) == "InvalidKeyIdError"


def test_key_rotated_in_after_the_keyring_loaded_is_found(tmp_path: Path, keyring: KeyRing,
                                                          now: int) -> None:
    """The unknown-kid reload: a token signed by a key another process created still verifies."""
    token = issue_access_token(keyring, ISSUER, ctx(), now=now)
    verify_access_token(keyring, ISSUER, token.value, now=now)  # the public set is now cached
    with keyring._db.session() as session:
        keyring.rotate(session, now)
    newer = issue_access_token(keyring, ISSUER, ctx(), now=now)
    assert header_of(newer.value)["kid"] != header_of(token.value)["kid"]
    assert verify_access_token(keyring, ISSUER, newer.value, now=now) == newer.claims
    # The retired key still verifies during its overlap.
    assert verify_access_token(keyring, ISSUER, token.value, now=now) == token.claims


def test_alg_none(keyring: KeyRing, now: int) -> None:
    unsigned = b64({"alg": "none", "typ": "at+jwt", "kid": active_kid(keyring, now)}) + "." + \
        b64(claims(now)) + "."
    assert signature_check(rejected(keyring, unsigned, now)) == "UnsupportedAlgorithmError"


def test_alg_hs256_keyed_with_our_public_key(keyring: KeyRing, now: int) -> None:
    """The classic confusion: HMAC keyed with the published public key is not ES256."""
    public = json.dumps(keyring.jwks(now)["keys"][0]).encode()
    token = jwt.encode({"alg": "HS256", "typ": "at+jwt", "kid": active_kid(keyring, now)},
                       claims(now), OctKey.import_key(public), algorithms=["HS256"])
    assert signature_check(rejected(keyring, token, now)) == "UnsupportedAlgorithmError"


@pytest.mark.parametrize("typ", ["JWT", "dpop+jwt", "oauth-id-jag+jwt", "at+JWT"])
def test_wrong_typ(keyring: KeyRing, now: int, typ: str) -> None:
    """Our own key, our own claims, another JOSE typ (an ID token, a proof): not an AT."""
    token = keyring.sign(claims(now), typ=typ)
    assert signature_check(rejected(keyring, token, now)) == "unexpected typ"


def test_application_at_jwt_typ_is_accepted(keyring: KeyRing, now: int) -> None:
    """RFC 9068 §2.1: `application/at+jwt` is the same media type."""
    token = keyring.sign(claims(now), typ="application/at+jwt")
    assert verify_access_token(keyring, ISSUER, token, now=now) == claims(now)


def test_not_a_jwt(keyring: KeyRing, now: int) -> None:
    assert signature_check(rejected(keyring, "not-a-jwt", now)) == "DecodeError"


# --- verify_access_token: claims --------------------------------------------------------------


def test_wrong_issuer(keyring: KeyRing, now: int) -> None:
    token = keyring.sign(claims(now, iss="https://other-as.example"), typ="at+jwt")
    assert rejected(keyring, token, now).reason == "iss"


def test_missing_issuer(keyring: KeyRing, now: int) -> None:
    token = keyring.sign(claims(now, iss=None), typ="at+jwt")
    assert rejected(keyring, token, now).reason == "iss"


def test_exp_without_leeway_is_expired_at_exactly_exp(keyring: KeyRing, now: int) -> None:
    token = issue_access_token(keyring, ISSUER, ctx(ttl=300), now=now).value
    assert verify_access_token(keyring, ISSUER, token, now=now + 299, leeway=0)["exp"] == \
        now + 300
    assert rejected(keyring, token, now + 300, leeway=0).reason == "expired"


def test_exp_with_the_default_leeway(keyring: KeyRing, now: int) -> None:
    """JWT_LEEWAY seconds of clock skew past `exp`, and not one more."""
    token = issue_access_token(keyring, ISSUER, ctx(ttl=300), now=now).value
    exp = now + 300
    verify_access_token(keyring, ISSUER, token, now=exp + JWT_LEEWAY - 1)
    assert rejected(keyring, token, exp + JWT_LEEWAY).reason == "expired"


def test_iat_in_the_future_beyond_the_leeway(keyring: KeyRing, now: int) -> None:
    at_edge = keyring.sign(claims(now, iat=now + JWT_LEEWAY), typ="at+jwt")
    verify_access_token(keyring, ISSUER, at_edge, now=now)
    beyond = keyring.sign(claims(now, iat=now + JWT_LEEWAY + 1), typ="at+jwt")
    assert rejected(keyring, beyond, now).reason == "iat in the future"
    assert rejected(keyring, at_edge, now, leeway=0).reason == "iat in the future"


@pytest.mark.parametrize("overrides", [
    {"exp": None}, {"iat": None}, {"exp": "1800000300"}, {"iat": 1_800_000_000.5},
    {"exp": None, "iat": None},
], ids=["no-exp", "no-iat", "exp-string", "iat-float", "neither"])
def test_exp_and_iat_must_be_integers(keyring: KeyRing, now: int,
                                      overrides: dict[str, Any]) -> None:
    token = keyring.sign(claims(now, **overrides), typ="at+jwt")
    assert rejected(keyring, token, now).reason == "claims"


@pytest.mark.parametrize("name", ["sub", "jti", "client_id"])
@pytest.mark.parametrize("value", [None, 7, ["x"]], ids=["missing", "number", "list"])
def test_sub_jti_client_id_must_be_strings(keyring: KeyRing, now: int, name: str,
                                           value: Any) -> None:
    token = keyring.sign(claims(now, **{name: value}), typ="at+jwt")
    assert rejected(keyring, token, now).reason == "claims"


def test_audience_is_left_to_the_caller(keyring: KeyRing, now: int) -> None:
    """verify_access_token does not check `aud` (nor `nbf`): each caller checks the audience
    it serves (the gateway, introspection, the agent exchange)."""
    token = keyring.sign(claims(now, aud="https://anyone.example", nbf=now + 3600),
                         typ="at+jwt")
    assert verify_access_token(keyring, ISSUER, token, now=now)["aud"] == \
        "https://anyone.example"


# --- check_token_live (SQLite and PostgreSQL) -------------------------------------------------


def test_live_user_token(db: Database, now: int) -> None:
    live(db, claims(now))


def test_live_client_token_needs_no_user(db: Database, now: int) -> None:
    """A client-credentials token (sub = client_id) has no user to check."""
    live(db, claims(now, sub=AGENT))


def test_revoked_jti(db: Database, now: int) -> None:
    token = claims(now)
    with db.session() as s:
        revoke_access_token(s, token)
        revoke_access_token(s, token)  # idempotent: once is enough, twice is no error
    assert not_live(db, token) == "revoked"
    with db.session() as s:
        [row] = s.scalars(select(RevokedToken)).all()
        assert (row.jti, row.expires_at) == ("jti-1", now + 300)
    live(db, claims(now, jti="jti-2"))


def test_revoked_client_token(db: Database, now: int) -> None:
    token = claims(now, sub=AGENT)
    with db.session() as s:
        revoke_access_token(s, token)
    assert not_live(db, token) == "revoked"


def test_grant_live(db: Database, now: int) -> None:
    with db.session() as s:
        s.add(Grant(id="grant-1", client_id=AGENT, user_id=USER_ID, created_at=now))
    live(db, claims(now, gid="grant-1"))


def test_grant_revoked(db: Database, now: int) -> None:
    with db.session() as s:
        s.add(Grant(id="grant-1", client_id=AGENT, user_id=USER_ID, created_at=now,
                    revoked_at=now + 1))
    assert not_live(db, claims(now, gid="grant-1")) == "grant revoked"


def test_grant_deleted(db: Database, now: int) -> None:
    assert not_live(db, claims(now, gid="no-such-grant")) == "grant revoked"


def test_client_deleted(db: Database, now: int) -> None:
    assert not_live(db, claims(now, client_id="agent-gone")) == "client deleted"
    assert not_live(db, claims(now, sub="agent-gone", client_id="agent-gone")) == \
        "client deleted"


def test_user_unknown(db: Database, now: int) -> None:
    assert not_live(db, claims(now, sub="usr_nobody")) == "user inactive"


def test_user_disabled(db: Database, now: int) -> None:
    with db.session() as s:
        s.get(User, USER_ID).active = False  # type: ignore[union-attr]
    assert not_live(db, claims(now)) == "user inactive"


def test_user_revocation_epoch_at_and_after_iat(db: Database, now: int) -> None:
    """Deprovisioning sets tokens_valid_after: a token issued at or before it is dead."""
    with db.session() as s:
        s.get(User, USER_ID).tokens_valid_after = now  # type: ignore[union-attr]
    epoch = "issued before the user's revocation epoch"
    assert not_live(db, claims(now - 1)) == epoch
    assert not_live(db, claims(now)) == epoch
    live(db, claims(now + 1))


def test_epoch_argument_overrides_a_lower_stored_epoch(db: Database, now: int) -> None:
    epoch = "issued before the user's revocation epoch"
    assert not_live(db, claims(now), epoch=now) == epoch
    live(db, claims(now + 1), epoch=now)
    live(db, claims(now), epoch=0)


def test_epoch_argument_never_lowers_the_stored_epoch(db: Database, now: int) -> None:
    """The caller's epoch (from the store) may be stale: the database's later one holds."""
    with db.session() as s:
        s.get(User, USER_ID).tokens_valid_after = now  # type: ignore[union-attr]
    assert not_live(db, claims(now), epoch=now - 100) == \
        "issued before the user's revocation epoch"


def test_epoch_does_not_apply_to_client_tokens(db: Database, now: int) -> None:
    live(db, claims(now, sub=AGENT), epoch=now + 100)


def test_user_withdrew_the_client_agent(db: Database, now: int) -> None:
    with db.session() as s:
        s.add(AgentRevocation(user_id=USER_ID, agent_id=AGENT, revoked_before=now))
    assert not_live(db, claims(now)) == "the user withdrew this agent"
    live(db, claims(now + 1))


def test_user_withdrew_an_agent_in_the_act_chain(db: Database, now: int) -> None:
    """Withdrawing the agent that delegated stops the agents it delegated to."""
    with db.session() as s:
        s.add(AgentRevocation(user_id=USER_ID, agent_id="agent-0", revoked_before=now))
    chain = {"sub": AGENT, "act": {"sub": "agent-0"}}
    assert not_live(db, claims(now, act=chain)) == "the user withdrew this agent"
    live(db, claims(now, act={"sub": AGENT, "act": {"sub": "agent-9"}}))


def test_another_users_withdrawal_does_not_apply(db: Database, now: int) -> None:
    with db.session() as s:
        s.add(User(id="usr_bob", idp_issuer="https://idp.example", idp_subject="bob",
                   created_at=now))
        s.flush()
        s.add(AgentRevocation(user_id="usr_bob", agent_id=AGENT, revoked_before=now))
    live(db, claims(now))
    assert not_live(db, claims(now, sub="usr_bob")) == "the user withdrew this agent"


@pytest.mark.parametrize("act", [
    "agent-0", {"act": {"sub": "agent-0"}}, {"sub": 7}, {"sub": AGENT, "act": ["agent-0"]},
], ids=["string", "no-sub", "sub-number", "nested-list"])
def test_malformed_act_chain(db: Database, now: int, act: Any) -> None:
    assert not_live(db, claims(now, act=act)) == "claims"


def test_act_chain_length_bound(db: Database, now: int) -> None:
    def chain(n: int) -> dict[str, Any]:
        act: dict[str, Any] | None = None
        for i in range(n):
            act = {"sub": f"agent-{i}", **({"act": act} if act else {})}
        assert act is not None
        return act

    live(db, claims(now, act=chain(MAX_ACT_CHAIN)))
    assert not_live(db, claims(now, act=chain(MAX_ACT_CHAIN + 1))) == "claims"


def test_checks_run_in_order_revoked_first(db: Database, now: int) -> None:
    """A token failing several checks reports the first: a revoked jti, before its grant,
    client or user (each reason above was asserted alone)."""
    token = claims(now, gid="no-such-grant", client_id="agent-gone", sub="usr_nobody")
    with db.session() as s:
        revoke_access_token(s, token)
    assert not_live(db, token) == "revoked"
    assert not_live(db, {**token, "jti": "jti-2"}) == "grant revoked"
    assert not_live(db, {**token, "jti": "jti-2", "gid": None}) == "client deleted"


def test_keyring_fixture_has_one_key(keyring: KeyRing, now: int) -> None:
    with keyring._db.session() as s:
        assert len(s.scalars(select(SigningKey)).all()) == 1


# --- issue 18: one statement for the checks, the session's own objects ------------------------


def statements_of(db: Database) -> list[str]:
    """The statements `db`'s engine sends from now on (until the engine is disposed)."""
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(" ".join(statement.split())))
    return seen


#: How the liveness statement starts (tokens.liveness_select): the jti, the withdrawals, then
#: the user outer-joined.
LIVENESS = "SELECT EXISTS (SELECT * FROM revoked_tokens"


def one_statement_refusal(db: Database, token_claims: dict[str, Any], **kw: Any) -> str:
    """`not_live`, and that the refusal took exactly one statement: the liveness one."""
    seen = statements_of(db)
    reason = not_live(db, token_claims, **kw)
    assert len(seen) == 1 and seen[0].startswith(LIVENESS), seen
    return reason


def test_a_user_token_is_checked_in_one_statement(db: Database, now: int) -> None:
    """The jti, the user and the withdrawals in one SELECT (the client is the caller's to
    answer here); its user row comes back, the session's own object (the same one
    `Session.get` then answers with, no SELECT)."""
    seen = statements_of(db)
    with db.session() as s:
        user = check_token_live(s, claims(now, act={"sub": "agent-0"}),
                                client_exists=lambda _c: True)
        assert len(seen) == 1 and seen[0].startswith(LIVENESS), seen
        assert "LEFT OUTER JOIN users" in seen[0]
        assert user is not None and user.id == USER_ID and s.get(User, USER_ID) is user
        assert len(seen) == 1, seen
    with db.session() as s:
        held = s.get(User, USER_ID)
        seen.clear()
        assert check_token_live(s, claims(now), client_exists=lambda _c: True) is held
        assert len(seen) == 1, seen


def test_a_client_token_reads_only_its_jti(db: Database, now: int) -> None:
    seen = statements_of(db)
    live(db, claims(now, sub=AGENT), client_exists=lambda _c: True)
    assert len(seen) == 1 and "FROM revoked_tokens" in seen[0], seen
    assert "users" not in seen[0] and "agent_revocations" not in seen[0], seen


def test_one_statement_refuses_a_revoked_jti(db: Database, now: int) -> None:
    with db.session() as s:
        revoke_access_token(s, claims(now))
    assert one_statement_refusal(db, claims(now), client_exists=lambda _c: True) == "revoked"


def test_one_statement_refuses_a_revoked_jti_of_a_missing_user(db: Database, now: int) -> None:
    """No user row: the statement still answers for the jti, refused first."""
    token = claims(now, sub="usr_nobody")
    with db.session() as s:
        revoke_access_token(s, token)
    assert one_statement_refusal(db, token, client_exists=lambda _c: True) == "revoked"


def test_one_statement_refuses_a_missing_user(db: Database, now: int) -> None:
    assert one_statement_refusal(db, claims(now, sub="usr_nobody"),
                                 client_exists=lambda _c: True) == "user inactive"


def test_one_statement_refuses_an_inactive_user(db: Database, now: int) -> None:
    with db.session() as s:
        s.get(User, USER_ID).active = False  # type: ignore[union-attr]
    assert one_statement_refusal(db, claims(now), client_exists=lambda _c: True) == \
        "user inactive"


def test_one_statement_refuses_a_token_before_the_users_epoch(db: Database, now: int) -> None:
    with db.session() as s:
        s.get(User, USER_ID).tokens_valid_after = now  # type: ignore[union-attr]
    assert one_statement_refusal(db, claims(now), client_exists=lambda _c: True) == \
        "issued before the user's revocation epoch"


def test_one_statement_refuses_a_withdrawn_agent(db: Database, now: int) -> None:
    """The latest withdrawal among the token's agents decides: one at or after iat kills it,
    whichever agent of the chain it is and however many earlier ones there are."""
    with db.session() as s:
        s.add(AgentRevocation(user_id=USER_ID, agent_id=AGENT, revoked_before=now - 10))
        s.add(AgentRevocation(user_id=USER_ID, agent_id="agent-0", revoked_before=now))
    chain = {"sub": "agent-0"}
    assert one_statement_refusal(db, claims(now, act=chain),
                                 client_exists=lambda _c: True) == "the user withdrew this agent"
    live(db, claims(now + 1, act=chain))
    live(db, claims(now))  # AGENT's own withdrawal is older than iat


def test_a_malformed_act_chain_is_refused_where_it_always_was(db: Database, now: int) -> None:
    """A malformed `act` is refused ("claims") only after the checks before the withdrawal
    check: a revoked, inactive or pre-epoch token reports that first."""
    bad = "agent-0"
    with db.session() as s:
        revoke_access_token(s, claims(now, jti="jti-revoked"))
    assert not_live(db, claims(now, jti="jti-revoked", act=bad)) == "revoked"
    assert not_live(db, claims(now, act=bad, sub="usr_nobody")) == "user inactive"
    assert not_live(db, claims(now, act=bad), epoch=now) == \
        "issued before the user's revocation epoch"
    assert not_live(db, claims(now, act=bad)) == "claims"


def test_a_pending_revocation_counts_in_one_statement(db: Database, now: int) -> None:
    """What the same session just revoked is flushed before the one statement and counts."""
    seen = statements_of(db)
    with db.session() as s:
        revoke_access_token(s, claims(now))
        seen.clear()
        with pytest.raises(TokenNotLiveError) as caught:
            check_token_live(s, claims(now), client_exists=lambda _c: True)
        assert caught.value.reason == "revoked"
        selects = [q for q in seen if q.startswith("SELECT")]
        assert len(selects) == 1 and selects[0].startswith(LIVENESS), seen
        assert any(q.startswith("INSERT INTO revoked_tokens") for q in seen), seen


# A caller's own statement built on liveness_select (as authserver.gateway's): the client
# outer-joined onto the liveness row.
_WITH_CLIENT = liveness_select(Client.client_id).outerjoin(
    Client, Client.client_id == bindparam("client_id"))


def read_ahead(s: Any, token_claims: dict[str, Any]) -> tuple[LivenessRead, bool]:
    params = liveness_params(token_claims)
    row = s.execute(_WITH_CLIENT, {**params, "client_id": token_claims["client_id"]}).one()
    return liveness_read(params, row), row[3] is not None


@pytest.mark.parametrize("case", ["live", "revoked", "client deleted", "user missing",
                                  "user inactive", "epoch", "withdrawn"])
def test_a_read_ahead_decides_as_the_default_does(db: Database, now: int, case: str) -> None:
    """`check_token_live(read=...)` with the caller's one statement: the same verdicts, in the
    same order, and no statement of its own."""
    token = claims(now, sub="usr_nobody" if case == "user missing" else USER_ID,
                   client_id="agent-gone" if case == "client deleted" else AGENT)
    with db.session() as s:
        user = s.get(User, USER_ID)
        assert user is not None
        if case == "revoked":
            revoke_access_token(s, token)
        user.active = case != "user inactive"
        user.tokens_valid_after = now if case == "epoch" else 0
        if case == "withdrawn":
            s.add(AgentRevocation(user_id=USER_ID, agent_id=AGENT, revoked_before=now))
    expected = {"live": None, "revoked": "revoked", "client deleted": "client deleted",
                "user missing": "user inactive", "user inactive": "user inactive",
                "epoch": "issued before the user's revocation epoch",
                "withdrawn": "the user withdrew this agent"}[case]
    assert (not_live(db, token) if expected else live(db, token)) == expected
    seen = statements_of(db)
    with db.session() as s:
        read, client_found = read_ahead(s, token)
        seen.clear()
        try:
            result = check_token_live(s, token, read=read,
                                      client_exists=lambda _c: client_found)
        except TokenNotLiveError as e:
            assert e.reason == expected
        else:
            assert expected is None and result is read.user and result is not None
        assert seen == [], seen


def test_a_read_ahead_for_other_claims_is_not_used(db: Database, now: int) -> None:
    """A `read` made for another jti (or user, or agents) is not trusted: the checks read
    their own."""
    with db.session() as s:
        revoke_access_token(s, claims(now, jti="jti-2"))
    seen = statements_of(db)
    with db.session() as s:
        read, _found = read_ahead(s, claims(now))
        assert not read.revoked
        seen.clear()
        with pytest.raises(TokenNotLiveError) as caught:
            check_token_live(s, claims(now, jti="jti-2"), read=read,
                             client_exists=lambda _c: True)
        assert caught.value.reason == "revoked"
        assert len(seen) == 1 and seen[0].startswith(LIVENESS), seen
        read, _found = read_ahead(s, claims(now))
        seen.clear()
        check_token_live(s, claims(now, act={"sub": "agent-0"}), read=read,
                         client_exists=lambda _c: True)
        assert len(seen) == 1, seen


def test_a_database_error_propagates(db: Database, now: int) -> None:
    """Fail closed: a failed read is an error, never a verdict either way."""
    AgentRevocation.__table__.drop(db.engine)
    with db.session() as s, pytest.raises(DBAPIError):
        check_token_live(s, claims(now), client_exists=lambda _c: True)


def test_revocations_and_deactivation_pending_in_the_session_count(db: Database,
                                                                   now: int) -> None:
    """The checks read through the session (autoflush): what the same unit of work just
    revoked, withdrew or deactivated is already dead."""
    with db.session() as s:
        revoke_access_token(s, claims(now))
        with pytest.raises(TokenNotLiveError) as caught:
            check_token_live(s, claims(now))
        assert caught.value.reason == "revoked"
        s.add(AgentRevocation(user_id=USER_ID, agent_id=AGENT, revoked_before=now))
        with pytest.raises(TokenNotLiveError) as caught:
            check_token_live(s, claims(now, jti="jti-2"))
        assert caught.value.reason == "the user withdrew this agent"
        s.get(User, USER_ID).active = False  # type: ignore[union-attr]
        with pytest.raises(TokenNotLiveError) as caught:
            check_token_live(s, claims(now, jti="jti-3"))
        assert caught.value.reason == "user inactive"
