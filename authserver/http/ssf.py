"""The Shared Signals push endpoint: `POST /ssf/events/<idp>` (RFC 8935; docs/standards.md
SSF-01..08), for IdPs with `ssf_audience`.

The rules are authserver/ssf.py and authserver/ssf_streams.py (a registered stream's
status, SSF-10); this layer finds the IdP, checks the transmitter's bearer
token when one is configured, reads the `application/secevent+jwt` body, and answers 202 with
no body, or 400 with an RFC 8935 §2.3 error body. A refusal is counted and logged
rate-limited, never audited (`authserver.audit.refused_unauthenticated`). The receiver's
writes are units of work of their own (ssf_streams.receive commits each); this handler opens no
transaction of the request's.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from authserver import ssf, ssf_streams
from authserver.audit import refused_unauthenticated
from authserver.observability import correlation_id

bp = Blueprint("ssf", __name__, url_prefix="/ssf")


def _json(body: Any, status: int) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(ssf.SetError)
def _refused(error: ssf.SetError) -> Response:
    refused_unauthenticated("ssf_event", error.err)
    return _json(error.body(), error.status)


@bp.post("/events/<idp>")
def push(idp: str) -> Response:
    services = current_app.extensions["authserver"]
    federation = services.federation
    try:
        provider = federation.get(idp) if federation is not None else None
    except KeyError:
        provider = None
    if provider is None or not provider.config.ssf_audience:
        # SSF-01: a general HTTP error (RFC 8935 §2.3), before anything is read.
        refused_unauthenticated("ssf_event", "no_stream")
        return _json({"err": ssf.INVALID_REQUEST,
                      "description": "No Shared Signals receiver at this URL"}, 404)
    ssf.authenticate_transmitter(provider.config, request.headers.get("Authorization"))
    if request.mimetype != ssf.MEDIA_TYPE:
        raise ssf.SetError(ssf.INVALID_REQUEST, f"Content-Type must be {ssf.MEDIA_TYPE}")
    raw = request.get_data(cache=False)
    if len(raw) > ssf.MAX_SET_BYTES:
        raise ssf.SetError(ssf.INVALID_REQUEST, "The SET is too large")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise ssf.SetError(ssf.INVALID_REQUEST, "The body is not a compact JWS") from e
    # The one path of every SET, pushed or polled (authserver.ssf_poll uses it too).
    ssf_streams.receive(services, provider, token, now=g.now, correlation_id=correlation_id())
    response = Response(status=202)
    response.headers["Cache-Control"] = "no-store"
    return response
