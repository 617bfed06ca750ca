"""The numbers operators decide with: rollback rules, health, v1-vs-v2 comparison.

Pure functions over per-version statistics, so every rule is tested at its exact
boundary without a database. The monitor, the health endpoint and the
comparison all judge with these same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

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


def _enough(sample: VersionStats | None, min_samples: int) -> bool:
    return sample is not None and sample.total_requests >= min_samples


def rollback_breaches(
    *,
    v1_5m: VersionStats | None,
    v2_5m: VersionStats | None,
    v2_10m: VersionStats | None,
    config: dict[str, Any],
) -> list[Breach]:
    """The automatic-rollback rules of the contract; a thin window gives no verdict."""
    min_samples = int(config["min_samples"])
    breaches: list[Breach] = []
    if v2_5m is not None and _enough(v2_5m, min_samples):
        if v2_5m.error_rate > config["error_threshold"]:
            breaches.append(
                Breach(
                    "error_rate",
                    f"v2 error rate {v2_5m.error_rate:.2%} over the last {ERROR_WINDOW_MINUTES} "
                    f"minutes is above the {config['error_threshold']:.2%} threshold "
                    f"({v2_5m.error_count} of {v2_5m.total_requests} requests failed).",
                    v2_5m.error_rate,
                    config["error_threshold"],
                )
            )
        if v1_5m is not None and v1_5m.total_requests > 0:
            ceiling = config["latency_multiplier"] * v1_5m.p95_latency_ms
            if v2_5m.p95_latency_ms > ceiling:
                breaches.append(
                    Breach(
                        "latency_p95",
                        f"v2 p95 latency {v2_5m.p95_latency_ms:.2f} ms over the last "
                        f"{LATENCY_WINDOW_MINUTES} minutes is above {config['latency_multiplier']}"
                        f" x v1 p95 ({v1_5m.p95_latency_ms:.2f} ms).",
                        v2_5m.p95_latency_ms,
                        ceiling,
                    )
                )
    if (
        v2_10m is not None
        and _enough(v2_10m, min_samples)
        and v2_10m.success_rate < config["success_threshold"]
    ):
        breaches.append(
            Breach(
                "success_rate",
                f"v2 success rate {v2_10m.success_rate:.2%} over the last "
                f"{SUCCESS_WINDOW_MINUTES} minutes is below the "
                f"{config['success_threshold']:.2%} threshold.",
                v2_10m.success_rate,
                config["success_threshold"],
            )
        )
    return breaches


def health_warnings(
    *,
    v1_5m: VersionStats | None,
    v2_5m: VersionStats | None,
    v2_10m: VersionStats | None,
    config: dict[str, Any],
) -> list[str]:
    """Early warnings: values within 20% of a threshold, or v2 p95 above 1.2 x v1 p95."""
    warnings: list[str] = []
    min_samples = int(config["min_samples"])
    if v2_5m is not None and _enough(v2_5m, min_samples):
        limit = config["error_threshold"]
        if limit * (1 - NEAR_THRESHOLD) - EPSILON <= v2_5m.error_rate <= limit:
            warnings.append(
                f"v2 error rate {v2_5m.error_rate:.2%} is within 20% of the "
                f"{limit:.2%} rollback threshold."
            )
        if v1_5m is not None and v1_5m.total_requests > 0 and v1_5m.p95_latency_ms > 0:
            ratio = v2_5m.p95_latency_ms / v1_5m.p95_latency_ms
            if ratio > DEGRADED_LATENCY_RATIO:
                warnings.append(
                    f"v2 p95 latency ({v2_5m.p95_latency_ms:.2f} ms) is {ratio:.1f}x v1's "
                    f"({v1_5m.p95_latency_ms:.2f} ms); the rollback threshold is "
                    f"{config['latency_multiplier']}x."
                )
    if v2_10m is not None and _enough(v2_10m, min_samples):
        floor = config["success_threshold"]
        if floor <= v2_10m.success_rate < floor + NEAR_THRESHOLD * (1 - floor) - EPSILON:
            warnings.append(
                f"v2 success rate {v2_10m.success_rate:.2%} is within 20% of the "
                f"{floor:.2%} rollback floor."
            )
    return warnings


def health_status(
    *, breaches: Sequence[Breach], breaker_state: str, warnings: Sequence[str]
) -> str:
    if breaches or breaker_state == "OPEN":
        return "unhealthy"
    if breaker_state == "HALF_OPEN" or warnings:
        return "degraded"
    return "healthy"


def error_rate_test(v1: VersionStats, v2: VersionStats) -> dict[str, Any]:
    """Two-proportion z-test on error rates (pooled), with a Wald 95% CI of v2 - v1.

    Computed as the chi-square test of the 2x2 table without continuity
    correction, which is the same test (chi2 = z^2).
    """
    from scipy import stats as scipy_stats  # NOTE: imported on use; it costs ~1 s at start-up

    table = [
        [v1.error_count, v1.success_count],
        [v2.error_count, v2.success_count],
    ]
    difference = v2.error_rate - v1.error_rate
    if (v1.error_count + v2.error_count) in (0, v1.total_requests + v2.total_requests):
        p_value = 1.0  # no variation at all: nothing to distinguish
    else:
        p_value = float(scipy_stats.chi2_contingency(table, correction=False).pvalue)
    z_critical = float(scipy_stats.norm.ppf(1 - ALPHA / 2))
    standard_error = (
        v1.error_rate * (1 - v1.error_rate) / v1.total_requests
        + v2.error_rate * (1 - v2.error_rate) / v2.total_requests
    ) ** 0.5
    return {
        "test": "two-proportion z-test",
        "p_value": p_value,
        "significant": p_value < ALPHA,
        "difference": difference,
        "confidence_interval": [
            difference - z_critical * standard_error,
            difference + z_critical * standard_error,
        ],
        "confidence_level": CONFIDENCE,
        "n_v1": v1.total_requests,
        "n_v2": v2.total_requests,
    }


def latency_test(v1_sample: Sequence[float], v2_sample: Sequence[float]) -> dict[str, Any]:
    """Mann-Whitney U on per-request latencies: no normality assumption."""
    from scipy import stats as scipy_stats

    if not v1_sample or not v2_sample or len(set(v1_sample) | set(v2_sample)) < 2:
        p_value = 1.0
        statistic = None
    else:
        result = scipy_stats.mannwhitneyu(v2_sample, v1_sample, alternative="two-sided")
        p_value, statistic = float(result.pvalue), float(result.statistic)
    return {
        "test": "Mann-Whitney U",
        "p_value": p_value,
        "u_statistic": statistic,
        "significant": p_value < ALPHA,
        "sample_v1": len(v1_sample),
        "sample_v2": len(v2_sample),
    }


def compare(
    *,
    v1: VersionStats | None,
    v2: VersionStats | None,
    v1_latencies: Sequence[float],
    v2_latencies: Sequence[float],
    breaches: Sequence[Breach],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The comparison answer: diffs (v2 - v1), tests, thresholds and a recommendation.

    rollback: a rollback threshold is breached, or v2's error rate is
    significantly higher than v1's. promote: both versions have at least
    ``min_samples`` requests, every threshold holds and v2 is not significantly
    worse. Otherwise collect_more_data.
    """
    min_samples = int(config["min_samples"])
    enough = _enough(v1, min_samples) and _enough(v2, min_samples)
    errors = error_rate_test(v1, v2) if v1 and v2 else None
    latency = latency_test(v1_latencies, v2_latencies) if v1 and v2 else None
    v2_worse = bool(errors and errors["significant"] and errors["difference"] > 0)
    thresholds = _thresholds(v1, v2, config)
    if breaches or v2_worse:
        recommendation = "rollback"
    elif enough and all(check["held"] for check in thresholds):
        recommendation = "promote"
    else:
        recommendation = "collect_more_data"
    significant = bool((errors and errors["significant"]) or (latency and latency["significant"]))
    return {
        "comparison": {
            "success_rate_diff": (v2.success_rate - v1.success_rate) if v1 and v2 else None,
            "error_rate_diff": (v2.error_rate - v1.error_rate) if v1 and v2 else None,
            "latency_diff_ms": (v2.avg_latency_ms - v1.avg_latency_ms) if v1 and v2 else None,
            "is_better": recommendation == "promote",
            "recommendation": recommendation,
        },
        "analysis": {
            "v1_is_more_reliable": bool(v1 and v2 and v1.error_rate < v2.error_rate),
            "v2_is_faster": bool(v1 and v2 and v2.avg_latency_ms < v1.avg_latency_ms),
            "significant_difference": significant,
        },
        "evidence": {
            "error_rate": errors,
            "latency": latency,
            "thresholds": thresholds,
            "breaches": [asdict(breach) for breach in breaches],
            "min_samples": min_samples,
            "enough_samples": enough,
        },
    }


def _thresholds(
    v1: VersionStats | None, v2: VersionStats | None, config: dict[str, Any]
) -> list[dict[str, Any]]:
    if v2 is None:
        return []
    checks = [
        {
            "name": "error_rate",
            "rule": f"v2 error rate <= {config['error_threshold']}",
            "observed": v2.error_rate,
            "held": v2.error_rate <= config["error_threshold"],
        },
        {
            "name": "success_rate",
            "rule": f"v2 success rate >= {config['success_threshold']}",
            "observed": v2.success_rate,
            "held": v2.success_rate >= config["success_threshold"],
        },
    ]
    if v1 is not None:
        ceiling = config["latency_multiplier"] * v1.p95_latency_ms
        checks.append(
            {
                "name": "latency_p95",
                "rule": f"v2 p95 <= {config['latency_multiplier']} x v1 p95 ({ceiling:.3f} ms)",
                "observed": v2.p95_latency_ms,
                "held": v2.p95_latency_ms <= ceiling,
            }
        )
    return checks
