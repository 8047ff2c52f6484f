"""The supporting cast for a conformance run on a test stack: an OIDC provider (OIDC Core 1.0)
and two RFC 6749 platforms (Acme CRM, Taskboard), served on loopback ports in one process.

TEST-ONLY: these servers sign the `login_hint` user in without a password; never point a real
deployment at them. Used by scripts/conformance-stack; an operator testing their own deployment
does not need this (their IdP and platforms play these parts).

    python conformance/hooks/cast.py --issuer http://127.0.0.1:PORT --out cast.json
        [--tls-cert cert.pem --tls-key key.pem]    # serve https (an https issuer needs it)

registers authserver (and the chat edge) as clients of each, writes their URLs and credentials
to `--out` (mode 0600), then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from authserver.testing.crm import start_crm
from authserver.testing.idp import start_idp
from authserver.testing.projects import start_projects

IDP_NAME = "corp"
AUTHSERVER_AT_IDP = "authserver"
EDGE_AT_IDP = "chat-edge"
#: Nothing listens here: the edge hook reads the code from the IdP redirect's Location.
EDGE_REDIRECT_URI = "http://127.0.0.1:9/edge/oidc/callback"
AUTHSERVER_AT_PLATFORMS = "authserver"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--issuer", required=True, help="the authserver issuer (for redirect URIs)")
    p.add_argument("--out", required=True, type=Path, help="where to write the cast JSON")
    p.add_argument("--tls-cert", type=Path,
                   help="serve https with this certificate chain (PEM; with --tls-key), as an "
                   "https issuer requires of its IdPs and platforms (scripts/tls-stack)")
    p.add_argument("--tls-key", type=Path, help="the private key of --tls-cert (PEM)")
    args = p.parse_args(argv)
    issuer = args.issuer.rstrip("/")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.tls_cert:
        import ssl

        from authserver.testing.server import ServerThread

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        ServerThread.default_ssl_context = context

    idp, idp_url, idp_server = start_idp()
    crm, crm_url, crm_server = start_crm()
    projects, projects_url, projects_server = start_projects()
    servers = [idp_server, crm_server, projects_server]

    idp_secret, edge_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    idp.register_client(AUTHSERVER_AT_IDP, idp_secret, [f"{issuer}/login/{IDP_NAME}/callback"])
    idp.register_client(EDGE_AT_IDP, edge_secret, [EDGE_REDIRECT_URI])
    crm_secret, projects_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    crm.register_client(AUTHSERVER_AT_PLATFORMS, crm_secret,
                        [f"{issuer}/connections/crm/callback"])
    projects.register_client(AUTHSERVER_AT_PLATFORMS, projects_secret,
                             [f"{issuer}/connections/projects/callback"])

    cast: dict[str, Any] = {
        "idp": {"name": IDP_NAME, "issuer": idp_url, "client_id": AUTHSERVER_AT_IDP,
                "client_secret": idp_secret, "edge_client_id": EDGE_AT_IDP,
                "edge_client_secret": edge_secret, "edge_redirect_uri": EDGE_REDIRECT_URI},
        "crm": {"url": crm_url, "client_id": AUTHSERVER_AT_PLATFORMS, "client_secret": crm_secret},
        "projects": {"url": projects_url, "client_id": AUTHSERVER_AT_PLATFORMS,
                     "client_secret": projects_secret},
    }
    tmp = args.out.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(cast, fh, indent=2)
    tmp.replace(args.out)  # atomic: the script waits for the file to appear

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
