"""Shared Signals streams, the receiver's side (OpenID SSF 1.0 §7, §8.1; docs/standards.md
SSF-09..11): a push stream registered at the test IdP's transmitter, verified with a state we
remember, and its status (enabled, paused, disabled) as the transmitter reports it: by the
stream-updated event or its status endpoint. On a disabled stream, SETs are refused
(`access_denied`) and change nothing; every status change and verification is audited with
the correlation id."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from click.testing import CliRunner

from authserver import ssf, ssf_streams
from authserver.models import SsfStream, User
from authserver.ssf_streams import StreamError
from tests.stack import Stack, correlation

AUD = "https://authserver.test/ssf-receiver"
IDP = "corp"

pytestmark = pytest.mark.stack(idp_settings={"ssf_audience": AUD})


@pytest.fixture(scope="module")
def stack(stack: Stack) -> Stack:
    """The module's stack (tests/conftest.py), its IdP's transmitter naming our audience."""
    stack.idp.ssf.audience = AUD
    return stack


def add(stack: Stack, *, token: str | None = "", cid: str | None = None, **kw: Any
        ) -> dict[str, Any]:
    args: dict[str, Any] = {
        "delivery": "push", "events": [ssf.SESSION_REVOKED, ssf.ACCOUNT_DISABLED],
        "stream_id": None, "token_env": None,
        "receiver_url": f"{stack.issuer}/ssf/events/{IDP}", **kw}
    return ssf_streams.add(stack.services, IDP,
                           token=stack.idp.ssf.management_token if token == "" else token,
                           now=stack.clock(), correlation_id=cid, **args)


@pytest.fixture(scope="module")
def stream(stack: Stack) -> dict[str, Any]:
    # The refusals first: none of them leaves a stream behind.
    with pytest.raises(StreamError, match="status 401"):
        add(stack, token="wrong-token")
    with pytest.raises(StreamError, match="delivery is push or poll"):
        add(stack, delivery="carrier-pigeon")
    with pytest.raises(StreamError, match="no Shared Signals receiver"):
        ssf_streams.add(stack.services, "nobody", delivery="push", events=[], stream_id=None,
                        token=None, token_env=None, receiver_url="x", now=stack.clock(),
                        correlation_id=None)
    stack.idp.ssf.audience = "https://someone-else.example"
    try:
        with pytest.raises(StreamError, match="aud does not name"):
            add(stack)
    finally:
        stack.idp.ssf.audience = AUD
    with pytest.raises(StreamError, match="status 404"):
        add(stack, stream_id="st_no_such_stream")
    with stack.services.db.session() as session:
        assert session.get(SsfStream, IDP) is None
    cid = correlation()
    created = add(stack, cid=cid)
    created["correlation_id"] = cid
    return created


def push(stack: Stack, token: str, request_id: str | None = None) -> requests.Response:
    headers = {"Content-Type": ssf.MEDIA_TYPE}
    if request_id:
        headers["X-Request-ID"] = request_id
    return requests.post(f"{stack.issuer}/ssf/events/{IDP}", data=token, headers=headers,
                         timeout=30)


def stream_set(stack: Stack, stream: dict[str, Any], event_type: str,
               event: dict[str, Any] | None = None, stream_id: str | None = None,
               **kw: Any) -> str:
    return stack.idp.mint_set(event_type, event, aud=AUD, sub_id={
        "format": "opaque", "id": stream_id or stream["stream_id"]}, **kw)


def events(stack: Stack, cid: str, event: str) -> list[dict[str, Any]]:
    return [r for r in stack.audit_for(cid) if r["event"] == event]


def row(stack: Stack) -> SsfStream:
    with stack.services.db.session() as session:
        found = session.get(SsfStream, IDP)
        assert found is not None
        session.expunge(found)
        return found


def test_add_creates_the_stream_at_the_transmitter_and_remembers_it(
        stack: Stack, stream: dict[str, Any]) -> None:
    at_transmitter = stack.idp.ssf.streams[stream["stream_id"]]
    assert at_transmitter["delivery"] == {"method": ssf_streams.PUSH,
                                          "endpoint_url": f"{stack.issuer}/ssf/events/{IDP}"}
    assert at_transmitter["events_requested"] == [ssf.SESSION_REVOKED, ssf.ACCOUNT_DISABLED]
    assert stream["delivery"] == "push" and stream["status"] == "enabled"
    assert stream["events_delivered"] == [ssf.SESSION_REVOKED, ssf.ACCOUNT_DISABLED]
    assert stream["verified_at"] is None and stream["poll_url"] is None
    [record] = events(stack, stream["correlation_id"], "ssf_stream")
    assert record["detail"] == {"idp": IDP, "stream_id": stream["stream_id"],
                                "action": "added"}
    # One stream per IdP; adopting the same one by its id is refused as well.
    with pytest.raises(StreamError, match="already has a stream"):
        add(stack, stream_id=stream["stream_id"])


def test_well_known_url_goes_before_the_issuers_path() -> None:
    assert ssf_streams.well_known_url("https://t.example") == \
        "https://t.example/.well-known/ssf-configuration"
    assert ssf_streams.well_known_url("https://t.example/tenant/a/") == \
        "https://t.example/.well-known/ssf-configuration/tenant/a"


def test_verify_asks_for_an_event_with_our_state_and_it_verifies(
        stack: Stack, stream: dict[str, Any]) -> None:
    cid = correlation()
    result = ssf_streams.request_verification(
        stack.services, IDP, token=stack.idp.ssf.management_token, now=stack.clock(),
        correlation_id=cid)
    # The test transmitter pushes the event before it answers, so it is already verified.
    assert result["verification_pending"] is False and result["verified_at"] is not None
    [asked] = stack.idp.ssf.verification_requests[-1:]
    assert asked["stream_id"] == stream["stream_id"] and len(asked["state"]) >= 32
    assert stack.idp.ssf.pushes[-1] == 202  # the transmitter pushed the event at once
    after = row(stack)
    assert after.verified_at is not None and after.verification_state_sha256 is None
    [record] = events(stack, cid, "ssf_stream")
    assert record["detail"]["action"] == "verification_requested"
    # The state is never stored or audited as is.
    assert asked["state"] not in str(stack.audit(1000))


def test_a_verification_event_with_another_state_verifies_nothing(
        stack: Stack, stream: dict[str, Any]) -> None:
    with stack.services.db.session() as session:
        r = session.get(SsfStream, IDP)
        assert r is not None
        r.verification_state_sha256, r.verification_requested_at = "0" * 64, stack.clock()
        r.verified_at = None
    cid = correlation()
    resp = push(stack, stream_set(stack, stream, ssf.VERIFICATION, {"state": "forged"}), cid)
    assert resp.status_code == 202 and resp.content == b""
    [record] = events(stack, cid, "ssf_event")
    assert record["reason"] == "state_mismatch" and "verified" not in record["detail"]
    assert row(stack).verified_at is None and row(stack).verification_state_sha256 == "0" * 64
    cid = correlation()
    assert push(stack, stream_set(stack, stream, ssf.VERIFICATION), cid).status_code == 202
    assert events(stack, cid, "ssf_event")[0]["reason"] == "state_mismatch"


def test_a_stream_event_for_another_stream_changes_nothing(
        stack: Stack, stream: dict[str, Any]) -> None:
    cid = correlation()
    token = stream_set(stack, stream, ssf.STREAM_UPDATED, {"status": "disabled"},
                       stream_id="st_someone_else")
    assert push(stack, token, cid).status_code == 202
    assert events(stack, cid, "ssf_event")[0]["reason"] == "unknown_stream"
    assert row(stack).status == "enabled"


def test_stream_updated_with_a_bad_status_is_refused(stack: Stack,
                                                     stream: dict[str, Any]) -> None:
    for event in ({"status": "off"}, {}, {"status": "paused", "reason": 7}):
        resp = push(stack, stream_set(stack, stream, ssf.STREAM_UPDATED, event))
        assert resp.status_code == 400 and resp.json()["err"] == "invalid_request"
        assert resp.headers["Content-Type"].startswith("application/json")
    resp = push(stack, stack.idp.mint_set(ssf.STREAM_UPDATED, {"status": "paused"}, aud=AUD,
                                          username="alice"))
    assert resp.status_code == 400 and "stream id" in resp.json()["description"]
    assert row(stack).status == "enabled"


def test_a_disabled_stream_refuses_events_until_enabled_again(
        stack: Stack, stream: dict[str, Any]) -> None:
    stack.idp.users["dora"] = {"sub": "00u7dora", "email": "dora@acme.example",
                               "tenant": "acme"}
    stack.browser("dora")
    cid = correlation()
    resp = push(stack, stream_set(stack, stream, ssf.STREAM_UPDATED,
                                  {"status": "disabled", "reason": "maintenance"}), cid)
    assert resp.status_code == 202
    [event] = events(stack, cid, "ssf_event")
    assert event["reason"] is None and event["detail"]["status"] == "disabled"
    [change] = events(stack, cid, "ssf_stream")
    assert change["detail"] == {"idp": IDP, "stream_id": stream["stream_id"],
                                "action": "status_changed", "source": "stream_updated",
                                "previous": "enabled", "status": "disabled"}
    assert row(stack).status == "disabled" and row(stack).status_reason == "maintenance"

    disable_dora = stack.idp.mint_set(ssf.ACCOUNT_DISABLED, aud=AUD, username="dora")
    refused = push(stack, disable_dora)
    assert refused.status_code == 400
    assert refused.headers["Content-Type"].startswith("application/json")
    assert refused.json()["err"] == "access_denied"
    assert "disabled" in refused.json()["description"]
    with stack.services.db.session() as session:
        assert session.get(User, stack.user_id("dora")).active  # type: ignore[union-attr]
    # The transmitter itself holds nothing back for a disabled stream: it drops the event.
    stack.idp.ssf.emit(stream["stream_id"], ssf.ACCOUNT_DISABLED, username="dora")
    with stack.services.db.session() as session:
        assert session.get(User, stack.user_id("dora")).active  # type: ignore[union-attr]

    stack.idp.ssf.set_status(stream["stream_id"], "enabled")  # pushes stream-updated
    assert stack.idp.ssf.pushes[-1] == 202
    assert row(stack).status == "enabled" and row(stack).status_reason is None
    # Refused before it was spent: the same SET is taken now.
    assert push(stack, disable_dora).status_code == 202
    with stack.services.db.session() as session:
        assert not session.get(User, stack.user_id("dora")).active  # type: ignore[union-attr]


def test_an_older_stream_updated_event_does_not_undo_a_newer_status(
        stack: Stack, stream: dict[str, Any]) -> None:
    cid = correlation()
    token = stream_set(stack, stream, ssf.STREAM_UPDATED, {"status": "disabled"},
                       iat=row(stack).status_at - 5)
    assert push(stack, token, cid).status_code == 202
    assert events(stack, cid, "ssf_event")[0]["reason"] == "older_than_status"
    assert row(stack).status == "enabled"


def test_a_paused_stream_still_acts_on_events(stack: Stack, stream: dict[str, Any]) -> None:
    stack.idp.users["paul"] = {"sub": "00u8paul", "email": "paul@acme.example",
                               "tenant": "acme"}
    stack.browser("paul")
    stack.idp.ssf.set_status(stream["stream_id"], "paused", "rate")
    assert row(stack).status == "paused"
    # Held at the transmitter while paused, delivered when it resumes, and acted on.
    stack.idp.ssf.emit(stream["stream_id"], ssf.ACCOUNT_DISABLED, username="paul")
    with stack.services.db.session() as session:
        assert session.get(User, stack.user_id("paul")).active  # type: ignore[union-attr]
    # A transmitter that sends while paused is still heard (dropping a revocation fails open).
    stack.idp.ssf.set_status(stream["stream_id"], "paused", notify=False)
    assert push(stack, stack.idp.mint_set(ssf.CREDENTIAL_CHANGE, {
        "credential_type": "password", "change_type": "update"}, aud=AUD,
        username="paul")).status_code == 202
    stack.idp.ssf.set_status(stream["stream_id"], "enabled")
    with stack.services.db.session() as session:
        assert not session.get(User, stack.user_id("paul")).active  # type: ignore[union-attr]


def test_status_refresh_reads_the_transmitters_status_endpoint(
        stack: Stack, stream: dict[str, Any]) -> None:
    stack.idp.ssf.set_status(stream["stream_id"], "paused", "quota", notify=False)
    cid = correlation()
    result = ssf_streams.refresh_status(stack.services, stream["stream_id"],
                                        token=stack.idp.ssf.management_token,
                                        now=stack.clock() + 1, correlation_id=cid)
    assert result["status"] == "paused" and result["status_reason"] == "quota"
    [change] = events(stack, cid, "ssf_stream")
    assert change["detail"]["source"] == "status_endpoint"
    assert change["detail"]["previous"] == "enabled"
    with pytest.raises(StreamError, match="status 401"):
        ssf_streams.refresh_status(stack.services, IDP, token="wrong", now=stack.clock() + 2,
                                   correlation_id=None)
    stack.idp.ssf.set_status(stream["stream_id"], "enabled", notify=False)
    assert ssf_streams.refresh_status(
        stack.services, IDP, token=stack.idp.ssf.management_token, now=stack.clock() + 2,
        correlation_id=None)["status"] == "enabled"


def test_the_cli(stack: Stack, stream: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                 ) -> None:
    import json

    from authserver import ssf_cli
    from authserver.cli import main

    monkeypatch.setattr(ssf_cli, "_services", lambda: stack.services)
    runner = CliRunner()
    listed = runner.invoke(main, ["ssf", "streams", "list"], catch_exceptions=False)
    assert listed.exit_code == 0
    assert [s["stream_id"] for s in json.loads(listed.output)] == [stream["stream_id"]]
    shown = runner.invoke(main, ["ssf", "streams", "status", IDP])
    assert shown.exit_code == 0 and json.loads(shown.output)["status"] == "enabled"
    missing = runner.invoke(main, ["ssf", "streams", "status", "nope"])
    assert missing.exit_code == 1 and "no stream 'nope'" in missing.output
    again = runner.invoke(main, ["ssf", "streams", "add", IDP])
    assert again.exit_code == 1 and "already has a stream" in again.output
    unset = runner.invoke(main, ["ssf", "streams", "add", IDP, "--token-env", "NO_SUCH_VAR"])
    assert unset.exit_code == 1 and "NO_SUCH_VAR" in unset.output
    # verify through the CLI: the token comes from the variable the stream names.
    with stack.services.db.session() as session:
        r = session.get(SsfStream, IDP)
        assert r is not None
        r.token_env = "TEST_SSF_TOKEN"
    monkeypatch.setenv("TEST_SSF_TOKEN", stack.idp.ssf.management_token)
    verified = runner.invoke(main, ["ssf", "streams", "verify", IDP], catch_exceptions=False)
    assert verified.exit_code == 0, verified.output
    out = json.loads(verified.output)
    assert out["correlation_id"].startswith("cli-") and out["verified_at"] is not None
    pushed = runner.invoke(main, ["ssf", "poll", IDP])
    assert pushed.exit_code == 1 and "push, not polled" in pushed.output
