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
    ``discordant_since_start``: the evidence the paired test weighs (every input
    since the start on which exactly one version failed), while the guide's
    thresholds are judged on the windows; ``look``: which monitor look this is
    since the canary started (alpha spending).
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

    @property
    def has_data(self) -> bool:
        return self.v2_5m is not None or self.pairs_5m.pairs > 0


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Stored configs predate newer fields; judge them with the defaults."""
    from deployments.canary_config import default_canary_config

    return {**default_canary_config(), **config}


def _enough(sample: VersionStats | None, min_samples: int) -> bool:
    return sample is not None and sample.total_requests >= min_samples


@dataclass(frozen=True)
class _ErrorJudgement:
    """v2's error rate in a window and whether v2 fails more often than v1 with evidence."""

    basis: str  # "paired" | "unpaired"
    v2_error_rate: float
    v1_error_rate: float
    samples: int
    v2_worse: bool
    p_value: float
    level: float
    detail: str

    @property
    def rate_phrase(self) -> str:
        """v2's rate with what it is out of: paired rates count every input both versions
        evaluated, not only the requests v2 served."""
        rate = f"v2 error rate {self.v2_error_rate:.2%}"
        if self.basis == "paired":
            return f"{rate} (on the {self.samples:,} inputs both versions evaluated)"
        return rate


def _judge_errors(
    pairs: PairedCounts,
    v1: VersionStats | None,
    v2: VersionStats | None,
    *,
    min_samples: int,
    level: float,
    since_start: PairedCounts | None = None,
) -> _ErrorJudgement | None:
    """None: too few samples for a verdict (on the pairs, or on both versions).

    The paired test weighs every discordant input since the canary started
    (``since_start``) when known: evidence accumulates instead of being redrawn
    from each window, which also keeps repeated looks from inflating false alarms.
    """
    if pairs.pairs >= min_samples:
        weighed = since_start if since_start is not None else pairs
        worse, p_value = paired.v2_fails_more_paired(weighed, level)
        scope = "since the canary started" if since_start is not None else "in the window"
        return _ErrorJudgement(
            "paired",
            pairs.v2_errors / pairs.pairs,
            pairs.v1_errors / pairs.pairs,
            pairs.pairs,
            worse,
            p_value,
            level,
            f"{scope}, on the same inputs v2 failed where v1 succeeded "
            f"{weighed.only_v2_failed:,} times and the reverse {weighed.only_v1_failed:,} times "
            f"(one-sided McNemar {_p(p_value)}, needed <= {_level(level)})",
        )
    if _enough(v1, min_samples) and _enough(v2, min_samples):
        assert v1 is not None and v2 is not None
        worse, p_value = paired.v2_fails_more_unpaired(
            v1.error_count, v1.total_requests, v2.error_count, v2.total_requests, level
        )
        return _ErrorJudgement(
            "unpaired",
            v2.error_rate,
            v1.error_rate,
            v2.total_requests,
            worse,
            p_value,
            level,
            f"v1 failed {v1.error_rate:.2%} of {v1.total_requests:,} requests "
            f"(one-sided Fisher exact {_p(p_value)}, needed <= {_level(level)})",
        )
    return None


def _p(value: float) -> str:
    """ "p < 0.0001" rather than "p = < 0.0001" or "p = 0.0000"."""
    return "p < 0.0001" if value < 0.0001 else f"p = {value:.4f}"


def _level(value: float) -> str:
    """A significance level; a spent-down one keeps two significant digits, never "0.0000"."""
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.2g}"


def _window_judgements(
    evidence: Evidence, min_samples: int
) -> tuple[_ErrorJudgement | None, _ErrorJudgement | None]:
    """The error rule's 5-minute and the success rule's 10-minute judgement, each at
    half of this look's alpha."""
    level = paired.look_alpha(evidence.look) / 2
    return tuple(  # type: ignore[return-value]
        _judge_errors(
            pairs,
            v1,
            v2,
            min_samples=min_samples,
            level=level,
            since_start=evidence.discordant_since_start,
        )
        for pairs, v1, v2 in (
            (evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m),
            (evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m),
        )
    )


