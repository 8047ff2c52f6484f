"""Shared Signals streams we receive (OpenID SSF 1.0 §8.1.1): one per IdP receiver.

The transmitter owns the stream; this row is what the receiver keeps of it (`authserver ssf
streams add`): its `stream_id`, how events reach us (`push`: RFC 8935 to
`/ssf/events/<idp>`; `poll`: RFC 8936 from `poll_url`), the events we asked for and the ones
the transmitter says it delivers, the transmitter's management endpoints, and the status
(`enabled`, `paused`, `disabled`, SSF §8.1.2) as the transmitter last told us (a
stream-updated event or its status endpoint). A pending verification is kept as the SHA-256
of the `state` we sent (SSF §8.1.4.2), matched when the verification event arrives.
`token_env` names the environment variable holding the bearer token for the transmitter's
endpoints: the token itself is never stored.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base


class SsfStream(Base):
    __tablename__ = "ssf_streams"

    idp: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(255), unique=True)
    delivery: Mapped[str] = mapped_column(String(8))
    poll_url: Mapped[str | None] = mapped_column(String(2048))
    configuration_endpoint: Mapped[str | None] = mapped_column(String(2048))
    status_endpoint: Mapped[str | None] = mapped_column(String(2048))
    verification_endpoint: Mapped[str | None] = mapped_column(String(2048))
    token_env: Mapped[str | None] = mapped_column(String(255))
    events_requested: Mapped[list[str]] = mapped_column(default=list)
    events_delivered: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(255))
    status_at: Mapped[int] = mapped_column(BigInteger)
    verification_state_sha256: Mapped[str | None] = mapped_column(String(64))
    verification_requested_at: Mapped[int | None] = mapped_column(BigInteger)
    verified_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
