"""Poll-based SET delivery (RFC 8936; docs/standards.md SSF-12): we poll the test IdP's
transmitter, each SET goes through the push path (the same verification, replay and acting),
accepted ones are acknowledged and refused ones reported in `setErrs` with their RFC 8935
error code, in the next request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from authserver import ssf, ssf_poll, ssf_streams
from authserver.errors import TemporarilyUnavailableError
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


@pytest.fixture(scope="module")
def stream(stack: Stack) -> dict[str, Any]:
    return ssf_streams.add(
        stack.services, IDP, delivery="poll", events=[ssf.ACCOUNT_DISABLED], stream_id=None,
        token=stack.idp.ssf.management_token, token_env=None, receiver_url="unused",
        now=stack.clock(), correlation_id=None)


def poll(stack: Stack, **kw: Any) -> tuple[ssf_poll.PollResult, str]:
    cid = correlation()
    args = {"token": stack.idp.ssf.management_token, "now": stack.clock(), **kw}
    return ssf_poll.poll_once(stack.services, IDP, correlation_id=cid, **args), cid


def queue(stack: Stack, stream: dict[str, Any], jti: str, token: str) -> None:
    stack.idp.ssf.outstanding[stream["stream_id"]][jti] = token


def jti_of(token: str) -> str:
    from authserver.encoding import b64url_decode

    return str(json.loads(b64url_decode(token.split(".")[1]))["jti"])


def newcomer(stack: Stack, name: str) -> str:
    stack.idp.users[name] = {"sub": f"00u{name}", "email": f"{name}@acme.example",
                             "tenant": "acme"}
    stack.browser(name)
    return stack.user_id(name)


def active(stack: Stack, user_id: str) -> bool:
    with stack.services.db.session() as session:
        return bool(session.get(User, user_id).active)  # type: ignore[union-attr]


def test_a_poll_stream_remembers_where_to_poll(stack: Stack, stream: dict[str, Any]) -> None:
    assert stream["delivery"] == "poll"
    assert stream["poll_url"] == f"{stack.idp.issuer}/ssf/poll/{stream['stream_id']}"
    assert stack.idp.ssf.streams[stream["stream_id"]]["delivery"]["method"] == ssf_streams.POLL


def test_a_round_acts_acknowledges_and_reports_refusals(stack: Stack,
                                                        stream: dict[str, Any]) -> None:
    ida = newcomer(stack, "ida")
    good = stack.idp.ssf.emit(stream["stream_id"], ssf.ACCOUNT_DISABLED, username="ida")
    forged = stack.idp.mint_set(ssf.ACCOUNT_DISABLED, aud=AUD, username="ida",
                                sign_with=stack.idp.foreign_key())
    foreign = stack.idp.mint_set(ssf.ACCOUNT_DISABLED, aud="https://elsewhere.example",
                                 username="ida")
    queue(stack, stream, jti_of(forged), forged)
    queue(stack, stream, jti_of(foreign), foreign)
    before = len(stack.idp.ssf.poll_requests)

    result, cid = poll(stack, max_events=10)

    assert result.received == 3 and result.acked == [jti_of(good)]
    assert {j: e["err"] for j, e in result.errors.items()} == {
        jti_of(forged): "invalid_key", jti_of(foreign): "invalid_audience"}
    assert not active(stack, ida)
    requests_ = stack.idp.ssf.poll_requests[before:]
    assert requests_[0] == {"maxEvents": 10, "returnImmediately": True}
    # The acknowledgements and errors end the round in an acknowledge-only request.
    assert requests_[1]["maxEvents"] == 0 and requests_[1]["returnImmediately"] is True
    assert requests_[1]["ack"] == [jti_of(good)]
    assert set(requests_[1]["setErrs"]) == {jti_of(forged), jti_of(foreign)}
    assert all(set(e) == {"err", "description"} and e["description"]
               for e in requests_[1]["setErrs"].values())
    assert jti_of(good) in stack.idp.ssf.acked
    assert stack.idp.ssf.set_errors[jti_of(forged)]["err"] == "invalid_key"
    assert not stack.idp.ssf.outstanding[stream["stream_id"]]
    [record] = [r for r in stack.audit_for(cid) if r["event"] == "ssf_event"]
    assert record["outcome"] == "revoked" and record["user_id"] == ida
    assert record["detail"]["set_jti"] == jti_of(good)


def test_more_available_polls_again_with_the_acknowledgements(
        stack: Stack, stream: dict[str, Any]) -> None:
    tokens = [stack.idp.ssf.emit(stream["stream_id"], ssf.VERIFICATION,
                                 sub_id={"format": "opaque", "id": stream["stream_id"]})
              for _ in range(3)]
    before = len(stack.idp.ssf.poll_requests)
    result, _ = poll(stack, max_events=1)
    assert result.acked == [jti_of(t) for t in tokens] and result.requests == 4
    sent = stack.idp.ssf.poll_requests[before:]
    assert [r["maxEvents"] for r in sent] == [1, 1, 1, 0]
    assert [r.get("ack") for r in sent] == [None, *([jti_of(t)] for t in tokens)]
    assert result.more_available is False


def test_a_replay_and_a_mislabelled_set_are_reported(stack: Stack,
                                                     stream: dict[str, Any]) -> None:
    jo = newcomer(stack, "jo")
    token = stack.idp.ssf.emit(stream["stream_id"], ssf.VERIFICATION,
                               sub_id={"format": "opaque", "id": stream["stream_id"]})
    assert poll(stack)[0].acked == [jti_of(token)]
    queue(stack, stream, jti_of(token), token)  # delivered again
    other = stack.idp.mint_set(ssf.ACCOUNT_DISABLED, aud=AUD, username="jo")
    queue(stack, stream, "not-its-jti", other)
    result, _ = poll(stack)
    assert result.acked == []
    assert result.errors[jti_of(token)]["err"] == "invalid_request"
    assert "already" in result.errors[jti_of(token)]["description"]
    assert result.errors["not-its-jti"] == {
        "err": "invalid_request",
        "description": "The SET's jti is not the key it was delivered under"}
    assert active(stack, jo)  # checked before anything was acted on


def test_a_set_that_cannot_be_judged_is_neither_acknowledged_nor_refused(
        stack: Stack, stream: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    token = stack.idp.ssf.emit(stream["stream_id"], ssf.VERIFICATION,
                               sub_id={"format": "opaque", "id": stream["stream_id"]})

    def unavailable(*args: Any, **kw: Any) -> Any:
        raise TemporarilyUnavailableError("keys unavailable")

    monkeypatch.setattr(ssf_poll.ssf_streams, "receive", unavailable)
    result, _ = poll(stack)
    assert result.unjudged == [jti_of(token)] and not result.acked and not result.errors
    monkeypatch.undo()
    assert poll(stack)[0].acked == [jti_of(token)]  # the transmitter delivered it again


def test_verification_over_poll(stack: Stack, stream: dict[str, Any]) -> None:
    ssf_streams.request_verification(stack.services, IDP,
                                     token=stack.idp.ssf.management_token,
                                     now=stack.clock(), correlation_id=None)
    with stack.services.db.session() as session:
        assert session.get(SsfStream, IDP).verified_at is None  # type: ignore[union-attr]
    result, cid = poll(stack)
    assert len(result.acked) == 1
    [record] = [r for r in stack.audit_for(cid) if r["event"] == "ssf_event"]
    assert record["detail"]["action"] == "verification" and record["detail"]["verified"]
    with stack.services.db.session() as session:
        assert session.get(SsfStream, IDP).verified_at is not None  # type: ignore[union-attr]


def test_refusals_of_a_round(stack: Stack, stream: dict[str, Any]) -> None:
    stack.idp.ssf.emit(stream["stream_id"], ssf.VERIFICATION,
                       sub_id={"format": "opaque", "id": stream["stream_id"]})
    with pytest.raises(StreamError, match="status 401"):
        poll(stack, token="wrong")
    with pytest.raises(StreamError, match="maxEvents is 1 to 100"):
        poll(stack, max_events=0)
    with pytest.raises(LookupError):
        ssf_poll.poll_once(stack.services, "nobody", token=None, now=stack.clock(),
                           correlation_id=None)
    with stack.services.db.session() as session:
        session.get(SsfStream, IDP).status = "disabled"  # type: ignore[union-attr]
    try:
        with pytest.raises(StreamError, match="disabled"):
            poll(stack)
    finally:
        with stack.services.db.session() as session:
            session.get(SsfStream, IDP).status = "enabled"  # type: ignore[union-attr]
    assert len(stack.idp.ssf.outstanding[stream["stream_id"]]) == 1  # nothing taken
    assert len(poll(stack)[0].acked) == 1


def test_the_poll_command(stack: Stack, stream: dict[str, Any],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from authserver import ssf_cli
    from authserver.cli import main

    monkeypatch.setattr(ssf_cli, "_services", lambda: stack.services)
    with stack.services.db.session() as session:
        session.get(SsfStream, IDP).token_env = "TEST_SSF_POLL_TOKEN"  # type: ignore[union-attr]
    monkeypatch.setenv("TEST_SSF_POLL_TOKEN", stack.idp.ssf.management_token)
    token = stack.idp.ssf.emit(stream["stream_id"], ssf.VERIFICATION,
                               sub_id={"format": "opaque", "id": stream["stream_id"]})
    result = CliRunner().invoke(main, ["ssf", "poll", stream["stream_id"], "--max-events", "5"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["acked"] == [jti_of(token)] and out["correlation_id"].startswith("cli-")
    monkeypatch.setenv("TEST_SSF_POLL_TOKEN", "wrong")
    refused = CliRunner().invoke(main, ["ssf", "poll", IDP])
    assert refused.exit_code == 1 and "status 401" in refused.output
