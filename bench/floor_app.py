"""The stack's floor for bench/ab.py --mode floor: Flask under the repository's gunicorn.conf.py
with nothing of authserver in it.

POST /token reads the form and the DPoP header as authserver's token endpoint does and answers
a JSON body the size of a DPoP-bound token response (about 600 bytes) with the same response
headers. No client, no proof check, no Redis, no database, no signing: what gunicorn (gthread)
and Flask cost per request on this machine before any of authserver's work.
"""

from __future__ import annotations

import json

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
