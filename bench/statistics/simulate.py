"""How often the monitor's real decision code rolls back, on synthetic canaries.

    .venv/bin/python bench/statistics/simulate.py [--canaries 2000] [--seed 7]

Each synthetic canary runs for 60 minutes at a 10% split and is looked at by the
monitor 12 times (every 5 minutes), exactly as ``monitoring.automation.monitor`` does: the
counts of each window are turned into ``monitoring.statistics.analysis.Evidence`` and judged
by ``monitoring.statistics.analysis.rollback_breaches`` with the default ``canary_config``.
No database: traffic is drawn with numpy (Poisson arrivals per 5-minute block, the
10-minute window is the last two blocks).

Failure models:

- *input-driven* (rule sets are deterministic): an input that fails, fails in every
  version that reads the same fields, so both versions fail on the same inputs;
- *independent*: each evaluation fails on its own with the same probability in
  both versions (timeouts, say) -- the worst case for the paired test;
- *unpaired*: ``shadow_percentage`` 0, so only the served populations are compared.

Latency: evaluations of a few microseconds with scheduler jitter (a 1-in-200
chance of a 0.2-2 ms stall), v2 slower by 5.5 us (four never-matching rules).

Prints markdown tables: the share of identical-version canaries rolled back
(goal <= 1%), and the monitor runs until a worse v2 is rolled back.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings_test")

import django

django.setup()

from deployments.canary_config import default_canary_config  # noqa: E402
from monitoring.statistics import analysis  # noqa: E402
from monitoring.statistics.analysis import Evidence, VersionStats  # noqa: E402
from monitoring.statistics.paired import PairedCounts  # noqa: E402

CONFIG = default_canary_config()
LOOKS = 12
BLOCK_SECONDS = 300
CANARY_SHARE = 0.10
LATENCY_DRAWS = 1_000


@dataclass(frozen=True)
class Scenario:
    rate: float  # requests per second
    base_error: float  # share of inputs failing in v1 (and, input-driven, in v2)
    extra_error: float = 0.0  # share of inputs failing in v2 only
    model: str = "input-driven"  # input-driven | independent | unpaired
    v2_slowdown: float = 1.0  # v2 latency multiple (on top of +5.5 us)
    v1_latency_ms: float = 0.005


@dataclass
class Block:
    pairs: PairedCounts
    served: dict[str, tuple[int, int]]  # version -> (requests, errors)
    latencies: dict[str, np.ndarray]  # version -> paired latencies (ms)


def _latencies(rng: np.random.Generator, n: int, base_ms: float) -> np.ndarray:
    values = rng.lognormal(np.log(base_ms), 0.25, n)
    stalls = rng.random(n) < 1 / 200
    values[stalls] += rng.uniform(0.2, 2.0, int(stalls.sum()))
    return values


def _block(rng: np.random.Generator, scenario: Scenario) -> Block:
    n = int(rng.poisson(scenario.rate * BLOCK_SECONDS))
    if scenario.model == "independent":
        v1_fail = rng.random(n) < scenario.base_error
        v2_fail = rng.random(n) < scenario.base_error
    else:
        shared = rng.random(n) < scenario.base_error
        v1_fail = shared
        v2_fail = shared | (rng.random(n) < scenario.extra_error)
    if scenario.model == "independent" and scenario.extra_error:
        v2_fail |= rng.random(n) < scenario.extra_error
    on_v2 = rng.random(n) < CANARY_SHARE
    pairs = PairedCounts(
        both_succeeded=int((~v1_fail & ~v2_fail).sum()),
        only_v1_failed=int((v1_fail & ~v2_fail).sum()),
        only_v2_failed=int((~v1_fail & v2_fail).sum()),
        both_failed=int((v1_fail & v2_fail).sum()),
    )
    # Percentiles of a few thousand draws stand for the whole window (speed).
    timed = min(n, LATENCY_DRAWS)
    v1_latency = _latencies(rng, timed, scenario.v1_latency_ms)
    v2_latency = _latencies(rng, timed, scenario.v1_latency_ms) * scenario.v2_slowdown + 0.0055
    on_v2_timed = on_v2[:timed]
    return Block(
        pairs=pairs,
        served={
            "v1": (int((~on_v2).sum()), int((v1_fail & ~on_v2).sum())),
            "v2": (int(on_v2.sum()), int((v2_fail & on_v2).sum())),
        },
        latencies={"v1": v1_latency, "v2": v2_latency, "on_v2": on_v2_timed},
    )


def _stats(requests: int, errors: int, latencies: np.ndarray) -> VersionStats | None:
    if requests == 0:
        return None
    p95 = float(np.percentile(latencies, 95)) if latencies.size else 0.0
    return VersionStats(
        total_requests=requests,
        success_count=requests - errors,
        error_count=errors,
        success_rate=(requests - errors) / requests,
        error_rate=errors / requests,
        avg_latency_ms=float(latencies.mean()),
        p95_latency_ms=p95,
        p99_latency_ms=p95,  # not judged by any rule: spared for speed
    )


def _add(left: PairedCounts, right: PairedCounts) -> PairedCounts:
    return PairedCounts(
        left.both_succeeded + right.both_succeeded,
        left.only_v1_failed + right.only_v1_failed,
        left.only_v2_failed + right.only_v2_failed,
        left.both_failed + right.both_failed,
    )


def _served(blocks: list[Block], version: str) -> VersionStats | None:
    mask_key = "on_v2"
    requests = sum(block.served[version][0] for block in blocks)
    errors = sum(block.served[version][1] for block in blocks)
    parts = [
        block.latencies[version][
            block.latencies[mask_key] if version == "v2" else ~block.latencies[mask_key]
        ]
        for block in blocks
    ]
    return _stats(requests, errors, np.concatenate(parts) if parts else np.array([]))


def _evidence(
    previous: Block | None,
    current: Block,
    look: int,
    paired: bool,
    since_start: PairedCounts | None = None,
) -> Evidence:
    ten = [block for block in (previous, current) if block is not None]
    if not paired:
        return Evidence(
            v1_5m=_served([current], "v1"),
            v2_5m=_served([current], "v2"),
            v1_10m=_served(ten, "v1"),
            v2_10m=_served(ten, "v2"),
            look=look,
        )
    pairs_10m = current.pairs if previous is None else _add(previous.pairs, current.pairs)
    p95 = None
    if current.pairs.pairs:
        p95 = (
            float(np.percentile(current.latencies["v1"], 95)),
            float(np.percentile(current.latencies["v2"], 95)),
        )
    return Evidence(
        v1_5m=_served([current], "v1"),
        v2_5m=_served([current], "v2"),
        v1_10m=_served(ten, "v1"),
        v2_10m=_served(ten, "v2"),
        pairs_5m=current.pairs,
        pairs_10m=pairs_10m,
        paired_p95_5m=p95,
        discordant_since_start=since_start,
        look=look,
    )


def first_rollback(rng: np.random.Generator, scenario: Scenario) -> tuple[int | None, set[str]]:
    """The monitor run (1-based) that rolls this canary back, or None, and the rules."""
    previous = None
    since_start = PairedCounts()
    for look in range(1, LOOKS + 1):
        current = _block(rng, scenario)
        since_start = _add(since_start, current.pairs)
        evidence = _evidence(
            previous, current, look, paired=scenario.model != "unpaired", since_start=since_start
        )
        breaches = analysis.rollback_breaches(evidence, CONFIG)
        if breaches:
            return look, {breach.rule for breach in breaches}
        previous = current
    return None, set()


def false_rollbacks(rng: np.random.Generator, canaries: int) -> list[str]:
    rows = [
        "| failure model | baseline errors | 50 req/s | 2 req/s |",
        "|---|---|---|---|",
    ]
    for model in ("input-driven", "independent", "unpaired"):
        for base in (0.0, 0.02, 0.045, 0.10):
            cells = []
            for rate in (50.0, 2.0):
                scenario = Scenario(rate=rate, base_error=base, model=model)
                rolled = sum(first_rollback(rng, scenario)[0] is not None for _ in range(canaries))
                cells.append(f"{rolled / canaries:.2%} ({rolled}/{canaries})")
            rows.append(f"| {model} | {base:.1%} | {cells[0]} | {cells[1]} |")
    return rows


def time_to_rollback(rng: np.random.Generator, canaries: int) -> list[str]:
    rows = [
        "| v2 regression | at 50 req/s: median run (rolled back) | at 2 req/s |",
        "|---|---|---|",
    ]
    cases = [
        ("fails an extra 3% of inputs (baseline 4.5%)", {"base_error": 0.045, "extra_error": 0.03}),
        ("fails an extra 6% of inputs (baseline 4.5%)", {"base_error": 0.045, "extra_error": 0.06}),
        ("fails an extra 6% of inputs (baseline 0%)", {"base_error": 0.0, "extra_error": 0.06}),
        (
            "p95 x2.5 over the floor (v1 p95 ~2 ms)",
            {"base_error": 0.0, "v2_slowdown": 2.5, "v1_latency_ms": 1.5},
        ),
    ]
    for name, fields in cases:
        cells = []
        for rate in (50.0, 2.0):
            scenario = Scenario(rate=rate, **fields)  # type: ignore[arg-type]
            runs = [first_rollback(rng, scenario)[0] for _ in range(canaries)]
            caught = sorted(run for run in runs if run is not None)
            median = caught[len(caught) // 2] if len(caught) * 2 > canaries else "not within 12"
            cells.append(f"{median} ({len(caught) / canaries:.0%})")
        rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return rows


def latency_noise(rng: np.random.Generator, canaries: int) -> list[str]:
    scenario = Scenario(rate=50.0, base_error=0.0, model="input-driven")
    rolled = sum(first_rollback(rng, scenario)[0] is not None for _ in range(canaries))
    return [
        "| latency noise: us evaluations, v2 +5.5 us, 0.5% stalls of 0.2-2 ms | rolled back |",
        "|---|---|",
        f"| 50 req/s, 12 runs | {rolled}/{canaries} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=1000, help="canaries per cell")
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    rng = np.random.default_rng(options.seed)
    print(f"## Identical versions rolled back within 60 minutes ({LOOKS} monitor runs)\n")
    print("\n".join(false_rollbacks(rng, options.canaries)))
    print("\n## Monitor runs until a worse v2 is rolled back (10% canary)\n")
    print("\n".join(time_to_rollback(rng, max(200, options.canaries // 4))))
    print("\n## Latency noise\n")
    print("\n".join(latency_noise(rng, options.canaries)))


if __name__ == "__main__":
    main()
