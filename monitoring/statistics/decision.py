"""The one decision about a canary (SPEC 9.6): roll back, promote, or collect more data.

Every surface that says what to do takes it from ``decide``: the monitor (rollback,
auto-progress, auto-promote), ``/comparison``'s recommendation, ``/health``, readiness's
``success_rate``, the console's verdict and home rows, and the notifications. Pure: the
evidence in (``analysis.Evidence``), a ``Decision`` out, so each rule is tested at its
exact boundary without a database.

The rules, in words:

- **Evidence that v2 fails more often** is an always-valid test
  (``sequential.v2_worse_test`` on every input since the start on which exactly one
  version failed; without pairs, ``sequential.unpaired_stratified_test`` stratified by
  traffic step). Valid however often anyone looks, so it never needs a per-look level.
- **Rollback** needs that evidence **and** a threshold crossed on v2's *own* failures:
  the inputs where v2 failed and v1 succeeded (without pairs, v2's excess over v1).
  Inputs failing in both versions never count. Latency rolls back when a lower
  confidence bound of the p95 difference clears ``max((multiplier - 1) x v1 p95,
  floor)`` on enough tail observations. The breaker OPEN, or a held regression, is a
  rollback too.
- **Promote** needs the thresholds to hold **and** v2 shown not worse than v1 by more
  than ``non_inferiority_margin`` (the upper end of an always-valid confidence sequence
  of the v2 - v1 error difference below it). Too few pairs waits.
- **Raising traffic** needs the thresholds to hold and no evidence that v2 fails more
  often: more exposure is how evidence is gathered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from monitoring.statistics import sequential
from monitoring.statistics.analysis import (
    DEGRADED_LATENCY_RATIO,
    EPSILON,
    ERROR_WINDOW_MINUTES,
    LATENCY_WINDOW_MINUTES,
    NEAR_THRESHOLD,
    SUCCESS_WINDOW_MINUTES,
    Breach,
    Evidence,
    VersionStats,
    p_text,
    with_defaults,
)
from monitoring.statistics.analysis import (
    percent_text as pct,
)
from monitoring.statistics.analysis import (
    signed_percent_text as spct,
)
from monitoring.statistics.paired import PairedCounts, look_alpha

ALPHA = 0.05
# Rolling back acts on its own, so it asks for stronger evidence than holding traffic:
# the same always-valid test, at 0.03 (an e-value of 33) instead of 0.05. Measured
# (bench/statistics, 2,000 canaries a cell): identical versions failing independently at
# 4-10% and 0.7-2 req/s were rolled back in 0.2-0.8% within an hour (0.05: up to 1.5%),
# and a 2% -> 5% v2 at 0.7 req/s by a median of the 3rd run (0.02: the 4th).
ROLLBACK_ALPHA = 0.03
ROLLBACK = "rollback"
PROMOTE = "promote"
COLLECT = "collect_more_data"


@dataclass(frozen=True)
class WorseTest:
    """Does v2 fail more often than v1? The always-valid answer, and on what it rests."""

    basis: str  # paired | unpaired | none
    rejected: bool  # at ALPHA: holds traffic and promotion, health degraded
    p_value: float
    detail: str
    only_v1_failed: int = 0
    only_v2_failed: int = 0

    @property
    def decisive(self) -> bool:
        """Strong enough to roll back on (with a threshold crossed): p <= ROLLBACK_ALPHA."""
        return self.rejected and self.p_value <= ROLLBACK_ALPHA

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NonInferiority:
    """Is v2 shown not worse than v1 by more than the margin? (the promote evidence)"""

    basis: str  # paired | unpaired | none
    margin: float
    interval: tuple[float, float] | None
    shown: bool
    samples: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeldRegression:
    """A regression the monitor found and nobody has acted on (SPEC 9.6: it holds)."""

    detected_at: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    recommendation: str  # rollback | promote | collect_more_data
    health_status: str  # unhealthy | degraded | healthy | no_data
    breaches: tuple[Breach, ...]
    warnings: tuple[str, ...]
    may_raise_traffic: bool
    waiting_for: tuple[str, ...]  # why not promote yet, in words
    worse: WorseTest
    non_inferiority: NonInferiority
    latency: dict[str, Any] | None
    breaker_state: str
    held: HeldRegression | None = None
    has_data: bool = True
    thresholds_hold: bool = False
    reasons: tuple[str, ...] = field(default=())  # why roll back, in words

    def as_dict(self) -> dict[str, Any]:
        return {
            "recommendation": self.recommendation,
            "health_status": self.health_status,
            "breaches": [asdict(breach) for breach in self.breaches],
            "warnings": list(self.warnings),
            "may_raise_traffic": self.may_raise_traffic,
            "waiting_for": list(self.waiting_for),
            "v2_worse": self.worse.as_dict(),
            "non_inferiority": self.non_inferiority.as_dict(),
            "latency": self.latency,
            "breaker_state": self.breaker_state,
            "held_regression": asdict(self.held) if self.held else None,
            "has_data": self.has_data,
            "thresholds_hold": self.thresholds_hold,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Decision:
        """The decision ``as_dict`` wrote (the monitor's stored row), read back whole."""
        worse = body["v2_worse"]
        shown = body["non_inferiority"]
        held = body.get("held_regression")
        return cls(
            recommendation=body["recommendation"],
            health_status=body["health_status"],
            breaches=tuple(Breach(**breach) for breach in body.get("breaches") or []),
            warnings=tuple(body.get("warnings") or ()),
            may_raise_traffic=bool(body.get("may_raise_traffic")),
            waiting_for=tuple(body.get("waiting_for") or ()),
            worse=WorseTest(**worse),
            non_inferiority=NonInferiority(
                **{
                    **shown,
                    "interval": tuple(shown["interval"]) if shown.get("interval") else None,
                }
            ),
            latency=body.get("latency"),
            breaker_state=body.get("breaker_state", "CLOSED"),
            held=HeldRegression(held["detected_at"], tuple(held["reasons"])) if held else None,
            has_data=bool(body.get("has_data", True)),
            thresholds_hold=bool(body.get("thresholds_hold")),
            reasons=tuple(body.get("reasons") or ()),
        )


# --- v2's own failures in a window ---------------------------------------------------------


@dataclass(frozen=True)
class OwnRate:
    """v2's error rate counting only its own failures, with what it is out of."""

    basis: str  # paired | unpaired
    rate: float  # paired: v2's failures on the inputs v1 handled; unpaired: v2 rate - v1 rate
    v2_rate: float  # v2's whole error rate, for the reader
    samples: int

    @property
    def phrase(self) -> str:
        if self.basis == "paired":
            return (
                f"v2 failed on {pct(self.rate)} of the {self.samples:,} inputs v1 handled "
                f"(v2's whole error rate {pct(self.v2_rate)})"
            )
        return (
            f"v2's error rate exceeded v1's by {pct(self.rate)} on the served requests "
            f"(v2 {pct(self.v2_rate)} of {self.samples:,})"
        )


def own_rate(
    pairs: PairedCounts, v1: VersionStats | None, v2: VersionStats | None, min_samples: int
) -> OwnRate | None:
    """None: too few samples in the window (on the pairs, or on both served versions).

    Paired, the rate is v2's failure rate on the inputs v1 handled: inputs v1 fails say
    nothing about v2's own faults, so they leave the denominator as well as the numerator.
    With independent faults this estimates v2's own error rate without bias, where dividing
    by every pair would understate it by v1's error rate.
    """
    if pairs.pairs >= min_samples:
        handled = pairs.both_succeeded + pairs.only_v2_failed
        return OwnRate(
            "paired",
            pairs.only_v2_failed / handled if handled else 0.0,
            pairs.v2_errors / pairs.pairs,
            handled,
        )
    if (
        v1 is not None
        and v2 is not None
        and min(v1.total_requests, v2.total_requests) >= (min_samples)
    ):
        return OwnRate(
            "unpaired", max(0.0, v2.error_rate - v1.error_rate), v2.error_rate, v2.total_requests
        )
    return None


# --- the always-valid tests ----------------------------------------------------------------


def _since_start(evidence: Evidence) -> PairedCounts | None:
    return evidence.pairs_since_start or evidence.discordant_since_start


def _paired_basis(evidence: Evidence, min_samples: int) -> bool:
    since = evidence.pairs_since_start
    if since is not None and since.pairs >= min_samples:
        return True
    return evidence.pairs_10m.pairs >= min_samples or evidence.pairs_5m.pairs >= min_samples


def _strata(evidence: Evidence) -> list[tuple[int, int, int, int]]:
    if evidence.strata:
        return list(evidence.strata)
    v1, v2 = evidence.v1_10m, evidence.v2_10m
    if v1 is None or v2 is None:
        return []
    return [(v1.error_count, v1.total_requests, v2.error_count, v2.total_requests)]


def v2_worse(evidence: Evidence, config: dict[str, Any], alpha: float = ALPHA) -> WorseTest:
    """The always-valid one-sided test that v2 fails more often than v1."""
    min_samples = int(with_defaults(config)["min_samples"])
    if _paired_basis(evidence, min_samples):
        since = _since_start(evidence) or evidence.pairs_10m
        test = sequential.v2_worse_test(since.only_v1_failed, since.only_v2_failed, alpha)
        return WorseTest(
            "paired",
            test.rejected,
            test.p_value,
            f"since the canary started, v2 failed where v1 succeeded {since.only_v2_failed:,} "
            f"times and the reverse {since.only_v1_failed:,} times (always-valid sequential "
            f"test, {p_text(test.p_value)}; p < {alpha:g} holds traffic, "
            f"p <= {ROLLBACK_ALPHA:g} rolls back)",
            since.only_v1_failed,
            since.only_v2_failed,
        )
    strata = [row for row in _strata(evidence) if row[1] + row[3] > 0]
    if strata and sum(row[1] for row in strata) and sum(row[3] for row in strata):
        stratified = sequential.unpaired_stratified_test(strata, alpha)
        v1_errors, v1_total = sum(row[0] for row in strata), sum(row[1] for row in strata)
        v2_errors, v2_total = sum(row[2] for row in strata), sum(row[3] for row in strata)
        return WorseTest(
            "unpaired",
            stratified.rejected,
            stratified.p_value,
            f"since the canary started, v2 failed {v2_errors:,} of {v2_total:,} served requests "
            f"and v1 {v1_errors:,} of {v1_total:,}, compared within each of {len(strata)} "
            f"traffic step(s) (always-valid Cochran-Mantel-Haenszel test, "
            f"{p_text(stratified.p_value)}; p < {alpha:g} holds traffic, "
            f"p <= {ROLLBACK_ALPHA:g} rolls back)",
        )
    return WorseTest("none", False, 1.0, "no evidence yet: both versions need requests")


def non_inferiority(
    evidence: Evidence, config: dict[str, Any], alpha: float = ALPHA
) -> NonInferiority:
    """v2 - v1 error difference's always-valid upper bound against the margin."""
    config = with_defaults(config)
    margin = float(config["non_inferiority_margin"])
    min_samples = int(config["min_samples"])
    since = evidence.pairs_since_start
    if since is not None and since.pairs >= min_samples:
        low, high = sequential.paired_difference_cs(
            since.pairs, since.only_v1_failed, since.only_v2_failed, alpha
        )
        return NonInferiority(
            "paired",
            margin,
            (low, high),
            high < margin,
            since.pairs,
            f"v2 - v1 error rate on the {since.pairs:,} inputs both versions evaluated is at "
            f"most {spct(high)} (always-valid {1 - alpha:.0%} bound, [{spct(low)}, {spct(high)}]); "
            f"the non-inferiority margin is {pct(margin)}",
        )
    strata = _strata(evidence)
    v1_errors, v1_total = sum(r[0] for r in strata), sum(r[1] for r in strata)
    v2_errors, v2_total = sum(r[2] for r in strata), sum(r[3] for r in strata)
    if min(v1_total, v2_total) >= min_samples and (since is None or since.pairs == 0):
        low, high = sequential.unpaired_difference_cs(
            v1_errors, v1_total, v2_errors, v2_total, alpha
        )
        return NonInferiority(
            "unpaired",
            margin,
            (low, high),
            high < margin,
            v2_total,
            f"v2 - v1 error rate on the served requests ({v2_total:,} v2, {v1_total:,} v1) is "
            f"at most {spct(high)} (always-valid {1 - alpha:.0%} bound, [{spct(low)}, "
            f"{spct(high)}]); the non-inferiority margin is {pct(margin)}",
        )
    samples = since.pairs if since is not None else min(v1_total, v2_total)
    return NonInferiority(
        "none",
        margin,
        None,
        False,
        samples,
        f"too few samples to show v2 within {pct(margin)} of v1 ({samples:,} of the "
        f"{min_samples:,} needed before any bound)",
    )


def latency_margin(v1_p95: float, config: dict[str, Any]) -> float:
    """How far v2's p95 may exceed v1's: ``max((multiplier - 1) x v1 p95, floor)``."""
    config = with_defaults(config)
    return float(max((config["latency_multiplier"] - 1) * v1_p95, config["latency_floor_ms"]))


def latency_judgement(evidence: Evidence, config: dict[str, Any]) -> dict[str, Any] | None:
    """The latency test on the 5-minute window's samples, at this window's spent level."""
    samples = evidence.latency_samples_5m
    if samples is None:
        return None
    v1_sample, v2_sample, basis = samples
    if not v1_sample or not v2_sample:
        return None
    v1_p95 = _p95(v1_sample)
    margin = latency_margin(v1_p95, config)
    level = look_alpha(evidence.look)
    result = sequential.paired_latency_test(v1_sample, v2_sample, margin, level)
    return {
        **result.as_dict(),
        "basis": basis,
        "v1_p95_ms": v1_p95,
        "v2_p95_ms": _p95(v2_sample),
        "margin_ms": margin,
    }


def _p95(sample: Sequence[float]) -> float:
    ordered = sorted(sample)
    return float(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)])


