"""`authserver ssf …` — the Shared Signals streams we receive (docs/standards.md SSF-09..12).

    authserver ssf streams add IDP [--delivery push|poll] [--event URI ...] [--stream-id ID]
                                   [--token-env NAME]
    authserver ssf streams list
    authserver ssf streams verify STREAM
    authserver ssf streams status STREAM [--refresh]
    authserver ssf poll STREAM [--max-events N] [--loop [--interval S]]

STREAM is the IdP's name or the stream id. `--token-env` names the environment variable that
holds the bearer token for the transmitter's endpoints (stream management, verification,
status, poll); the name is remembered with the stream, the token never is. The rules are
authserver/ssf_streams.py and authserver/ssf_poll.py; this is only the command line (the
clock is read here and passed in). Each command prints JSON, with the correlation id of its
audit records.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import click


def _services() -> Any:
    from authserver.cli.common import load_services

    return load_services()


def _print(value: Any) -> None:
    from authserver.cli.common import print_json

    print_json(value)


def _token(name: str | None) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise click.ClickException(f"the environment variable {name} (--token-env) is not set")
    return value


def _correlation() -> str:
    return "cli-" + uuid.uuid4().hex


def _stream_token(services: Any, ref: str) -> str | None:
    from authserver import ssf_streams

    with services.db.session() as session:
        try:
            return _token(ssf_streams.find(session, ref).token_env)
        except LookupError as e:
            raise click.ClickException(f"no stream {ref!r} (authserver ssf streams list)") from e


def _run(action: Any) -> Any:
    from authserver.ssf_streams import StreamError

    try:
        return action()
    except StreamError as e:
        raise click.ClickException(str(e)) from e
    except LookupError as e:
        raise click.ClickException(f"no stream {e.args[0]!r}") from e


@click.group("ssf")
def ssf() -> None:
    """Shared Signals: the streams an IdP transmits to us, push or poll."""


@ssf.group("streams")
def streams() -> None:
    """Register and check the IdPs' streams."""


@streams.command("add")
@click.argument("idp")
@click.option("--delivery", type=click.Choice(["push", "poll"]), default="push",
              show_default=True, help="RFC 8935 push to us, or RFC 8936 poll by us.")
@click.option("--event", "events", multiple=True,
              help="An event type URI to request (repeat). Default: those we act on.")
@click.option("--stream-id", default=None,
              help="Adopt this existing stream (made in the IdP's console) instead of "
                   "creating one.")
@click.option("--token-env", default=None,
              help="Environment variable holding the bearer token for the transmitter.")
def streams_add(idp: str, delivery: str, events: tuple[str, ...], stream_id: str | None,
                token_env: str | None) -> None:
    """Create (or adopt) IDP's stream at its transmitter and remember it."""
    from authserver import ssf as rules
    from authserver import ssf_streams

    services = _services()
    token = _token(token_env)
    requested = list(events) or [e for e in rules.ACTIONS if e not in rules.STREAM_EVENTS]
    cid = _correlation()
    receiver = f"{services.settings.issuer}/ssf/events/{idp}"
    result = _run(lambda: ssf_streams.add(
        services, idp, delivery=delivery, events=requested, stream_id=stream_id, token=token,
        token_env=token_env, receiver_url=receiver, now=int(time.time()), correlation_id=cid))
    _print({**result, "correlation_id": cid})


@streams.command("list")
def streams_list() -> None:
    """Every registered stream and its status."""
    from sqlalchemy import select

    from authserver import ssf_streams
    from authserver.models import SsfStream

    services = _services()
    with services.db.session() as session:
        _print([ssf_streams.as_dict(row) for row in session.scalars(
            select(SsfStream).order_by(SsfStream.idp))])


@streams.command("verify")
@click.argument("stream")
def streams_verify(stream: str) -> None:
    """Ask the transmitter to send a verification event (SSF 8.1.4.2); `status` then shows
    `verified_at` once it arrived with our state."""
    from authserver import ssf_streams

    services = _services()
    token = _stream_token(services, stream)
    cid = _correlation()
    result = _run(lambda: ssf_streams.request_verification(
        services, stream, token=token, now=int(time.time()), correlation_id=cid))
    _print({**result, "correlation_id": cid})


@streams.command("status")
@click.argument("stream")
@click.option("--refresh", is_flag=True,
              help="Read the status from the transmitter's status endpoint first.")
def streams_status(stream: str, refresh: bool) -> None:
    """The stream's status (enabled, paused, disabled) and verification."""
    from authserver import ssf_streams

    services = _services()
    if refresh:
        token = _stream_token(services, stream)
        cid = _correlation()
        result = _run(lambda: ssf_streams.refresh_status(
            services, stream, token=token, now=int(time.time()), correlation_id=cid))
        _print({**result, "correlation_id": cid})
        return
    with services.db.session() as session:
        _print(_run(lambda: ssf_streams.as_dict(ssf_streams.find(session, stream))))


@ssf.command("poll")
@click.argument("stream")
@click.option("--max-events", default=25, show_default=True, type=click.IntRange(1, 100),
              help="maxEvents of each poll request (RFC 8936 2.4).")
@click.option("--loop", is_flag=True, help="Poll round after round until interrupted.")
@click.option("--interval", default=30, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds between rounds with --loop.")
def poll(stream: str, max_events: int, loop: bool, interval: int) -> None:
    """Fetch the stream's SETs from the transmitter (RFC 8936), act on each as on a push,
    and acknowledge or refuse them."""
    from authserver import ssf_poll

    services = _services()
    token = _stream_token(services, stream)
    def one_round(cid: str) -> Any:
        return _run(lambda: ssf_poll.poll_once(
            services, stream, token=token, now=int(time.time()), correlation_id=cid,
            max_events=max_events))

    while True:
        cid = _correlation()
        _print({**one_round(cid).as_dict(), "correlation_id": cid})
        if not loop:
            return
        time.sleep(interval)