def rollback_breaches(evidence: Evidence, config: dict[str, Any]) -> list[Breach]:
    """The automatic-rollback rules (SPEC 6, refined by 9.2); thin windows give no verdict.

    The error and success rules need the guide's threshold breach **and** evidence
    that v2 fails more often than v1 on the same inputs; the alpha of 0.05 is
    spent across the canary's looks (``paired.look_alpha``) and split between the
    two rules, so identical versions are rolled back with probability under 5% over
    a whole canary, and inputs that fail in both versions never count against v2.
    """
    config = with_defaults(config)
    min_samples = int(config["min_samples"])
    breaches: list[Breach] = []
    errors, successes = _window_judgements(evidence, min_samples)
    limit = config["error_threshold"]
    if errors is not None and errors.v2_error_rate > limit and errors.v2_worse:
        breaches.append(
            Breach(
                "error_rate",
                f"{errors.rate_phrase} over the last {ERROR_WINDOW_MINUTES} "
                f"minutes is above the {limit:.2%} threshold, and v2 fails more often than v1: "
                f"{errors.detail}.",
                errors.v2_error_rate,
                limit,
                errors.p_value,
            )
        )
    floor = config["success_threshold"]
    if successes is not None and 1 - successes.v2_error_rate < floor and successes.v2_worse:
        breaches.append(
            Breach(
                "success_rate",
                f"v2 success rate {1 - successes.v2_error_rate:.2%} over the last "
                f"{SUCCESS_WINDOW_MINUTES} minutes is below the {floor:.2%} threshold, and v2 "
                f"fails more often than v1: {successes.detail}.",
                1 - successes.v2_error_rate,
                floor,
                successes.p_value,
            )
        )
    latency = _latency_p95(evidence, min_samples)
    if latency is not None:
        v1_p95, v2_p95, basis = latency
        ceiling = latency_ceiling(v1_p95, config)
        if v2_p95 > ceiling:
            breaches.append(
                Breach(
                    "latency_p95",
                    f"v2 p95 latency {v2_p95:.3f} ms over the last {LATENCY_WINDOW_MINUTES} "
                    f"minutes ({basis}) is above max({config['latency_multiplier']} x v1 p95, "
                    f"v1 p95 + {config['latency_floor_ms']} ms) = {ceiling:.3f} ms "
                    f"(v1 p95 {v1_p95:.3f} ms).",
                    v2_p95,
                    ceiling,
                )
            )
    return breaches


def latency_ceiling(v1_p95: float, config: dict[str, Any]) -> float:
    """v2's p95 may not exceed this: a multiple of v1's, but never less than a fixed floor
    above it, so microsecond jitter on fast rules never counts as a regression."""
    config = with_defaults(config)
    return float(max(config["latency_multiplier"] * v1_p95, v1_p95 + config["latency_floor_ms"]))


def _latency_p95(evidence: Evidence, min_samples: int) -> tuple[float, float, str] | None:
    if evidence.paired_p95_5m is not None and evidence.pairs_5m.pairs >= min_samples:
        v1_p95, v2_p95 = evidence.paired_p95_5m
        return v1_p95, v2_p95, f"paired, {evidence.pairs_5m.pairs:,} inputs"
    if _enough(evidence.v1_5m, min_samples) and _enough(evidence.v2_5m, min_samples):
        assert evidence.v1_5m is not None and evidence.v2_5m is not None
        return evidence.v1_5m.p95_latency_ms, evidence.v2_5m.p95_latency_ms, "served requests"
    return None