# --- rollback ------------------------------------------------------------------------------


def rollback_breaches(
    evidence: Evidence, config: dict[str, Any], *, worse: WorseTest | None = None
) -> list[Breach]:
    """The rollback rules (SPEC 6, refined by 9.2 and 9.6); thin windows give no verdict."""
    config = with_defaults(config)
    min_samples = int(config["min_samples"])
    worse = worse or v2_worse(evidence, config)
    breaches: list[Breach] = []
    five = own_rate(evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m, min_samples)
    limit = config["error_threshold"]
    if five is not None and five.rate > limit + EPSILON and worse.decisive:
        breaches.append(
            Breach(
                "error_rate",
                f"Over the last {ERROR_WINDOW_MINUTES} minutes {five.phrase}: above the "
                f"{pct(limit)} threshold, and v2 fails more often than v1: {worse.detail}.",
                five.rate,
                limit,
                worse.p_value,
            )
        )
    ten = own_rate(evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m, min_samples)
    floor = config["success_threshold"]
    if ten is not None and 1 - ten.rate < floor - EPSILON and worse.decisive:
        breaches.append(
            Breach(
                "success_rate",
                f"Over the last {SUCCESS_WINDOW_MINUTES} minutes v2's success rate counting "
                f"only its own failures is {pct(1 - ten.rate)} ({ten.phrase}): below the "
                f"{pct(floor)} threshold, and {_worse_said(worse, breaches)}.",
                1 - ten.rate,
                floor,
                worse.p_value,
            )
        )
    latency = latency_judgement(evidence, config)
    if latency is not None and latency["breached"]:
        breaches.append(
            Breach(
                "latency_p95",
                f"Over the last {LATENCY_WINDOW_MINUTES} minutes v2's p95 latency "
                f"({latency['v2_p95_ms']:.3f} ms) exceeds v1's ({latency['v1_p95_ms']:.3f} ms) "
                f"by at least {latency['lower_bound_ms']:.3f} ms with "
                f"{(1 - latency['alpha']) * 100:.6g}% confidence ({latency['tail_pairs']:,} "
                f"observations above the p95, {latency['basis']}), more than the allowed "
                f"max({config['latency_multiplier']} x v1 p95 - v1 p95, "
                f"{config['latency_floor_ms']} ms) = {latency['margin_ms']:.3f} ms.",
                latency["v2_p95_ms"],
                latency["v1_p95_ms"] + latency["margin_ms"],
            )
        )
    return breaches


