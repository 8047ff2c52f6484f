"""The stack's floor: Flask under the repository's gunicorn.conf.py with nothing of authserver
in it, for bench/ab.py --mode floor and bench/bench_gateway.py --floor.

POST /token reads the form and the DPoP header as authserver's token endpoint does and answers
a JSON body the size of a DPoP-bound token response (about 600 bytes) with the same response
headers. No client, no proof check, no Redis, no database, no signing: what gunicorn (gthread)
and Flask cost per request on this machine before any of authserver's work.

GET /gateway/<platform>/<path> is the floor of a gateway hop: it reads the `Authorization` and
`DPoP` headers, sends the same GET to `BENCH_FLOOR_PLATFORM_URL` + "/" + path through one
urllib3 pool (as authserver's gateway does: no retry, no redirect, the body read up to a limit)
with the caller's `Authorization` passed through as it came, and relays status, content type
and body. No token or proof check, no liveness read, no vault, no audit record: what one more
HTTP hop through gunicorn, Flask and urllib3 costs before any of the gateway's work.
"""

from __future__ import annotations

import json
import os

import urllib3
from flask import Flask, Response, request

app = Flask(__name__)

#: About the size of authserver's client_credentials + DPoP response (an ES256 JWT of ~520
#: characters plus token_type, expires_in and scope).
BODY = json.dumps({"access_token": "x" * 520, "token_type": "DPoP", "expires_in": 600,
                   "scope": ""})


@app.post("/token")
def token() -> Response:
    if request.form.get("grant_type") != "client_credentials" or not request.headers.get("DPoP"):
        return Response('{"error":"invalid_request"}', status=400, mimetype="application/json")
    return Response(BODY, mimetype="application/json",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@app.get("/readyz")
def readyz() -> Response:
    return Response('{"status":"ok"}', mimetype="application/json")


#: Where the floor gateway sends its calls (bench_gateway.py --floor: the CRM's API base).
PLATFORM_URL = os.environ.get("BENCH_FLOOR_PLATFORM_URL", "")
#: The body read from the platform, at most (as the gateway's limit; a longer one is a 502).
MAX_BODY = 2 * 1024 * 1024
_POOL = urllib3.PoolManager(maxsize=8, retries=False)


@app.get("/gateway/<platform>/<path:path>")
def gateway(platform: str, path: str) -> Response:
    authorization = request.headers.get("Authorization", "")
    if not authorization.startswith("Bearer ") or not request.headers.get("DPoP"):
        return Response('{"error":"invalid_token"}', status=401, mimetype="application/json")
    answer = _POOL.request(
        "GET", f"{PLATFORM_URL}/{path}", redirect=False, retries=False,
        headers={"Authorization": authorization,
                 "Accept": request.headers.get("Accept", "application/json")},
        timeout=urllib3.Timeout(connect=3.05, read=15.0), preload_content=False)
    data = answer.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        answer.close()  # never reuse a connection whose body was not read to its end
        return Response('{"error":"bad_gateway"}', status=502, mimetype="application/json")
    answer.release_conn()
    return Response(data, status=answer.status,
                    content_type=answer.headers.get("Content-Type", "application/json"),
                    headers={"Cache-Control": "no-store"})
