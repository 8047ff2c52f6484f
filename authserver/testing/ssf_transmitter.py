"""The test IdP's Shared Signals transmitter (OpenID SSF 1.0 §7, §8.1; RFC 8935, RFC 8936).

TEST-ONLY, never deploy. Served by the test IdP (authserver/testing/idp.py) at its issuer:

- `GET /.well-known/ssf-configuration`: the transmitter metadata (§7.1), with the
  configuration, status and verification endpoints and both delivery methods.
- `POST /ssf/streams` creates a stream (§8.1.1.1; 201 with its configuration), `GET
  /ssf/streams?stream_id=` reads one (§8.1.1.2). `aud` is `audience` when the test set one,
  else the push `endpoint_url`; a poll stream's `endpoint_url` is `/ssf/poll/<stream_id>`.
- `GET /ssf/status?stream_id=` (§8.1.2.1); `POST /ssf/verify` (§8.1.4.2, 204) sends a
  verification event with the receiver's `state`.
- `POST /ssf/poll/<stream_id>` (RFC 8936 §2.4): `ack` and `setErrs` first (recorded in
  `acked` and `set_errors`), then up to `maxEvents` outstanding SETs and `moreAvailable`.

The management and poll endpoints want `Authorization: Bearer <management_token>`. Events:
`emit(stream_id, event_type, ...)` mints a SET for the stream (`IdP.mint_set`) and delivers
it: pushed to the receiver (`pushes` keeps the answers' status codes) or queued for polling;
held while the stream is paused and released when it is enabled, dropped when disabled
(`force=True` delivers anyway: a transmitter that misbehaves). `set_status(...)` changes the
status and sends the stream-updated event (§8.1.5).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
from flask import Flask, Response, jsonify, request

from authserver.encoding import b64url_decode

if TYPE_CHECKING:
    from authserver.testing.idp import IdP

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
SSF_EVENTS = "https://schemas.openid.net/secevent/ssf/event-type/"
VERIFICATION = SSF_EVENTS + "verification"
STREAM_UPDATED = SSF_EVENTS + "stream-updated"
EVENTS_SUPPORTED = (
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-purged",
    "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
)


class Transmitter:
    """One transmitter's streams and their SETs, in memory."""

    def __init__(self, idp: IdP) -> None:
        self.idp = idp
        self.management_token = secrets.token_urlsafe(24)
        #: The `aud` of new streams (None: the push endpoint_url).
        self.audience: str | None = None
        #: Sent as the push `Authorization` header when set.
        self.push_authorization: str | None = None
        self.streams: dict[str, dict[str, Any]] = {}
        self.status: dict[str, tuple[str, str | None]] = {}
        self.outstanding: dict[str, OrderedDict[str, str]] = {}
        self.held: dict[str, list[str]] = {}
        self.acked: list[str] = []
        self.set_errors: dict[str, dict[str, str]] = {}
        self.poll_requests: list[dict[str, Any]] = []
        self.pushes: list[int] = []
        self.verification_requests: list[dict[str, Any]] = []
        self._mutex = threading.Lock()

    # --- test controls -----------------------------------------------------------------------

    def emit(self, stream_id: str, event_type: str, event: Mapping[str, Any] | None = None,
             *, force: bool = False, **mint: Any) -> str:
        """Mint a SET for the stream and deliver it (see the module docstring)."""
        stream = self.streams[stream_id]
        token = self.idp.mint_set(event_type, event, aud=stream["aud"], **mint)
        status = self.status[stream_id][0]
        stream_event = event_type in (VERIFICATION, STREAM_UPDATED)
        if status == "disabled" and not (force or stream_event):
            return token
        if status == "paused" and not (force or stream_event):
            with self._mutex:
                self.held[stream_id].append(token)
            return token
        self._deliver(stream_id, token)
        return token

    def set_status(self, stream_id: str, status: str, reason: str | None = None, *,
                   notify: bool = True) -> None:
        with self._mutex:
            self.status[stream_id] = (status, reason)
            held = self.held[stream_id] if status == "enabled" else []
            self.held[stream_id] = [] if status != "paused" else self.held[stream_id]
        if notify:
            event: dict[str, Any] = {"status": status}
            if reason:
                event["reason"] = reason
            self.emit(stream_id, STREAM_UPDATED, event,
                      sub_id={"format": "opaque", "id": stream_id})
        for token in held:
            self._deliver(stream_id, token)

    # --- internals ---------------------------------------------------------------------------

    def _deliver(self, stream_id: str, token: str) -> None:
        delivery = self.streams[stream_id]["delivery"]
        if delivery["method"] == POLL:
            jti = _jti(token)
            with self._mutex:
                self.outstanding[stream_id][jti] = token
            return
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if self.push_authorization:
            headers["Authorization"] = self.push_authorization
        resp = requests.post(delivery["endpoint_url"], data=token, headers=headers, timeout=30)
        with self._mutex:
            self.pushes.append(resp.status_code)

    def _authorized(self) -> bool:
        auth = request.headers.get("Authorization", "")
        return secrets.compare_digest(auth.encode(), f"Bearer {self.management_token}".encode())

    def _create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        iss = self.idp._issuer()
        stream_id = "st_" + secrets.token_hex(8)
        delivery = dict(body.get("delivery") or {})
        if delivery.get("method") == POLL:
            delivery["endpoint_url"] = f"{iss}/ssf/poll/{stream_id}"
        requested = list(body.get("events_requested") or [])
        stream = {
            "stream_id": stream_id, "iss": iss,
            "aud": self.audience or delivery.get("endpoint_url"),
            "delivery": delivery, "events_supported": list(EVENTS_SUPPORTED),
            "events_requested": requested,
            "events_delivered": [e for e in requested if e in EVENTS_SUPPORTED],
            "description": body.get("description"), "min_verification_interval": 0,
        }
        with self._mutex:
            self.streams[stream_id] = stream
            self.status[stream_id] = ("enabled", None)
            self.outstanding[stream_id] = OrderedDict()
            self.held[stream_id] = []
        return stream

    def _poll(self, stream_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._mutex:
            self.poll_requests.append(dict(body))
            queue = self.outstanding[stream_id]
            for jti in body.get("ack") or []:
                if queue.pop(jti, None) is not None:
                    self.acked.append(jti)
            for jti, err in (body.get("setErrs") or {}).items():
                if queue.pop(jti, None) is not None:
                    self.set_errors[jti] = err
            wanted = int(body.get("maxEvents", 25))
            sets = dict(list(queue.items())[:wanted])
            return {"sets": sets, "moreAvailable": len(queue) > len(sets)}


def _jti(token: str) -> str:
    return str(json.loads(b64url_decode(token.split(".")[1]))["jti"])


def install(app: Flask, transmitter: Transmitter) -> None:
    """Add the transmitter's endpoints to the IdP's app."""
    t = transmitter

    def denied() -> Response:
        resp = jsonify({"error": "invalid_token"})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return resp

    @app.get("/.well-known/ssf-configuration")
    def ssf_configuration() -> Response:
        iss = t.idp._issuer()
        return jsonify({
            "spec_version": "1_0", "issuer": iss, "jwks_uri": iss + "/jwks",
            "delivery_methods_supported": [PUSH, POLL],
            "configuration_endpoint": iss + "/ssf/streams",
            "status_endpoint": iss + "/ssf/status",
            "verification_endpoint": iss + "/ssf/verify",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
        })

    @app.route("/ssf/streams", methods=["GET", "POST"])
    def ssf_streams() -> Any:
        if not t._authorized():
            return denied()
        if request.method == "POST":
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return jsonify({"error": "invalid_request"}), 400
            return jsonify(t._create(body)), 201
        stream = t.streams.get(request.args.get("stream_id", ""))
        return (jsonify(stream), 200) if stream else (jsonify({"error": "not_found"}), 404)

    @app.get("/ssf/status")
    def ssf_status() -> Any:
        if not t._authorized():
            return denied()
        stream_id = request.args.get("stream_id", "")
        if stream_id not in t.status:
            return jsonify({"error": "not_found"}), 404
        status, reason = t.status[stream_id]
        return jsonify({"stream_id": stream_id, "status": status,
                        **({"reason": reason} if reason else {})})

    @app.post("/ssf/verify")
    def ssf_verify() -> Any:
        if not t._authorized():
            return denied()
        body = request.get_json(silent=True) or {}
        stream_id = body.get("stream_id")
        if stream_id not in t.streams:
            return jsonify({"error": "not_found"}), 404
        t.verification_requests.append(dict(body))
        event = {"state": body["state"]} if "state" in body else {}
        t.emit(stream_id, VERIFICATION, event, sub_id={"format": "opaque", "id": stream_id})
        return Response(status=204)

    @app.post("/ssf/poll/<stream_id>")
    def ssf_poll(stream_id: str) -> Any:
        if not t._authorized():
            return denied()
        if stream_id not in t.streams:
            return jsonify({"error": "not_found"}), 404
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify({"error": "invalid_request"}), 400
        return jsonify(t._poll(stream_id, body))
