"""The numbers operators decide with: rollback rules, health, v1-vs-v2 comparison.

Pure functions over per-version statistics, so every rule is tested at its exact
boundary without a database. The monitor, the health endpoint and the
comparison all judge with these same functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from monitoring.statistics import paired
from monitoring.statistics.paired import PairedCounts

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
NEAR_THRESHOLD = 0.2  # "degraded" when a value is within 20% of its threshold
DEGRADED_LATENCY_RATIO = 1.2
# NOTE: thresholds such as 0.8 x 0.05 are not exact in binary floating point;
# boundaries are compared with this tolerance so 4 errors in 100 count as 4%.
EPSILON = 1e-9
ERROR_WINDOW_MINUTES = 5
LATENCY_WINDOW_MINUTES = 5
SUCCESS_WINDOW_MINUTES = 10


@dataclass(frozen=True)
class VersionStats:
    total_requests: int
    success_count: int
    error_count: int
    success_rate: float
    error_rate: float
    avg_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Breach:
    rule: str  # error_rate | latency_p95 | success_rate
    message: str
    observed: float
    threshold: float
    p_value: float | None = None


@dataclass(frozen=True)
class Evidence:
    """Everything one verdict is made of, gathered at one moment (``selectors.evidence_at``).

    ``v*_5m``/``v*_10m``: the served requests of each version in the monitor's
    windows; ``pairs_*``: the executions that evaluated both versions on the same
    input (paired evaluation, SPEC 9.1), preferred whenever there are enough of
    them; ``paired_p95_5m``: (v1, v2) p95 latency over the 5-minute pairs;
    ``discordant_since_start``/``pairs_since_start``: the evidence the always-valid tests
    weigh (every input since the start), while the guide's thresholds are judged on the
    windows; ``strata``: the served requests per traffic step, without pairs;
    ``latency_samples_5m``: the window's latencies for the latency test; ``look``: which
    monitor look this is since the canary started (the latency test's spent level).
    """

    v1_5m: VersionStats | None = None
    v2_5m: VersionStats | None = None
    v1_10m: VersionStats | None = None
    v2_10m: VersionStats | None = None
    pairs_5m: PairedCounts = field(default_factory=PairedCounts)
    pairs_10m: PairedCounts = field(default_factory=PairedCounts)
    paired_p95_5m: tuple[float, float] | None = None
    # The inputs on which exactly one version failed, since the canary started.
    discordant_since_start: PairedCounts | None = None
    look: int = 1
    sample_ratio: dict[str, Any] | None = None
    # Every pair since the canary started (the non-inferiority bound needs the total).
    pairs_since_start: PairedCounts | None = None
    # Without pairs: (v1 errors, v1 requests, v2 errors, v2 requests) per traffic step.
    strata: tuple[tuple[int, int, int, int], ...] = ()
    # (v1 latencies, v2 latencies, basis) of the 5-minute window, for the latency test.
    latency_samples_5m: tuple[tuple[float, ...], tuple[float, ...], str] | None = None

    @property
    def has_data(self) -> bool:
        return self.v2_5m is not None or self.pairs_5m.pairs > 0


def percent_text(value: float, *, signed: bool = False) -> str:
    """A rate as people read it: two decimals ("7.32%", "+0.41%"), and below 0.1% two
    significant digits ("0.009%"), so a small threshold never reads "0.00%" or "9e-05"."""
    shown = value * 100
    magnitude = abs(shown)
    decimals = (
        2 if magnitude >= 0.1 or magnitude == 0 else min(8, 1 - math.floor(math.log10(magnitude)))
    )
    text = f"{shown:+.{decimals}f}" if signed else f"{shown:.{decimals}f}"
    return f"{text}%"


def signed_percent_text(value: float) -> str:
    """``percent_text`` with its sign: a difference ("+0.41%", "-0.009%")."""
    return percent_text(value, signed=True)


def p_text(value: float) -> str:
    """ "p < 0.0001" rather than "p = 0.0000", "p > 0.9999" rather than "p = 1.0000"."""
    if value < 0.0001:
        return "p < 0.0001"
    if value > 0.9999:
        return "p > 0.9999"
    return f"p = {value:.4f}"


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Stored configs predate newer fields; judge them with the defaults."""
    from deployments.canary_config import default_canary_config

    return {**default_canary_config(), **config}


def _enough(sample: VersionStats | None, min_samples: int) -> bool:
    return sample is not None and sample.total_requests >= min_samples


def latency_ceiling(v1_p95: float, config: dict[str, Any]) -> float:
    """v2's p95 may not exceed this: a multiple of v1's, but never less than a fixed floor
    above it, so microsecond jitter on fast rules never counts as a regression."""
    config = with_defaults(config)
    return float(max(config["latency_multiplier"] * v1_p95, v1_p95 + config["latency_floor_ms"]))


def error_rate_test(v1: VersionStats, v2: VersionStats) -> dict[str, Any]:
    """Unpaired v2 - v1 error rates: Agresti-Caffo's adjusted Wald test and interval.

    Adding one success and one failure to each version keeps the interval honest
    with no errors at all (never zero-width), and the p-value is computed from the
    same statistic, so p < 0.05 exactly when the interval excludes 0.
    """
    from scipy import stats as scipy_stats  # NOTE: imported on use; it costs ~1 s at start-up

    adjusted_v1 = (v1.error_count + 1) / (v1.total_requests + 2)
    adjusted_v2 = (v2.error_count + 1) / (v2.total_requests + 2)
    adjusted = adjusted_v2 - adjusted_v1
    standard_error = math.sqrt(
        adjusted_v1 * (1 - adjusted_v1) / (v1.total_requests + 2)
        + adjusted_v2 * (1 - adjusted_v2) / (v2.total_requests + 2)
    )
    p_value = float(2 * scipy_stats.norm.sf(abs(adjusted / standard_error)))
    return {
        "test": "two-proportion (Agresti-Caffo adjusted Wald)",
        "p_value": p_value,
        "significant": p_value < ALPHA,
        "difference": v2.error_rate - v1.error_rate,
        "adjusted_difference": adjusted,
        "confidence_interval": [
            adjusted - paired.Z_95 * standard_error,
            adjusted + paired.Z_95 * standard_error,
        ],
        "confidence_level": CONFIDENCE,
        "n_v1": v1.total_requests,
        "n_v2": v2.total_requests,
        "v1_error_rate": v1.error_rate,
        "v2_error_rate": v2.error_rate,
    }


def latency_test(v1_sample: Sequence[float], v2_sample: Sequence[float]) -> dict[str, Any]:
    """Mann-Whitney U (tie-corrected) on two deterministic samples, with the Hodges-Lehmann
    shift interval.

    The interval is the set of shifts the same test (normal approximation) does not
    reject, so p < 0.05 exactly when it excludes 0 (ties at 0 aside).
    """
    import numpy as np
    from scipy import stats as scipy_stats

    n1, n2 = len(v1_sample), len(v2_sample)
    answer: dict[str, Any] = {
        "test": "Mann-Whitney U",
        "p_value": 1.0,
        "u_statistic": None,
        "significant": False,
        "median_difference_ms": None,
        "confidence_interval_ms": None,
        "confidence_level": CONFIDENCE,
        "sample_v1": n1,
        "sample_v2": n2,
    }
    if not n1 or not n2:
        return answer
    differences = np.sort(np.subtract.outer(np.asarray(v2_sample), np.asarray(v1_sample)).ravel())
    pairs = differences.size
    above = pairs - int(np.searchsorted(differences, 0.0, side="right"))
    ties = int(np.searchsorted(differences, 0.0, side="right")) - int(
        np.searchsorted(differences, 0.0, side="left")
    )
    u_statistic = above + ties / 2
    mean = pairs / 2
    # Tie correction (Lehmann): tied values across the pooled sample carry less information.
    _, counts = np.unique(np.concatenate([v1_sample, v2_sample]), return_counts=True)
    n = n1 + n2
    tied = float(np.sum(counts.astype(float) ** 3 - counts)) / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(max(0.0, n1 * n2 / 12 * ((n + 1) - tied)))
    p_value = float(2 * scipy_stats.norm.sf(abs(u_statistic - mean) / sigma)) if sigma else 1.0
    # Shifts d with |U(d) - mean| <= z sigma, where U(d) = #{differences > d}:
    # [D_(m - b), D_(m - a + 1)] with a, b the accepted range of U (1-based ranks).
    accepted_low = math.ceil(mean - paired.Z_95 * sigma)
    accepted_high = math.floor(mean + paired.Z_95 * sigma)
    low_rank, high_rank = pairs - accepted_high, pairs - accepted_low + 1
    interval = None
    if 1 <= low_rank <= pairs and 1 <= high_rank <= pairs:
        interval = [float(differences[low_rank - 1]), float(differences[high_rank - 1])]
    answer.update(
        p_value=min(1.0, p_value),
        u_statistic=float(u_statistic),
        significant=p_value < ALPHA,
        median_difference_ms=float(np.median(differences)),
        confidence_interval_ms=interval,
    )
    return answer


def paired_latency_test(ratio: dict[str, Any], above: int, below: int) -> dict[str, Any]:
    """Sign test on per-input latency ratios, beside their median and its interval."""
    p_value = paired.sign_test(above, below)
    return {
        "test": "sign test on paired latencies",
        "p_value": p_value,
        "significant": p_value < ALPHA,
        "pairs": ratio["pairs"],
        "v2_over_v1_median_ratio": ratio["v2_over_v1_median_ratio"],
        "confidence_interval": ratio["ci"],
        "confidence_level": CONFIDENCE,
    }
