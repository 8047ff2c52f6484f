"""Latency of PolicyEngine.decide() on the default policy set (stand-alone; not a test).

Runs every scenario in policies/cases/ many times and prints p50/p99 in microseconds, per
outcome and overall. Usage: python bench/bench_policy.py [iterations-per-case]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from authserver.policy import PolicyEngine, policy_request_from_case

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
DEFAULT_ITERATIONS = 2_000
WARMUP = 100


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ITERATIONS
    engine = PolicyEngine.load(POLICY_DIR)
    cases = [(p.parent.name, policy_request_from_case(json.loads(p.read_text())))
             for p in sorted((POLICY_DIR / "cases").glob("*/*.json"))]
    samples: dict[str, list[float]] = {}
    for outcome, request in cases:
        for _ in range(WARMUP):
            engine.decide(request)
        for _ in range(iterations):
            start = time.perf_counter_ns()
            engine.decide(request)
            samples.setdefault(outcome, []).append((time.perf_counter_ns() - start) / 1000)
    samples["ALL"] = [v for values in samples.values() for v in values]
    print(f"decide() latency, {len(cases)} cases x {iterations} iterations (microseconds)")
    print(f"{'outcome':<8} {'n':>7} {'p50':>8} {'p99':>8} {'mean':>8}")
    for outcome, values in samples.items():
        values.sort()
        print(f"{outcome:<8} {len(values):>7} {percentile(values, 0.50):>8.1f} "
              f"{percentile(values, 0.99):>8.1f} {statistics.fmean(values):>8.1f}")


if __name__ == "__main__":
    main()
