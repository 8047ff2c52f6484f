"""Shared Signals receiver (OpenID SSF 1.0, CAEP 1.0, RISC 1.0; RFC 8417, RFC 8935;
docs/standards.md SSF-01..08): the test IdP, as its own transmitter, pushes SETs to
`/ssf/events/corp`; each event does what it says, and every malformed or foreign SET is
refused with its RFC 8935 error code and changes nothing."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from authserver import ssf
from authserver.identity.federation import IdPConfig
from tests.conftest import REDIS_URL, fresh_postgres_database
from tests.stack import Stack, correlation, make_stack

AUD = "https://authserver.test/ssf-receiver"
IDP = "corp"
TRANSMITTER_TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("ssf"), idp_settings={"ssf_audience": AUD})
    yield s
    s.close()


def push(stack: Stack, token: str, *, idp: str = IDP, bearer: str | None = None,
         content_type: str = ssf.MEDIA_TYPE, base_url: str | None = None,
         request_id: str | None = None) -> requests.Response:
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return requests.post(f"{base_url or stack.issuer}/ssf/events/{idp}", data=token,
                         headers=headers, timeout=30)


def a_set(stack: Stack, event_type: str, event: dict[str, Any] | None = None,
          username: str | None = "alice", **kw: Any) -> str:
    return stack.idp.mint_set(event_type, event, aud=AUD, username=username, **kw)


def accepted(stack: Stack, token: str, **kw: Any) -> dict[str, Any]:
    """Push, expect 202 with no body, and return the audit record of that push."""
    cid = correlation()
    resp = push(stack, token, request_id=cid, **kw)
    assert resp.status_code == 202, resp.text
    assert resp.content == b""
    records = [r for r in stack.audit_for(cid) if r["event"] == "ssf_event"]
    assert len(records) == 1, records
    return records[0]


def assert_refused(resp: requests.Response, err: str, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["err"] == err, body
    assert isinstance(body["description"], str) and body["description"]
    return body  # type: ignore[no-any-return]


def user(stack: Stack, username: str) -> Any:
    from authserver.models import User

    with stack.services.db.session() as session:
        row = session.get(User, stack.user_id(username))
        session.expunge(row)
        return row


def bystander(stack: Stack) -> str:
    """A user no event in this module is about (signed in once)."""
    if "zoe" not in stack.idp.users:
        stack.idp.users["zoe"] = {"sub": "00u9zoe", "email": "zoe@acme.example",
                                  "tenant": "acme"}
        stack.browser("zoe")
    return "zoe"


def signed_in(stack: Stack, browser: requests.Session) -> bool:
    from urllib.parse import urlsplit

    resp = browser.get(stack.issuer + "/connections", timeout=30)
    return resp.status_code == 200 and urlsplit(resp.url).path == "/connections"


# --- each event -------------------------------------------------------------------------------


def test_verification_event_is_accepted_and_audited(stack: Stack) -> None:
    token = a_set(stack, ssf.VERIFICATION, {"state": "c3RhdGU"}, username=None,
                  sub_id={"format": "opaque", "id": "stream-1"})
    record = accepted(stack, token)
    assert record["outcome"] == "allowed" and record["user_id"] is None
    assert record["detail"]["action"] == "verification"
    assert record["detail"]["stream_id"] == "stream-1"
    assert record["detail"]["idp"] == IDP


def test_session_revoked_ends_sessions_and_revokes_the_agents_tokens_and_grants(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from authserver.models import Grant

    browser = stack.signed_in_and_connected("alice")
    assertion, key = stack.edge_mint("alice")
    assert stack.agent_exchange(assertion, key).status_code == 200
    grant_id = "g_" + secrets.token_hex(8)
    with stack.services.db.session() as session:
        session.add(Grant(id=grant_id, client_id=stack.agent.client_id,
                          user_id=stack.user_id("alice"), scope="read",
                          created_at=stack.clock()))

    record = accepted(stack, a_set(stack, ssf.SESSION_REVOKED, {
        "initiating_entity": "policy", "reason_admin": {"en": "Landspeed"},
        "event_timestamp": stack.clock()}))

    assert record["outcome"] == "revoked" and record["user_id"] == stack.user_id("alice")
    assert record["detail"]["grants_revoked"] >= 1
    again = stack.agent_exchange(assertion, key)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    assert not signed_in(stack, browser)
    with stack.services.db.session() as session:
        assert session.get(Grant, grant_id).revoked_at is not None  # type: ignore[union-attr]
    # The user is not deprovisioned: after this second, she and her agent carry on.
    assert user(stack, "alice").active
    stack.shift_clock(monkeypatch, 2)
    fresh, fresh_key = stack.edge_mint("alice")
    assert stack.agent_exchange(fresh, fresh_key).status_code == 200


def test_credential_change_ends_sessions_only(stack: Stack) -> None:
    browser = stack.signed_in_and_connected("bob")
    assertion, key = stack.edge_mint("bob")
    subject = {"format": "complex",
               "user": {"format": "iss_sub", "iss": stack.idp.issuer,
                        "sub": stack.idp.users["bob"]["sub"]},
               "device": {"format": "opaque", "id": "laptop-7"}}
    record = accepted(stack, a_set(stack, ssf.CREDENTIAL_CHANGE, {
        "credential_type": "password", "change_type": "update"}, username=None,
        sub_id=subject))
    assert record["detail"]["action"] == "credential_change"
    assert record["user_id"] == stack.user_id("bob")
    assert not signed_in(stack, browser)
    assert stack.agent_exchange(assertion, key).status_code == 200


def test_token_claims_change_refreshes_the_mapped_attributes(stack: Stack) -> None:
    stack.browser("carol")
    before = user(stack, "carol")
    record = accepted(stack, a_set(stack, ssf.TOKEN_CLAIMS_CHANGE, {
        "claims": {"roles": ["auditor"], "groups": ["it"], "trusted_network": False}},
        username=None, sub_id={"format": "email", "email": "CAROL@acme.example"}))
    assert record["detail"]["attributes"] == ["groups", "roles"]
    after = user(stack, "carol")
    assert after.roles == ["auditor"] and after.groups == ["it"]
    assert after.email == before.email and after.tenant == before.tenant


def test_token_claims_change_with_an_unacceptable_claim_changes_nothing(stack: Stack) -> None:
    stack.browser("carol")
    before = user(stack, "carol")
    token = a_set(stack, ssf.TOKEN_CLAIMS_CHANGE, {"claims": {"roles": [7]}}, username="carol")
    assert_refused(push(stack, token), "invalid_request")
    assert user(stack, "carol").roles == before.roles
    # Not acted on, so not spent: the same SET is refused for its claim again, not as a replay.
    body = assert_refused(push(stack, token), "invalid_request")
    assert "already" not in body["description"]


def test_account_purged_deprovisions_and_account_enabled_reenables(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.idp.users["dave"] = {"sub": "00u4dave", "email": "dave@acme.example",
                               "name": "Dave", "tenant": "acme"}
    stack.browser("dave")
    stack.freeze_clock(monkeypatch)  # the purge and the first enable in one second
    record = accepted(stack, a_set(stack, ssf.ACCOUNT_PURGED, username="dave"))
    assert record["outcome"] == "revoked"
    assert not user(stack, "dave").active
    with pytest.raises(AssertionError):
        stack.browser("dave")
    # An enable from the second of the deprovisioning (or before) never undoes it.
    record = accepted(stack, a_set(stack, ssf.ACCOUNT_ENABLED, username="dave"))
    assert record["reason"] == "older_than_deprovisioning"
    assert not user(stack, "dave").active
    stack.shift_clock(monkeypatch, 2)
    record = accepted(stack, a_set(stack, ssf.ACCOUNT_ENABLED, username="dave"))
    assert record["reason"] is None and user(stack, "dave").active
    stack.browser("dave")


def test_account_disabled_by_a_legacy_event_subject(stack: Stack) -> None:
    stack.idp.users["erin"] = {"sub": "00u5erin", "email": "erin@acme.example",
                               "tenant": "acme"}
    stack.browser("erin")
    token = a_set(stack, ssf.ACCOUNT_DISABLED, {
        "reason": "hijacking",
        "subject": {"format": "opaque", "id": "00u5erin"}}, username=None)
    record = accepted(stack, token)
    assert record["outcome"] == "revoked" and record["user_id"] == stack.user_id("erin")
    assert not user(stack, "erin").active
    again = accepted(stack, a_set(stack, ssf.ACCOUNT_DISABLED, username="erin"))
    assert again["reason"] == "already_deprovisioned"


def test_an_event_type_we_do_not_act_on_is_accepted_and_changes_nothing(stack: Stack) -> None:
    name = bystander(stack)
    record = accepted(stack, a_set(
        stack, "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change",
        {"previous_status": "compliant", "current_status": "not-compliant"}, username=name))
    assert record["reason"] == "unsupported_event" and record["outcome"] == "allowed"
    assert "action" not in record["detail"]
    assert user(stack, name).active


@pytest.mark.parametrize("subject", [
    {"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "00u9zoe"},
    {"format": "iss_sub", "iss": "ISSUER", "sub": "nobody"},
    {"format": "email", "email": "nobody@acme.example"},
    {"format": "phone_number", "phone_number": "+1 206 555 0123"},
])
def test_an_unknown_subject_is_accepted_and_nothing_changes(stack: Stack,
                                                            subject: dict[str, Any]) -> None:
    name = bystander(stack)
    if subject.get("iss") == "ISSUER":
        subject = {**subject, "iss": stack.idp.issuer}
    record = accepted(stack, a_set(stack, ssf.ACCOUNT_DISABLED, username=None, sub_id=subject))
    assert record["user_id"] is None
    assert record["reason"] in ("unknown_subject", "unsupported_subject")
    assert user(stack, name).active


# --- each refusal -----------------------------------------------------------------------------


def _refusals(stack: Stack, name: str) -> dict[str, tuple[str, str]]:
    """Each an account-disabled SET about `name`, wrong in one way (or not a SET at all)."""
    idp, now, d = stack.idp, stack.clock(), ssf.ACCOUNT_DISABLED

    def a_set(stack: Stack, event_type: str, event: dict[str, Any] | None = None,
              username: str | None = name, **kw: Any) -> str:
        return idp.mint_set(event_type, event, aud=AUD, username=username, **kw)

    return {
        "bad signature": (a_set(stack, d, sign_with=idp.foreign_key()), "invalid_key"),
        "unknown kid": (a_set(stack, d, header={"kid": "no-such-key"}), "invalid_key"),
        "wrong iss": (a_set(stack, d, extra={"iss": "https://evil.example"}),
                      "invalid_issuer"),
        "wrong aud": (idp.mint_set(d, aud="https://someone-else.example", username=name),
                      "invalid_audience"),
        "stale iat": (a_set(stack, d, iat=now - ssf.SET_MAX_AGE - 1), "invalid_request"),
        "future iat": (a_set(stack, d, iat=now + 3600), "invalid_request"),
        "no iat": (a_set(stack, d, extra={"iat": None}), "invalid_request"),
        "no jti": (a_set(stack, d, extra={"jti": None}), "invalid_request"),
        "wrong typ": (a_set(stack, d, header={"typ": "JWT"}), "invalid_request"),
        "no typ": (a_set(stack, d, header={"typ": None}), "invalid_request"),
        "exp present": (a_set(stack, d, extra={"exp": now + 60}), "invalid_request"),
        "sub present": (a_set(stack, d, extra={"sub": "00u9zoe"}), "invalid_request"),
        "no sub_id": (a_set(stack, d, username=None), "invalid_request"),
        "two events": (a_set(stack, d, extra={"events": {d: {}, ssf.ACCOUNT_ENABLED: {}}}),
                       "invalid_request"),
        "empty events": (a_set(stack, d, extra={"events": {}}), "invalid_request"),
        "event not an object": (a_set(stack, d, extra={"events": {d: "yes"}}),
                                "invalid_request"),
        "credential-change without change_type": (
            a_set(stack, ssf.CREDENTIAL_CHANGE, {"credential_type": "password"}),
            "invalid_request"),
        "token-claims-change without claims": (a_set(stack, ssf.TOKEN_CLAIMS_CHANGE),
                                               "invalid_request"),
        "verification with a user subject": (a_set(stack, ssf.VERIFICATION),
                                             "invalid_request"),
        "not a JWT": ("not-a-jwt", "invalid_request"),
    }


def test_each_refusal_has_its_error_code_and_changes_nothing(stack: Stack) -> None:
    name = bystander(stack)
    before = len([r for r in stack.audit(1000) if r["event"] == "ssf_event"])
    for case, (token, err) in _refusals(stack, name).items():
        body = assert_refused(push(stack, token), err)
        assert body, case
    assert user(stack, name).active
    after = len([r for r in stack.audit(1000) if r["event"] == "ssf_event"])
    assert after == before  # refusals are counted and logged, never audited


def test_alg_none_and_hmac_are_refused(stack: Stack) -> None:
    import base64
    import hmac as hmac_

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = b64(b'{"iss":"%s","aud":"%s","jti":"x","iat":%d,"events":{}}' % (
        stack.idp.issuer.encode(), AUD.encode(), stack.clock()))
    unsigned = b64(b'{"alg":"none","typ":"secevent+jwt"}') + "." + payload + "."
    assert_refused(push(stack, unsigned), "invalid_request")
    head = b64(b'{"alg":"HS256","typ":"secevent+jwt"}')
    mac = hmac_.new(b"k", f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert_refused(push(stack, f"{head}.{payload}.{b64(mac)}"), "invalid_request")


def test_a_replayed_set_is_refused(stack: Stack) -> None:
    token = a_set(stack, ssf.VERIFICATION, username=None,
                  sub_id={"format": "opaque", "id": "stream-1"})
    assert push(stack, token).status_code == 202
    body = assert_refused(push(stack, token), "invalid_request")
    assert "already" in body["description"]


def test_wrong_content_type_is_refused(stack: Stack) -> None:
    token = a_set(stack, ssf.VERIFICATION, username=None,
                  sub_id={"format": "opaque", "id": "stream-1"})
    assert_refused(push(stack, token, content_type="application/json"), "invalid_request")
    assert push(stack, token).status_code == 202  # not spent by the refusal


def test_no_receiver_for_an_unknown_idp(stack: Stack) -> None:
    token = a_set(stack, ssf.VERIFICATION, username=None,
                  sub_id={"format": "opaque", "id": "stream-1"})
    assert_refused(push(stack, token, idp="other"), "invalid_request", 404)


def test_no_receiver_without_ssf_audience(tmp_path: Path) -> None:
    s = make_stack(tmp_path)
    try:
        token = s.idp.mint_set(ssf.VERIFICATION, aud=AUD,
                               sub_id={"format": "opaque", "id": "stream-1"})
        assert_refused(push(s, token), "invalid_request", 404)
    finally:
        s.close()


# --- the transmitter's bearer token, and a transmitter that is not the IdP ---------------------


def test_bearer_token_of_the_transmitter(tmp_path: Path) -> None:
    s = make_stack(tmp_path, idp_settings={
        "ssf_audience": AUD,
        "ssf_token_sha256": hashlib.sha256(TRANSMITTER_TOKEN.encode()).hexdigest()})
    try:
        def token() -> str:
            return s.idp.mint_set(ssf.VERIFICATION, aud=AUD,
                                  sub_id={"format": "opaque", "id": "stream-1"})

        assert_refused(push(s, token()), "authentication_failed")
        assert_refused(push(s, token(), bearer="wrong"), "authentication_failed")
        assert_refused(push(s, token(), bearer=TRANSMITTER_TOKEN + "x"),
                       "authentication_failed")
        assert push(s, token(), bearer=TRANSMITTER_TOKEN).status_code == 202
    finally:
        s.close()


def test_a_transmitter_with_its_own_issuer_and_jwks_uri(tmp_path: Path) -> None:
    transmitter = "https://transmitter.acme.example"
    s = make_stack(tmp_path, idp_settings={"ssf_audience": AUD, "ssf_issuer": transmitter})
    try:
        def instance(jwks_path: str) -> str:
            s.settings = {**s.settings, "idps": {IDP: {
                **s.settings["idps"][IDP], "ssf_jwks_uri": s.idp.issuer + jwks_path}}}
            return s.second_instance()

        s.browser("alice")

        def token(**kw: Any) -> str:
            return s.idp.mint_set(ssf.ACCOUNT_DISABLED, aud=AUD, username="alice", **kw)

        # The keys come from ssf_jwks_uri: where nothing is served, nothing verifies (503).
        assert push(s, token(extra={"iss": transmitter}),
                    base_url=instance("/no-keys-here")).status_code == 503
        base = instance("/jwks")
        assert_refused(push(s, token(), base_url=base), "invalid_issuer")  # the IdP's iss
        assert push(s, token(extra={"iss": transmitter}), base_url=base).status_code == 202
        assert not user(s, "alice").active
    finally:
        s.close()


@pytest.mark.parametrize(("settings", "message"), [
    ({"ssf_issuer": "https://t.example"}, "need ssf_audience"),
    ({"ssf_audience": AUD, "ssf_token_sha256": "abc"}, "64 lower-case hex"),
    ({"ssf_audience": AUD, "ssf_jwks_uri": "http://keys.example/jwks"}, "must be https"),
    ({"ssf_audience": 7}, "must be a string"),
])
def test_ssf_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    base = {"issuer": "https://idp.example", "client_id": "c", "client_secret": "s"}
    with pytest.raises(ValueError, match=message):
        IdPConfig.from_settings("corp", {**base, **settings})


# --- across instances -------------------------------------------------------------------------


@pytest.fixture
def shared_stack(tmp_path: Path) -> Iterator[Stack]:
    with fresh_postgres_database() as database_url:
        s = make_stack(tmp_path, database_url=database_url, redis_url=REDIS_URL,
                       idp_settings={"ssf_audience": AUD})
        try:
            yield s
        finally:
            s.close()


@pytest.mark.services
def test_account_disabled_kills_tokens_on_another_instance(shared_stack: Stack) -> None:
    stack = shared_stack
    stack.signed_in_and_connected("alice", ("crm", "projects"))
    other = stack.second_instance()
    assertion, key = stack.edge_mint("alice")
    cap = stack.agent_exchange(assertion, key, base_url=other)
    assert cap.status_code == 200, cap.text
    capability = cap.json()["access_token"]
    assert stack.gateway(capability, key, "GET", "crm/deals/acme-123",
                         base_url=other).status_code == 200
    revoked_before = stack.crm.stats["revoked"]

    token = a_set(stack, ssf.ACCOUNT_DISABLED, {"reason": "hijacking"})
    record = accepted(stack, token)
    assert record["outcome"] == "revoked"

    again = stack.agent_exchange(assertion, key, base_url=other)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    call = stack.gateway(capability, key, "GET", "crm/deals/acme-123", base_url=other)
    assert call.status_code == 401
    assert stack.crm.stats["revoked"] == revoked_before + 1
    assert stack.crm.stats["active_grants"] == 0
    # The other instance shares the replay store: the same SET is not taken twice.
    assert_refused(push(stack, token, base_url=other), "invalid_request")


def test_replay_entries_hide_what_they_key() -> None:
    from authserver.store import keys

    key = keys.ssf_set("https://idp.example", "jti-1")
    assert key.startswith("ssf-set:") and "ssf-set" in keys.FAMILIES
    assert "jti-1" not in key and "idp.example" not in key
    assert key != keys.ssf_set("https://idp.example", "jti-2")