def _worse_said(worse: WorseTest, breaches: list[Breach]) -> str:
    """The test's sentence once: a second breach names only its p-value."""
    if breaches:
        return f"v2 fails more often than v1 ({p_text(worse.p_value)}, the same test)"
    return f"v2 fails more often than v1: {worse.detail}"


# --- warnings and health ---------------------------------------------------------------


def health_warnings(
    evidence: Evidence, config: dict[str, Any], *, worse: WorseTest | None = None
) -> list[str]:
    """Early warnings: near a threshold, a p95 to watch, v2 worse under the thresholds, a
    sample-ratio mismatch. Messages start with a code when a client may act on them."""
    config = with_defaults(config)
    worse = worse or v2_worse(evidence, config)
    min_samples = int(config["min_samples"])
    warnings: list[str] = []
    five = own_rate(evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m, min_samples)
    limit = config["error_threshold"]
    if five is not None:
        if limit * (1 - NEAR_THRESHOLD) - EPSILON <= five.rate <= limit + EPSILON:
            warnings.append(
                f"Over the last {ERROR_WINDOW_MINUTES} minutes {five.phrase}: within 20% of "
                f"the {pct(limit)} rollback threshold."
            )
        elif five.rate > limit and not worse.decisive:
            warnings.append(
                f"Over the last {ERROR_WINDOW_MINUTES} minutes {five.phrase}: above the "
                f"{pct(limit)} threshold, but the evidence that v2 fails more often than v1 is "
                f"not yet strong enough to roll back on ({worse.detail}); no rollback."
            )
        elif five.v2_rate > limit and five.basis == "paired" and five.rate <= limit:
            warnings.append(
                f"v2's error rate is {pct(five.v2_rate)}, but v1 fails on the same inputs: only "
                f"{pct(five.rate)} of them fail in v2 alone, under the {pct(limit)} threshold."
            )
    ten = own_rate(evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m, min_samples)
    if ten is not None:
        floor = config["success_threshold"]
        rate = 1 - ten.rate
        if floor <= rate < floor + NEAR_THRESHOLD * (1 - floor) - EPSILON:
            warnings.append(
                f"v2's success rate counting only its own failures is {pct(rate)}: within 20% "
                f"of the {pct(floor)} rollback floor."
            )
    if worse.rejected:
        warnings.append(
            f"v2_fails_more_often: {worse.detail}. Under the rollback thresholds, so no "
            "rollback; traffic is not raised and v2 is not promoted automatically."
        )
    latency = latency_judgement(evidence, config)
    if latency is not None and latency["conclusive"]:
        v1_p95, v2_p95 = latency["v1_p95_ms"], latency["v2_p95_ms"]
        watch = max(DEGRADED_LATENCY_RATIO * v1_p95, v1_p95 + config["latency_floor_ms"])
        if v2_p95 > watch and v1_p95 > 0 and not latency["breached"]:
            warnings.append(
                f"v2 p95 latency ({v2_p95:.3f} ms) is {v2_p95 / v1_p95:.1f}x v1's "
                f"({v1_p95:.3f} ms, {latency['basis']}); the rollback threshold is "
                f"{config['latency_multiplier']}x (and at least {config['latency_floor_ms']} ms "
                "more), with confidence."
            )
    ratio = evidence.sample_ratio
    if ratio is not None and ratio.get("mismatch"):
        warnings.append(
            f"sample_ratio_mismatch: v2 got {pct(ratio['observed_share'])} of "
            f"{ratio['contexts']:,} new contexts against {ratio['expected_share']:.0%} expected "
            f"(chi-square {p_text(ratio['p_value'])}); the canary's numbers may not describe "
            "the planned population. Automatic progression and promotion are paused."
        )
    return warnings


