"""`python -m authserver.demo.pending STATE_FILE`: make a pending approval to click through.

For `authserver demo --serve`, which writes STATE_FILE and prints this command. The chat edge
signs Alice in at the demo IdP and mints her assertion with a mandate to delete one deal; the
scripted agent then asks to delete it, which the default policies send to Alice for
confirmation (`confirm-destructive`). Prints the approval page's URL; exit 1 if the exchange
did not end in `approval_required`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from jwskate import Jwk

from authserver.demo.agent import Agent, intent
from authserver.demo.edge import Edge, Grant, mandate
from authserver.demo.stack import EDGE_REDIRECT_URI

REQUEST = "Delete the Acme deal, it was entered twice"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m authserver.demo.pending",
                                description="Create a pending approval for Alice in a running "
                                            "`authserver demo --serve`.")
    p.add_argument("state_file", help="the file `authserver demo --serve` printed")
    p.add_argument("--user", default="alice", help="whose agent asks (default: alice)")
    args = p.parse_args(argv)
    state = json.loads(Path(args.state_file).read_text(encoding="utf-8"))
    issuer = state["issuer"]
    edge = Edge(idp_url=state["idp"], idp_client_id=state["edge_at_idp"]["client_id"],
                idp_client_secret=state["edge_at_idp"]["client_secret"],
                redirect_uri=EDGE_REDIRECT_URI, issuer=issuer,
                client_id=state["edge"]["client_id"],
                client_secret=state["edge"]["client_secret"])
    agent = Agent(issuer=issuer, client_id=state["agent"]["client_id"],
                  private_jwk=Jwk(state["agent"]["private_jwk"]))
    cid = f"demo-pending-{secrets.token_hex(3)}"
    minted = edge.mint(edge.sign_in(args.user), actor_token=agent.actor_token(),
                       dpop_jkt=agent.dpop_jkt,
                       authorization_details=mandate(REQUEST, [Grant(
                           "crm", ("read", "delete"), ("deal:acme-123",))]),
                       correlation_id=cid + "-mint")
    if not minted.ok or minted.assertion is None:
        print(f"the edge mint was refused: {minted.error}", file=sys.stderr)
        return 1
    asked = agent.exchange(minted.assertion, "crm",
                           intent("delete", "deal:acme-123", request=REQUEST),
                           correlation_id=cid)
    if asked.error != "approval_required":
        print(f"expected approval_required, got {asked.decision}", file=sys.stderr)
        return 1
    print(f"{args.user}'s agent asks to delete deal:acme-123; confirm or decline it at")
    print(f"  {asked.body['approval_uri']}")
    print(f"(signed in as {args.user}; every pending one: {issuer}/approvals)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