def health_warnings(evidence: Evidence, config: dict[str, Any]) -> list[str]:
    """Early warnings: near a threshold, p95 above 1.2x v1's (and the floor), a sample-ratio
    mismatch. Messages start with a code when a client may act on them."""
    config = with_defaults(config)
    warnings: list[str] = []
    min_samples = int(config["min_samples"])
    errors, successes = _window_judgements(evidence, min_samples)
    if errors is not None:
        limit = config["error_threshold"]
        if limit * (1 - NEAR_THRESHOLD) - EPSILON <= errors.v2_error_rate <= limit:
            warnings.append(
                f"{errors.rate_phrase} is within 20% of the {limit:.2%} rollback threshold."
            )
        elif errors.v2_error_rate > limit and not errors.v2_worse:
            warnings.append(
                f"{errors.rate_phrase} is above the {limit:.2%} threshold, "
                f"but v1 fails as often on the same traffic ({errors.detail}); no rollback."
            )
    latency = _latency_p95(evidence, min_samples)
    if latency is not None:
        v1_p95, v2_p95, basis = latency
        watch = max(DEGRADED_LATENCY_RATIO * v1_p95, v1_p95 + config["latency_floor_ms"])
        if v2_p95 > watch and v1_p95 > 0:
            warnings.append(
                f"v2 p95 latency ({v2_p95:.3f} ms) is {v2_p95 / v1_p95:.1f}x v1's "
                f"({v1_p95:.3f} ms, {basis}); the rollback threshold is "
                f"{config['latency_multiplier']}x (and at least {config['latency_floor_ms']} ms "
                "more)."
            )
    if successes is not None:
        floor = config["success_threshold"]
        rate = 1 - successes.v2_error_rate
        if floor <= rate < floor + NEAR_THRESHOLD * (1 - floor) - EPSILON:
            warnings.append(
                f"v2 success rate {rate:.2%} is within 20% of the {floor:.2%} rollback floor."
            )
    ratio = evidence.sample_ratio
    if ratio is not None and ratio.get("mismatch"):
        warnings.append(
            f"sample_ratio_mismatch: v2 got {ratio['observed_share']:.2%} of "
            f"{ratio['contexts']:,} new contexts against {ratio['expected_share']:.0%} expected "
            f"(chi-square {_p(ratio['p_value'])}); the canary's numbers may not describe "
            "the planned population. Automatic progression and promotion are paused."
        )
    return warnings


def health_status(
    *,
    breaches: Sequence[Breach],
    breaker_state: str,
    warnings: Sequence[str],
    has_data: bool = True,
) -> str:
    if breaches or breaker_state == "OPEN":
        return "unhealthy"
    if breaker_state == "HALF_OPEN" or warnings:
        return "degraded"
    if not has_data:
        return "no_data"
    return "healthy"


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
    }


