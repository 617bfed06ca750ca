"""The guide's pre-promote checklist as a pure function over evidence (SPEC 9.3).

``readiness_checks`` takes numbers already computed (``ReadinessEvidence``) and
returns one explainable check per item of the checklist, so each boundary is
tested without a database and the readiness endpoint, the promote gate and the
monitor all judge with the same code. ``monitoring.automation.governance`` gathers the
evidence.

``success_rate`` judges with McNemar's test on the same inputs once there are
``min_samples`` paired executions, else with the unpaired two-proportion test of
``/comparison``; ``sample_ratio`` (no assignments yet, or a target filter) and
``shadow_agreement`` (no paired executions) report "not measured yet" when their
optional evidence is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from monitoring.statistics.analysis import (
    ALPHA,
    DEGRADED_LATENCY_RATIO,
    EPSILON,
    VersionStats,
    p_text,
    percent_text,
)
from monitoring.statistics.decision import NonInferiority, WorseTest

READINESS_TRAFFIC = 50  # the guide: "at least an hour at 50%"
SAMPLE_RATIO_ALPHA = 0.001  # SPEC 9.2: a sample-ratio mismatch is p < 0.001
NOT_MEASURED = "not measured yet"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    required: bool
    observed: float | str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReadinessEvidence:
    """Everything the checklist judges, measured over the canary so far.

    ``v2_worse_p_value`` is the one-sided p-value of "v2 fails more often than
    v1" and ``v2_worse_test`` names the test that produced it: today the
    unpaired two-proportion z-test; paired evaluation swaps in McNemar's test on
    the same inputs by setting these two fields. The optional fields are None
    until their measurement exists.
    """

    v1: VersionStats | None
    v2: VersionStats | None
    v2_worse_p_value: float | None
    v2_worse_test: str
    breaker_state: str
    minutes_at_traffic: float | None  # the current continuous stretch at >= 50%, None if below
    readiness_minutes: int
    min_samples: int
    latency_floor_ms: float
    sample_ratio_p_value: float | None = None
    shadow_agreement_rate: float | None = None
    # The one decision's promote evidence (SPEC 9.6); without it the p-value above judges.
    non_inferiority: NonInferiority | None = None
    v2_worse: WorseTest | None = None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: tuple[Check, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": [check.as_dict() for check in self.checks]}


def readiness_checks(evidence: ReadinessEvidence) -> Readiness:
    """``ready`` exactly when every required check passes; informational ones never block."""
    checks = (
        _time_at_traffic(evidence),
        _success_rate(evidence),
        _p95_latency(evidence),
        _breaker_closed(evidence),
        _min_samples(evidence),
        _sample_ratio(evidence),
        _shadow_agreement(evidence),
    )
    return Readiness(ready=all(check.passed for check in checks if check.required), checks=checks)


def _time_at_traffic(e: ReadinessEvidence) -> Check:
    minutes = e.minutes_at_traffic
    if minutes is None:
        return Check(
            "time_at_traffic",
            False,
            True,
            None,
            f"Traffic is below {READINESS_TRAFFIC}%; the guide asks for at least "
            f"{e.readiness_minutes} minutes at {READINESS_TRAFFIC}% or more before promoting.",
        )
    passed = minutes >= e.readiness_minutes
    return Check(
        "time_at_traffic",
        passed,
        True,
        round(minutes, 1),
        f"{minutes:.1f} minutes at {READINESS_TRAFFIC}% or more since traffic last rose to it "
        f"(needs {e.readiness_minutes}; a drop below {READINESS_TRAFFIC}% starts over).",
    )


def _success_rate(e: ReadinessEvidence) -> Check:
    if e.non_inferiority is not None:
        return _non_inferior(e, e.non_inferiority)
    if e.v1 is None or e.v2 is None or e.v2_worse_p_value is None:
        return Check(
            "success_rate",
            False,
            True,
            None,
            "No evidence yet: both versions need requests to be compared.",
        )
    difference = e.v2.success_rate - e.v1.success_rate
    worse = e.v2_worse_p_value < ALPHA
    verdict = "significantly worse than" if worse else "not significantly worse than"
    return Check(
        "success_rate",
        not worse,
        True,
        difference,
        f"v2 success rate {percent_text(e.v2.success_rate)} vs v1 "
        f"{percent_text(e.v1.success_rate)}: v2 is "
        f"{verdict} v1 (one-sided p {_p(e.v2_worse_p_value)}, {e.v2_worse_test}, "
        f"alpha {ALPHA:.2f}).",
    )


def _non_inferior(e: ReadinessEvidence, shown: NonInferiority) -> Check:
    """Passes only when v2 is shown not worse than v1 by more than the margin: absence of
    evidence is not evidence (SPEC 9.6)."""
    worse = e.v2_worse is not None and e.v2_worse.rejected
    observed = None
    if e.v1 is not None and e.v2 is not None:
        observed = e.v2.success_rate - e.v1.success_rate
    if worse and e.v2_worse is not None:
        detail = f"v2 fails more often than v1: {e.v2_worse.detail}."
    elif shown.shown:
        detail = f"Shown not worse: {shown.detail}."
    else:
        detail = f"Not yet shown not worse: {shown.detail}."
    return Check("success_rate", shown.shown and not worse, True, observed, detail)


def _p95_latency(e: ReadinessEvidence) -> Check:
    if e.v1 is None or e.v2 is None:
        return Check(
            "p95_latency", False, True, None, "No evidence yet: both versions need requests."
        )
    ceiling = DEGRADED_LATENCY_RATIO * e.v1.p95_latency_ms + e.latency_floor_ms
    passed = e.v2.p95_latency_ms <= ceiling + EPSILON
    return Check(
        "p95_latency",
        passed,
        True,
        e.v2.p95_latency_ms,
        f"v2 p95 {e.v2.p95_latency_ms:.3f} ms, limit {DEGRADED_LATENCY_RATIO} x v1 p95 "
        f"({e.v1.p95_latency_ms:.3f} ms) + {e.latency_floor_ms:g} ms = {ceiling:.3f} ms.",
    )


def _breaker_closed(e: ReadinessEvidence) -> Check:
    return Check(
        "breaker_closed",
        e.breaker_state == "CLOSED",
        True,
        e.breaker_state,
        f"The circuit breaker is {e.breaker_state}.",
    )


def _min_samples(e: ReadinessEvidence) -> Check:
    v1 = e.v1.total_requests if e.v1 else 0
    v2 = e.v2.total_requests if e.v2 else 0
    return Check(
        "min_samples",
        min(v1, v2) >= e.min_samples,
        True,
        min(v1, v2),
        f"{v1} v1 and {v2} v2 requests; each version needs at least {e.min_samples}.",
    )


def _sample_ratio(e: ReadinessEvidence) -> Check:
    if e.sample_ratio_p_value is None:
        return Check("sample_ratio", True, True, None, NOT_MEASURED)
    passed = e.sample_ratio_p_value >= SAMPLE_RATIO_ALPHA
    return Check(
        "sample_ratio",
        passed,
        True,
        e.sample_ratio_p_value,
        f"v2's share of new assignments {'matches' if passed else 'does not match'} the "
        f"traffic percentage (chi-square p {_p(e.sample_ratio_p_value)}, "
        f"mismatch below {SAMPLE_RATIO_ALPHA}).",
    )


def _shadow_agreement(e: ReadinessEvidence) -> Check:
    if e.shadow_agreement_rate is None:
        return Check("shadow_agreement", True, False, None, NOT_MEASURED)
    return Check(
        "shadow_agreement",
        True,
        False,
        e.shadow_agreement_rate,
        f"v1 and v2 agreed on {percent_text(e.shadow_agreement_rate)} of the same inputs "
        "(informational: a rule change is meant to change some decisions).",
    )


def one_sided_worse_p_value(two_sided_p: float, difference: float) -> float:
    """One-sided p of "v2's error rate is higher" from a symmetric two-sided test."""
    return two_sided_p / 2 if difference > 0 else 1 - two_sided_p / 2


def stretch_started_at(
    changes: Iterable[tuple[datetime, int]], *, threshold: int = READINESS_TRAFFIC
) -> datetime | None:
    """When traffic last rose to ``threshold``% or more and stayed there, from the traffic
    history ``(at, percentage)`` in time order; None when traffic is below it now.

    Only the current continuous stretch counts: an hour at 50%, a dip to 10%
    and ten minutes at 50% again is ten minutes, because the guide's hour is
    meant to be observed at that load without interruption.
    """
    started: datetime | None = None
    for at, percentage in changes:
        if percentage >= threshold:
            if started is None:
                started = at
        else:
            started = None
    return started


def _p(value: float) -> str:
    """A p-value rounded as the console shows it: "< 0.0001" rather than "= 1.2e-05"."""
    return p_text(value).removeprefix("p ")