def _thresholds_hold(evidence: Evidence, config: dict[str, Any]) -> bool:
    """The guide's thresholds on v2's own failures: in the current windows when they hold
    enough samples, and over the whole canary (so a pause in traffic does not hide them)."""
    config = with_defaults(config)
    min_samples = int(config["min_samples"])
    limit, floor = config["error_threshold"], config["success_threshold"]
    since = evidence.pairs_since_start
    strata = _strata(evidence)
    if since is not None and since.pairs >= min_samples:
        whole = own_rate(since, None, None, min_samples)
    else:
        v1 = _pooled(strata, 0)
        v2 = _pooled(strata, 2)
        whole = own_rate(PairedCounts(), v1, v2, min_samples)
    if whole is None:
        return False
    rates = [whole.rate]
    for pairs, v1, v2 in (
        (evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m),
        (evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m),
    ):
        window = own_rate(pairs, v1, v2, min_samples)
        if window is not None:
            rates.append(window.rate)
    return all(rate <= limit + EPSILON and 1 - rate >= floor - EPSILON for rate in rates)


def _pooled(strata: list[tuple[int, int, int, int]], column: int) -> VersionStats | None:
    errors = sum(row[column] for row in strata)
    total = sum(row[column + 1] for row in strata)
    if not total:
        return None
    return VersionStats(total, total - errors, errors, 1 - errors / total, errors / total, 0, 0, 0)