def latency_test(v1_sample: Sequence[float], v2_sample: Sequence[float]) -> dict[str, Any]:
    """Mann-Whitney U on two deterministic samples, with the Hodges-Lehmann shift interval.

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
    sigma = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
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


def recommendation_for(
    *,
    evidence: Evidence,
    breaches: Sequence[Breach],
    breaker_state: str,
    error_test: dict[str, Any] | None,
    config: dict[str, Any],
) -> str:
    """rollback exactly when health is unhealthy (a rule breached or the breaker OPEN);
    promote when there are enough samples, every threshold holds, v2 is not
    significantly worse and the traffic split is as planned; else collect_more_data."""
    config = with_defaults(config)
    if breaches or breaker_state == "OPEN":
        return "rollback"
    min_samples = int(config["min_samples"])
    enough = evidence.pairs_10m.pairs >= min_samples or (
        _enough(evidence.v1_10m, min_samples) and _enough(evidence.v2_10m, min_samples)
    )
    v2_worse = bool(
        error_test and error_test["significant"] and (error_test["difference"] or 0) > 0
    )
    mismatch = bool(evidence.sample_ratio and evidence.sample_ratio.get("mismatch"))
    if enough and not v2_worse and not mismatch and breaker_state in ("CLOSED", "UNKNOWN"):
        return "promote"
    return "collect_more_data"


def compare(
    *,
    v1: VersionStats | None,
    v2: VersionStats | None,
    pairs: PairedCounts,
    latency: dict[str, Any] | None,
    evidence: Evidence,
    breaches: Sequence[Breach],
    breaker_state: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    """The comparison answer: diffs (v2 - v1), tests with intervals, and a recommendation.

    Paired outcomes (the same inputs in both versions) are used whenever the window
    has them; otherwise the two served populations are compared.
    """
    config = with_defaults(config)
    min_samples = int(config["min_samples"])
    if pairs.pairs:
        errors: dict[str, Any] | None = paired.error_rate_difference(pairs)
        v1_error_rate, v2_error_rate = pairs.error_rate("v1"), pairs.error_rate("v2")
    elif v1 and v2:
        errors = error_rate_test(v1, v2)
        v1_error_rate, v2_error_rate = v1.error_rate, v2.error_rate
    else:
        errors, v1_error_rate, v2_error_rate = None, None, None
    recommendation = recommendation_for(
        evidence=evidence,
        breaches=breaches,
        breaker_state=breaker_state,
        error_test=errors,
        config=config,
    )
    error_diff = (
        v2_error_rate - v1_error_rate
        if v1_error_rate is not None and v2_error_rate is not None
        else None
    )
    significant = bool((errors and errors["significant"]) or (latency and latency["significant"]))
    return {
        "comparison": {
            "success_rate_diff": -error_diff if error_diff is not None else None,
            "error_rate_diff": error_diff,
            "latency_diff_ms": (v2.avg_latency_ms - v1.avg_latency_ms) if v1 and v2 else None,
            "is_better": recommendation == "promote",
            "recommendation": recommendation,
        },
        "analysis": {
            "v1_is_more_reliable": bool(error_diff is not None and error_diff > 0),
            "v2_is_faster": bool(v1 and v2 and v2.avg_latency_ms < v1.avg_latency_ms),
            "significant_difference": significant,
            "basis": "paired" if pairs.pairs else "unpaired",
        },
        "evidence": {
            "error_rate": errors,
            "latency": latency,
            "thresholds": _thresholds(evidence, config),
            "breaches": [asdict(breach) for breach in breaches],
            "breaker_state": breaker_state,
            "sample_ratio": evidence.sample_ratio,
            "look": evidence.look,
            "look_alpha": paired.look_alpha(evidence.look),
            "min_samples": min_samples,
            "enough_samples": recommendation == "promote"
            or evidence.pairs_10m.pairs >= min_samples
            or (_enough(evidence.v1_10m, min_samples) and _enough(evidence.v2_10m, min_samples)),
        },
    }


def _thresholds(evidence: Evidence, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The guide's thresholds against the monitor's current windows (paired when possible)."""
    checks: list[dict[str, Any]] = []
    five, ten = evidence.pairs_5m, evidence.pairs_10m
    error_rate = (
        five.error_rate("v2")
        if five.pairs
        else (evidence.v2_5m.error_rate if evidence.v2_5m else None)
    )
    success_rate = (
        1 - (ten.error_rate("v2") or 0.0)
        if ten.pairs
        else (evidence.v2_10m.success_rate if evidence.v2_10m else None)
    )
    if error_rate is not None:
        checks.append(
            {
                "name": "error_rate",
                "rule": f"v2 error rate <= {config['error_threshold']}",
                "observed": error_rate,
                "held": error_rate <= config["error_threshold"],
            }
        )
    if success_rate is not None:
        checks.append(
            {
                "name": "success_rate",
                "rule": f"v2 success rate >= {config['success_threshold']}",
                "observed": success_rate,
                "held": success_rate >= config["success_threshold"],
            }
        )
    latency = _latency_p95(evidence, 1)
    if latency is not None:
        v1_p95, v2_p95, basis = latency
        ceiling = latency_ceiling(v1_p95, config)
        checks.append(
            {
                "name": "latency_p95",
                "rule": (
                    f"v2 p95 <= max({config['latency_multiplier']} x v1 p95, v1 p95 + "
                    f"{config['latency_floor_ms']} ms) = {ceiling:.3f} ms ({basis})"
                ),
                "observed": v2_p95,
                "held": v2_p95 <= ceiling,
            }
        )
    return checks
