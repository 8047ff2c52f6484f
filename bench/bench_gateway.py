"""The gateway's added latency (docs/standards.md A5) over a direct call to the platform.

Usage: python bench/bench_gateway.py [N] [--redis]   (default 500 calls each; embedded store)

Everything runs on loopback in this one process (tests/stack.py: the test IdP, Acme CRM and
authserver on werkzeug's threaded server, SQLite). Alice connects the CRM through the user
pages; an executor client obtains her CRM access token through the product's executor path
(Part A4) for the direct calls. Both sides use a keep-alive `requests.Session`, and the calls
are interleaved (direct, gateway, direct, ...) so drift hits both equally.

Only the HTTP round trip is timed. Capability tokens and DPoP proofs are made beforehand (a
fresh capability token per batch, well inside its 60 s lifetime), so the gateway column is
what an agent waits for: proof and token verification, the liveness and intent checks, the
vault decrypt, the forwarded call and the audit write. Client and servers share one Python
process (and its GIL), so absolute numbers are pessimistic; the difference is the point.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway_helpers import capability, raw_proof
from tests.stack import intent, make_stack

WARMUP = 20
BATCH = 200  # calls per capability token (≤ 60 s of use)
PATH = "deals/acme-123"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(name: str, ms: list[float]) -> str:
    return (f"{name:<10} n={len(ms):<5} p50={percentile(ms, 50):7.2f} ms  "
            f"p90={percentile(ms, 90):7.2f} ms  p99={percentile(ms, 99):7.2f} ms  "
            f"mean={statistics.fmean(ms):7.2f} ms")


def platform_token(stack: Any) -> str:
    """Alice's CRM token, the way an executor gets it (Part A4)."""
    executor = stack.register_agent(attributes={"allowed_platforms": ["crm"],
                                                "allowed_actions": ["read"], "executor": True})
    assertion, key = stack.edge_mint("alice", agent=executor)
    resp = stack.agent_exchange(assertion, key, agent=executor, audience=None,
                                resource=stack.settings["platforms"]["crm"]["api_base_url"],
                                intent=intent("read", "deal:acme-123"))
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def run(n: int, redis_url: str) -> None:
    logging.disable(logging.CRITICAL)  # the servers' request logs would dominate the timing
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        stack = make_stack(Path(tmp), redis_url=redis_url)
        try:
            stack.signed_in_and_connected("alice", ("crm",))
            direct_url = stack.settings["platforms"]["crm"]["api_base_url"] + "/" + PATH
            gateway_url = f"{stack.issuer}/gateway/crm/{PATH}"
            direct_headers = {"Authorization": f"Bearer {platform_token(stack)}"}
            http_direct, http_gateway = requests.Session(), requests.Session()
            direct: list[float] = []
            via_gateway: list[float] = []
            done = 0
            while done < n + WARMUP:
                size = min(BATCH, n + WARMUP - done)
                token, key = capability(stack, "alice", intent("read", "deal:acme-123"))
                proofs = [raw_proof(key, "GET", gateway_url, token=token) for _ in range(size)]
                for proof in proofs:
                    t0 = time.perf_counter()
                    r1 = http_direct.get(direct_url, headers=direct_headers, timeout=30)
                    t1 = time.perf_counter()
                    r2 = http_gateway.get(gateway_url, timeout=30, headers={
                        "Authorization": f"DPoP {token}", "DPoP": proof})
                    t2 = time.perf_counter()
                    if r1.status_code != 200 or r2.status_code != 200:
                        raise SystemExit(f"unexpected status: direct {r1.status_code}, "
                                         f"gateway {r2.status_code} {r2.text[:200]}")
                    if done >= WARMUP:
                        direct.append((t1 - t0) * 1000)
                        via_gateway.append((t2 - t1) * 1000)
                    done += 1
        finally:
            stack.close()
    store = "Redis" if redis_url else "embedded store"
    print(f"gateway vs direct, GET {PATH}, {n} calls each, SQLite + {store}, one process")
    print(summary("direct", direct))
    print(summary("gateway", via_gateway))
    added = [g - d for g, d in zip(via_gateway, direct, strict=True)]
    print(f"{'added':<10} p50={percentile(added, 50):7.2f} ms  "
          f"p99={percentile(added, 99):7.2f} ms  "
          f"(p50 gateway - p50 direct = "
          f"{percentile(via_gateway, 50) - percentile(direct, 50):.2f} ms)")


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0]) if args else 500
    redis_url = "redis://127.0.0.1:6379/15" if "--redis" in argv else ""
    run(n, redis_url)


if __name__ == "__main__":
    main(sys.argv[1:])
