"""The one decision (SPEC 9.6), each rule at its exact boundary, as pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deployments.canary_config import default_canary_config
from monitoring.statistics import sequential
from monitoring.statistics.analysis import Evidence, VersionStats
from monitoring.statistics.comparison import compare
from monitoring.statistics.decision import (
    COLLECT,
    PROMOTE,
    ROLLBACK,
    ROLLBACK_ALPHA,
    Decision,
    HeldRegression,
    decide,
    non_inferiority,
    rollback_breaches,
    v2_worse,
)
from monitoring.statistics.paired import PairedCounts, sample_ratio_test

CONFIG = default_canary_config()  # error 0.05, success 0.95, latency x2, floor 1 ms, n >= 20

# The smallest counts at which the always-valid tests decide (found once, asserted below).
WORSE_BOUNDARY = 8  # discordant pairs all against v2: the mixture SPRT rejects at 8, not 7
ROLLBACK_BOUNDARY = 9  # ... and reaches the rollback level (p <= 0.03) at 9, not 8
NON_INFERIOR_PAIRS = 931  # identical versions: the bound falls under 1 point at 931 pairs


def pairs(n: int, *, both_failed: int = 0, only_v2: int = 0, only_v1: int = 0) -> PairedCounts:
    both_ok = n - both_failed - only_v2 - only_v1
    return PairedCounts(both_ok, only_v1, only_v2, both_failed, both_ok + both_failed)


def served(total: int, errors: int) -> VersionStats:
    return VersionStats(total, total - errors, errors, 1 - errors / total, errors / total, 1, 1, 1)


def paired_evidence(
    window: PairedCounts, since_start: PairedCounts | None = None, **extra: object
) -> Evidence:
    since = since_start or window
    return Evidence(
        pairs_5m=window,
        pairs_10m=window,
        discordant_since_start=since,
        pairs_since_start=since,
        **extra,  # type: ignore[arg-type]
    )


def rules(evidence: Evidence, config: dict | None = None) -> list[str]:
    return [breach.rule for breach in rollback_breaches(evidence, config or CONFIG)]


def decided(evidence: Evidence, breaker: str = "CLOSED", **kwargs: object):  # type: ignore[no-untyped-def]
    return decide(evidence, kwargs.pop("config", CONFIG), breaker_state=breaker, **kwargs)  # type: ignore[arg-type]


class TestAlwaysValidBoundaries:
    def test_the_worse_test_rejects_first_at_its_boundary(self) -> None:
        assert sequential.v2_worse_test(0, WORSE_BOUNDARY).rejected
        assert not sequential.v2_worse_test(0, WORSE_BOUNDARY - 1).rejected
        assert sequential.v2_worse_test(0, ROLLBACK_BOUNDARY).p_value <= ROLLBACK_ALPHA
        assert sequential.v2_worse_test(0, ROLLBACK_BOUNDARY - 1).p_value > ROLLBACK_ALPHA
        assert ROLLBACK_ALPHA == 0.03

    def test_the_non_inferiority_bound_crosses_the_margin_at_its_boundary(self) -> None:
        assert sequential.paired_difference_cs(NON_INFERIOR_PAIRS, 0, 0)[1] < 0.01
        assert sequential.paired_difference_cs(NON_INFERIOR_PAIRS - 1, 0, 0)[1] >= 0.01


class TestRollbackOnV2sOwnFailures:
    def test_at_the_threshold_holds_and_just_above_breaches(self) -> None:
        assert rules(paired_evidence(pairs(1_000, only_v2=50))) == []
        assert rules(paired_evidence(pairs(1_000, only_v2=51))) == ["error_rate", "success_rate"]

    def test_the_rate_is_over_the_inputs_v1_handled(self) -> None:
        # 100 of 1,000 inputs fail in both: v2's own rate is out of the 900 v1 handled.
        assert rules(paired_evidence(pairs(1_000, both_failed=100, only_v2=45))) == []
        assert rules(paired_evidence(pairs(1_000, both_failed=100, only_v2=46))) == [
            "error_rate",
            "success_rate",
        ]

    def test_inputs_failing_in_both_versions_never_count(self) -> None:
        # 10% of inputs fail in both: v2's whole error rate is 10%, its own is 0.
        assert rules(paired_evidence(pairs(10_000, both_failed=1_000))) == []

    def test_a_burst_failing_in_both_does_not_push_a_slightly_worse_v2_over(self) -> None:
        # The audit's case: 8% of inputs fail in both, v2 fails 1% more on its own.
        window = pairs(10_000, both_failed=800, only_v2=100)
        assert v2_worse(paired_evidence(window), CONFIG).rejected  # worse, with evidence
        assert rules(paired_evidence(window)) == []  # but 1% own failures: under 5%

    def test_the_threshold_without_evidence_holds(self) -> None:
        # 6% own failures in the window, but v1 failed as often on other inputs since start.
        evidence = paired_evidence(pairs(1_000, only_v2=60), PairedCounts(50_000, 60, 60, 0, 0))
        assert rules(evidence) == []
        assert decided(evidence).recommendation == COLLECT

    def test_evidence_at_its_boundary_decides(self) -> None:
        # 20 pairs, the window far above the threshold: the evidence is what decides, and
        # rolling back needs it at 0.03 (holding traffic already at 0.05).
        thin = PairedCounts(10, 0, ROLLBACK_BOUNDARY, 0, 10)
        assert rules(paired_evidence(pairs(20, only_v2=ROLLBACK_BOUNDARY), thin)) == [
            "error_rate",
            "success_rate",
        ]
        thinner = PairedCounts(11, 0, ROLLBACK_BOUNDARY - 1, 0, 11)
        evidence = paired_evidence(pairs(20, only_v2=ROLLBACK_BOUNDARY - 1), thinner)
        assert rules(evidence) == []
        held_back = decided(evidence)
        assert held_back.worse.rejected and not held_back.may_raise_traffic
        assert held_back.recommendation == COLLECT

    def test_min_samples_applies_to_the_window(self) -> None:
        since = PairedCounts(0, 0, 19, 0, 0)
        assert rules(paired_evidence(pairs(19, only_v2=19), since)) == []
        assert rules(paired_evidence(pairs(20, only_v2=20), PairedCounts(0, 0, 20, 0, 0)))

    def test_the_message_names_the_numbers(self) -> None:
        [breach, _] = rollback_breaches(paired_evidence(pairs(1_000, only_v2=80)), CONFIG)
        assert "8.00%" in breach.message and "5.00%" in breach.message
        assert "80 times" in breach.message and "always-valid" in breach.message
        assert breach.p_value is not None and breach.p_value < 1e-10

    def test_without_pairs_v2s_excess_over_v1_counts(self) -> None:
        v1, v2 = served(10_000, 1_000), served(10_000, 1_510)
        # v2 at 15.1% against v1 at 10%: an excess of 5.1 points, v2 worse with evidence.
        evidence = Evidence(v1_5m=v1, v2_5m=v2, v1_10m=v1, v2_10m=v2)
        assert rules(evidence) == ["error_rate", "success_rate"]
        level = served(10_000, 1_000)
        same = Evidence(v1_5m=v1, v2_5m=level, v1_10m=v1, v2_10m=level)
        assert rules(same) == []


class TestUnpairedStratifiedBySteps:
    def test_a_traffic_change_cannot_fake_a_difference(self) -> None:
        # Simpson: errors run at 1% while v2 has 10%, at 6% when it has 50%; equal per step.
        strata = ((90, 9_000, 10, 1_000), (300, 5_000, 300, 5_000))
        pooled_v1, pooled_v2 = 390 / 14_000, 310 / 6_000
        assert pooled_v2 > 1.8 * pooled_v1  # pooled, v2 looks far worse
        evidence = Evidence(strata=strata)
        assert not v2_worse(evidence, CONFIG).rejected
        worse = Evidence(strata=((90, 9_000, 30, 1_000), (300, 5_000, 500, 5_000)))
        assert v2_worse(worse, CONFIG).rejected


class TestLatencyRule:
    def sample(self, v1: float, v2: float, n: int = 400) -> Evidence:
        return Evidence(
            pairs_5m=pairs(n),
            latency_samples_5m=((v1,) * n, (v2,) * n, "paired"),
        )

    def test_the_margin_is_the_larger_of_multiple_and_floor(self) -> None:
        assert rules(self.sample(10.0, 20.0)) == []  # the bound equals 10 ms: not above
        assert rules(self.sample(10.0, 20.001)) == ["latency_p95"]

    def test_microsecond_jitter_stays_under_the_floor(self) -> None:
        # 5 us against 20 us is 4x, but 15 us is far under the 1 ms floor.
        assert rules(self.sample(0.005, 0.020)) == []
        assert rules(self.sample(0.005, 1.006)) == ["latency_p95"]

    def test_too_few_tail_observations_give_no_verdict(self) -> None:
        assert rules(self.sample(1.0, 50.0, n=399)) == []  # 19 above the p95
        assert rules(self.sample(1.0, 50.0, n=400)) == ["latency_p95"]

    def test_bursty_identical_timings_do_not_roll_back(self) -> None:
        rng = np.random.default_rng(5)
        for _ in range(50):
            base = rng.lognormal(np.log(0.05), 0.3, (2, 2_000))
            stalls = rng.random((2, 2_000)) < 0.01
            base[stalls] += rng.uniform(0.2, 3.0, int(stalls.sum()))
            evidence = Evidence(
                pairs_5m=pairs(2_000),
                latency_samples_5m=(tuple(base[0]), tuple(base[1]), "paired"),
            )
            assert rules(evidence) == []


class TestPromoteNeedsEvidence:
    def test_non_inferiority_at_its_boundary(self) -> None:
        shown = decided(paired_evidence(pairs(NON_INFERIOR_PAIRS)))
        assert shown.recommendation == PROMOTE and shown.health_status == "healthy"
        short = decided(paired_evidence(pairs(NON_INFERIOR_PAIRS - 1)))
        assert short.recommendation == COLLECT
        assert short.waiting_for[0].startswith("non_inferiority:")

    def test_a_worse_v2_under_the_thresholds_is_never_promoted(self) -> None:
        # 2% -> 5% on 50,000 pairs: every threshold holds, v2 is 3 points worse.
        worse = decided(paired_evidence(pairs(50_000, both_failed=1_000, only_v2=1_500)))
        assert worse.recommendation == COLLECT
        assert worse.health_status == "degraded"
        assert not worse.may_raise_traffic
        assert any(w.startswith("v2_fails_more_often:") for w in worse.warnings)

    def test_absence_of_evidence_is_not_evidence(self) -> None:
        # v2 fails 2 of 20 inputs v1 handles: not significant, not shown good either.
        answer = non_inferiority(paired_evidence(pairs(20, only_v2=2)), CONFIG)
        assert not answer.shown

    def test_a_mismatch_or_a_breaker_not_closed_waits(self) -> None:
        evidence = paired_evidence(pairs(5_000))
        ratio = sample_ratio_test(300, 10_000, 10)
        mismatch = paired_evidence(pairs(5_000), sample_ratio=ratio)
        assert decided(evidence).recommendation == PROMOTE
        assert decided(mismatch).recommendation == COLLECT
        assert decided(evidence, breaker="HALF_OPEN").recommendation == COLLECT
        assert decided(evidence, breaker="OPEN").recommendation == ROLLBACK

    def test_the_margin_is_configurable(self) -> None:
        evidence = paired_evidence(pairs(500))
        assert decided(evidence).recommendation == COLLECT
        loose = {**CONFIG, "non_inferiority_margin": 0.05}
        assert decided(evidence, config=loose).recommendation == PROMOTE


class TestRaisingTraffic:
    def test_no_evidence_of_harm_is_enough_to_raise(self) -> None:
        thin = decided(paired_evidence(pairs(200)))
        assert thin.recommendation == COLLECT and thin.may_raise_traffic

    def test_evidence_of_harm_stops_it(self) -> None:
        harm = paired_evidence(pairs(2_000, only_v2=40))  # 2% own failures, all v2's
        assert not decided(harm).may_raise_traffic

    def test_only_a_closed_breaker_raises(self) -> None:
        evidence = paired_evidence(pairs(200))
        assert not decided(evidence, breaker="UNKNOWN").may_raise_traffic


class TestARegressionHolds:
    def test_held_stays_rollback_without_any_traffic(self) -> None:
        held = HeldRegression("2026-12-04T03:00:00+00:00", ("v2 failed 8.1% ...",))
        answer = decided(Evidence(), held=held)
        assert answer.recommendation == ROLLBACK and answer.health_status == "unhealthy"
        assert answer.reasons[0] == "v2 failed 8.1% ..."

    def test_without_a_hold_a_pause_in_traffic_is_no_data(self) -> None:
        answer = decided(Evidence())
        assert answer.recommendation == COLLECT and answer.health_status == "no_data"


class TestComparisonFollowsTheDecision:
    def test_recommendation_and_significance_come_from_the_decision(self) -> None:
        window = pairs(1_000, only_v2=30)
        evidence = paired_evidence(window)
        decision = decided(evidence)
        answer = compare(
            v1=None,
            v2=None,
            pairs=window,
            latency=None,
            evidence=evidence,
            decision=decision,
            config=CONFIG,
        )
        assert answer["comparison"]["recommendation"] == decision.recommendation == COLLECT
        assert answer["analysis"]["v1_is_more_reliable"] is True
        assert answer["evidence"]["v2_worse"]["rejected"] is True

    @pytest.mark.parametrize("count", [0, 3, 6])
    def test_identical_versions_are_never_called_worse(self, count: int) -> None:
        window = pairs(1_000, only_v2=count, only_v1=count)
        decision = decided(paired_evidence(window))
        assert not decision.worse.rejected


@pytest.mark.parametrize(
    "evidence",
    [
        paired_evidence(pairs(400, only_v2=40)),
        paired_evidence(pairs(2_000)),
        Evidence(),
    ],
)
def test_a_stored_decision_reads_back_whole(evidence: Evidence):
    """The console shows the monitor's stored row (``as_dict``) as the decision it was."""
    held = HeldRegression("2026-01-01T00:00:00+00:00", ("a rule held",))
    for decision in (decided(evidence), decided(evidence, breaker="OPEN", held=held)):
        stored = json.loads(json.dumps(decision.as_dict()))  # as the JSON column keeps it
        assert Decision.from_dict(stored) == decision


def test_two_breaches_say_the_test_once():
    """Finding 3 of issue 23: the evidence sentence is not repeated per breached rule."""
    breaches = rollback_breaches(paired_evidence(pairs(400, only_v2=40)), CONFIG)
    assert [breach.rule for breach in breaches] == ["error_rate", "success_rate"]
    said = " ".join(breach.message for breach in breaches)
    assert said.count("always-valid sequential test") == 1
    assert "v2 fails more often than v1 (p < 0.0001, the same test)" in breaches[1].message
    assert "10.00%" in breaches[0].message and "5.00% threshold" in breaches[0].message
    assert "e-0" not in said


def test_a_small_threshold_reads_as_a_percentage_not_scientific_notation():
    config = {**CONFIG, "error_threshold": 9e-05}
    breaches = rollback_breaches(paired_evidence(pairs(400, only_v2=40)), config)
    assert "above the 0.0090% threshold" in breaches[0].message
