"""Throughput of authserver.dpop.validate_proof (RFC 9449 §4.3) on the embedded store.

Usage: python bench/bench_dpop.py [N] [ALG ...]   (defaults: 5000 proofs, ES256 and EdDSA)

Proofs are signed beforehand (distinct `jti`s, so none is a replay); only validation is timed:
parsing, key import, signature verification, claim checks, thumbprint and the replay write.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import time

from joserfc import jws
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from authserver.dpop import validate_proof
from authserver.store.memory import MemoryStore

NOW = 1_800_000_000
URL = "https://as.example.com/token"
KEYS = {
    "ES256": lambda: ECKey.generate_key("P-256"),
    "ES384": lambda: ECKey.generate_key("P-384"),
    "RS256": lambda: RSAKey.generate_key(2048),
    "PS256": lambda: RSAKey.generate_key(2048),
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_proofs(alg: str, key: Key, count: int) -> list[str]:
    header = _b64(json.dumps({"typ": "dpop+jwt", "alg": alg,
                              "jwk": key.as_dict(private=False)}).encode())
    model = jws.JWSRegistry.algorithms[alg]
    proofs = []
    for i in range(count):
        claims = {"jti": f"bench-{alg}-{i:08d}", "htm": "POST", "htu": URL, "iat": NOW}
        signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
        proofs.append(f"{signing_input}.{_b64(model.sign(signing_input.encode(), key))}")
    return proofs


def bench(alg: str, count: int) -> tuple[float, float]:
    proofs = make_proofs(alg, KEYS[alg](), count)
    store = MemoryStore()
    validate_proof([proofs[0]], method="POST", url=URL, now=NOW, store=MemoryStore())  # warm-up
    start = time.perf_counter()
    for proof in proofs:
        validate_proof([proof], method="POST", url=URL, now=NOW, store=store)
    elapsed = time.perf_counter() - start
    return count / elapsed, elapsed / count * 1e6


def main(argv: list[str]) -> None:
    logging.getLogger("authserver.store.memory").setLevel(logging.ERROR)
    count = int(argv[0]) if argv else 5000
    algs = argv[1:] or ["ES256", "EdDSA"]
    print(f"validate_proof, MemoryStore, {count} proofs per alg, Python {sys.version.split()[0]}")
    for alg in algs:
        rate, micros = bench(alg, count)
        print(f"{alg:>6}: {rate:9.0f} proofs/s  {micros:8.1f} us/proof")


if __name__ == "__main__":
    main(sys.argv[1:])
