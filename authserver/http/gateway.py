"""`<issuer>/gateway/<platform>/<path>` (Part A5); the work is in authserver.gateway."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, g, jsonify, request

from authserver import gateway
from authserver.http.oauth import dpop_header_values
from authserver.http.unit_of_work import commit
from authserver.observability import correlation_id

bp = Blueprint("gateway", __name__)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@bp.get("/.well-known/oauth-protected-resource/gateway/<platform>")
def protected_resource_metadata(platform: str) -> Response:
    """RFC 9728 §3: the metadata of the resource `<issuer>/gateway/<platform>`."""
    services = current_app.extensions["authserver"]
    if platform not in services.platforms:
        abort(404)
    response = jsonify(gateway.protected_resource_metadata(services, platform))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# merge_slashes=False: "//" must reach the intent check (and be refused), not be redirected.
@bp.route("/gateway/<platform>/<path:path>", methods=METHODS, merge_slashes=False)
def call(platform: str, path: str) -> Response:
    services = current_app.extensions["authserver"]
    issuer = services.settings.issuer
    # The raw request target: Flask's `path` is percent-decoded, and both the DPoP `htu`
    # comparison and the intent's path match must see exactly what the client sent.
    raw = (request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
           or request.full_path)
    raw_path, _, query = raw.partition("?")
    prefix = f"/gateway/{platform}/"
    if not raw_path.startswith(prefix):
        abort(404)
    # DPoP htu is compared with the external URL (our issuer), never the Host header.
    url = issuer + raw_path
    result = gateway.handle(services, g.db, gateway.GatewayRequest(
        platform=platform,
        path=raw_path[len(prefix):] + (f"?{query}" if query else ""),
        method=request.method,
        url=url,
        authorization=request.headers.getlist("Authorization"),
        dpop=dpop_header_values(request.headers),
        body=request.get_data(cache=False),
        content_type=request.content_type,
        correlation_id=correlation_id(),
        client_ip=request.remote_addr,
    ), now=g.now)
    commit()  # the call's audit record, before its answer leaves (a failure: 503)
    response = Response(result.body, status=result.status)
    for name, value in result.headers.items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response
