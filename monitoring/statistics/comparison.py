"""The ``/comparison`` answer: v2 - v1 differences with their tests, around the one decision.

The window's numbers (``window_minutes``) describe; the recommendation, and whether v2
fails more often, come from the decision (``decision.decide``), whose tests are valid
however often anyone polls.
"""

from __future__ import annotations

from typing import Any

from monitoring.statistics import paired
from monitoring.statistics.analysis import (
    Evidence,
    VersionStats,
    error_rate_test,
    percent_text,
    with_defaults,
)
from monitoring.statistics.decision import Decision, own_rate


def compare(
    *,
    v1: VersionStats | None,
    v2: VersionStats | None,
    pairs: paired.PairedCounts,
    latency: dict[str, Any] | None,
    evidence: Evidence,
    decision: Decision,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Paired outcomes (the same inputs in both versions) are used whenever the window has
    them; otherwise the two served populations are compared."""
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
    recommendation = decision.recommendation
    error_diff = (
        v2_error_rate - v1_error_rate
        if v1_error_rate is not None and v2_error_rate is not None
        else None
    )
    v2_worse = decision.worse.rejected
    significant = bool(v2_worse or (latency and latency["significant"]))
    since = evidence.pairs_since_start
    return {
        "comparison": {
            "success_rate_diff": -error_diff if error_diff is not None else None,
            "error_rate_diff": error_diff,
            "latency_diff_ms": (v2.avg_latency_ms - v1.avg_latency_ms) if v1 and v2 else None,
            "is_better": recommendation == "promote",
            "recommendation": recommendation,
        },
        "analysis": {
            # With evidence that stays valid however often anyone polls (SPEC 9.6).
            "v1_is_more_reliable": v2_worse,
            "v2_is_faster": bool(v1 and v2 and v2.avg_latency_ms < v1.avg_latency_ms),
            "significant_difference": significant,
            "basis": "paired" if pairs.pairs else "unpaired",
        },
        "evidence": {
            "error_rate": errors,
            "v2_worse": decision.worse.as_dict(),
            "non_inferiority": decision.non_inferiority.as_dict(),
            "latency": latency,
            "latency_rule": decision.latency,
            "thresholds": thresholds(evidence, decision, config),
            "breaches": [breach.__dict__ for breach in decision.breaches],
            "breaker_state": decision.breaker_state,
            "sample_ratio": evidence.sample_ratio,
            "look": evidence.look,
            "look_alpha": paired.look_alpha(evidence.look),
            "min_samples": min_samples,
            "enough_samples": recommendation == "promote"
            or (since is not None and since.pairs >= min_samples)
            or evidence.pairs_10m.pairs >= min_samples
            or _enough(evidence.v1_10m, evidence.v2_10m, min_samples),
            "waiting_for": list(decision.waiting_for),
        },
    }


def _enough(v1: VersionStats | None, v2: VersionStats | None, min_samples: int) -> bool:
    return bool(v1 and v2 and min(v1.total_requests, v2.total_requests) >= min_samples)


def thresholds(
    evidence: Evidence, decision: Decision, config: dict[str, Any]
) -> list[dict[str, Any]]:
    """The guide's thresholds against the current windows, on v2's own failures."""
    config = with_defaults(config)
    checks: list[dict[str, Any]] = []
    five = own_rate(evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m, 1)
    ten = own_rate(evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m, 1)
    if five is not None:
        checks.append(
            {
                "name": "error_rate",
                "rule": f"v2 error rate (its own failures, {five.basis}) <= "
                f"{percent_text(config['error_threshold'])}",
                "observed": five.rate,
                "held": five.rate <= config["error_threshold"],
            }
        )
    if ten is not None:
        checks.append(
            {
                "name": "success_rate",
                "rule": f"v2 success rate (its own failures, {ten.basis}) >= "
                f"{percent_text(config['success_threshold'])}",
                "observed": 1 - ten.rate,
                "held": 1 - ten.rate >= config["success_threshold"],
            }
        )
    latency = decision.latency
    if latency is not None and latency.get("v2_p95_ms") is not None:
        ceiling = latency["v1_p95_ms"] + latency["margin_ms"]
        checks.append(
            {
                "name": "latency_p95",
                "rule": (
                    f"lower bound of v2 p95 - v1 p95 <= max(({config['latency_multiplier']} - 1)"
                    f" x v1 p95, {config['latency_floor_ms']} ms) = {latency['margin_ms']:.3f} "
                    f"ms ({latency['basis']}, {latency['tail_pairs']:,} tail observations)"
                ),
                "observed": latency["v2_p95_ms"],
                "ceiling": ceiling,
                "held": not latency["breached"],
            }
        )
    return checks