def decide(
    evidence: Evidence,
    config: dict[str, Any],
    *,
    breaker_state: str,
    held: HeldRegression | None = None,
    metric_breaches: tuple[Breach, ...] = (),
) -> Decision:
    """The decision: every surface reads this, so none can contradict another.

    ``metric_breaches``: the canary's metric checks past their bounds (SPEC 10.1), rollback
    rules like the paired ones.
    """
    config = with_defaults(config)
    worse = v2_worse(evidence, config)
    breaches = (*rollback_breaches(evidence, config, worse=worse), *metric_breaches)
    shown = non_inferiority(evidence, config)
    warnings = tuple(health_warnings(evidence, config, worse=worse))
    latency = latency_judgement(evidence, config)
    mismatch = bool(evidence.sample_ratio and evidence.sample_ratio.get("mismatch"))
    thresholds_hold = _thresholds_hold(evidence, config) and not breaches
    reasons = [breach.message for breach in breaches]
    if breaker_state == "OPEN":
        reasons.append("The circuit breaker is OPEN.")
    if held is not None:
        reasons = [*held.reasons, *(r for r in reasons if r not in held.reasons)]
    waiting: list[str] = []
    if not shown.shown:
        waiting.append(f"non_inferiority: {shown.detail}")
    if not thresholds_hold and not breaches:
        waiting.append("thresholds: v2's own failures are not yet shown under the thresholds")
    if worse.rejected:
        waiting.append(f"v2_fails_more_often: {worse.detail}")
    if mismatch:
        waiting.append("sample_ratio_mismatch: the traffic split is not as planned")
    if breaker_state not in ("CLOSED", "UNKNOWN"):
        waiting.append(f"breaker: the circuit breaker is {breaker_state}")

    if held is not None or breaches or breaker_state == "OPEN":
        recommendation = ROLLBACK
    elif not waiting:
        recommendation = PROMOTE
    else:
        recommendation = COLLECT
    may_raise = (
        recommendation != ROLLBACK
        and not worse.rejected
        and not mismatch
        and breaker_state == "CLOSED"
        and _windows_hold(evidence, config)
    )
    if recommendation == ROLLBACK:
        health = "unhealthy"
    elif worse.rejected or breaker_state == "HALF_OPEN" or warnings:
        health = "degraded"
    elif not evidence.has_data:
        health = "no_data"
    else:
        health = "healthy"
    return Decision(
        recommendation=recommendation,
        health_status=health,
        breaches=breaches,
        warnings=warnings,
        may_raise_traffic=may_raise,
        waiting_for=tuple(waiting) if recommendation == COLLECT else (),
        worse=worse,
        non_inferiority=shown,
        latency=latency,
        breaker_state=breaker_state,
        held=held,
        has_data=evidence.has_data,
        thresholds_hold=thresholds_hold,
        reasons=tuple(reasons),
    )


def _windows_hold(evidence: Evidence, config: dict[str, Any]) -> bool:
    """The thresholds on v2's own failures in the current windows that have enough samples."""
    config = with_defaults(config)
    min_samples = int(config["min_samples"])
    for pairs, v1, v2 in (
        (evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m),
        (evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m),
    ):
        window = own_rate(pairs, v1, v2, min_samples)
        if window is not None and (
            window.rate > config["error_threshold"] + EPSILON
            or 1 - window.rate < config["success_threshold"] - EPSILON
        ):
            return False
    return True
