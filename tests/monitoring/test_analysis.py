"""Rollback rules, health and comparison as pure functions, at their exact boundaries."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from deployments.canary_config import default_canary_config
from monitoring.statistics import analysis as a
from monitoring.statistics import paired
from monitoring.statistics.paired import PairedCounts

CONFIG = default_canary_config()  # error 0.05, success 0.95, latency x2, floor 1 ms, n >= 20


def version(total: int, errors: int, p95: float = 10.0, avg: float = 5.0) -> a.VersionStats:
    return a.VersionStats(
        total_requests=total,
        success_count=total - errors,
        error_count=errors,
        success_rate=(total - errors) / total,
        error_rate=errors / total,
        avg_latency_ms=avg,
        p95_latency_ms=p95,
        p99_latency_ms=p95 * 1.5,
    )


def pairs(n: int, *, both_failed: int = 0, only_v2: int = 0, only_v1: int = 0) -> PairedCounts:
    both_ok = n - both_failed - only_v2 - only_v1
    return PairedCounts(both_ok, only_v1, only_v2, both_failed, both_ok + both_failed)


def rules(evidence: a.Evidence, config: dict | None = None) -> list[str]:
    return [breach.rule for breach in a.rollback_breaches(evidence, config or CONFIG)]


class TestPairedErrorRule:
    def test_inputs_failing_in_both_versions_never_roll_back(self) -> None:
        # 10% of inputs fail in both: far above the 5% threshold, but not v2's fault.
        evidence = a.Evidence(
            pairs_5m=pairs(10_000, both_failed=1_000), pairs_10m=pairs(20_000, both_failed=2_000)
        )
        assert rules(evidence) == []

    def test_v2_failing_extra_inputs_rolls_back(self) -> None:
        evidence = a.Evidence(
            pairs_5m=pairs(1_000, both_failed=20, only_v2=80),
            pairs_10m=pairs(2_000, both_failed=40, only_v2=160),
        )
        assert rules(evidence) == ["error_rate", "success_rate"]

    def test_threshold_without_evidence_holds(self) -> None:
        # v2 at 6% but v1 fails as often on the same inputs: no evidence against v2.
        evidence = a.Evidence(pairs_5m=pairs(1_000, both_failed=40, only_v2=10, only_v1=10))
        assert rules(evidence) == []

    def test_evidence_without_threshold_holds(self) -> None:
        # v2 clearly worse than v1, but its 4% stays under the guide's 5% threshold.
        assert rules(a.Evidence(pairs_5m=pairs(1_000, only_v2=40))) == []

    def test_at_the_threshold_holds_and_just_above_breaches(self) -> None:
        assert rules(a.Evidence(pairs_5m=pairs(1_000, only_v2=50))) == []
        assert rules(a.Evidence(pairs_5m=pairs(1_000, only_v2=51))) == ["error_rate"]

    def test_min_samples_applies_to_the_pairs(self) -> None:
        assert rules(a.Evidence(pairs_5m=pairs(19, only_v2=19))) == []
        assert rules(a.Evidence(pairs_5m=pairs(20, only_v2=20))) == ["error_rate"]

    def test_alpha_is_spent_across_looks(self) -> None:
        # 8 discordant pairs, all against v2: one-sided p = 2^-8 = 0.0039.
        evidence = pairs(100, only_v2=8)
        assert paired.binomial_tail_at_least(8, 8) == pytest.approx(0.5**8)
        first_look = a.Evidence(pairs_5m=evidence, look=1)  # level 0.05 * 6 / pi^2 / 2 = 0.0152
        fifth_look = a.Evidence(pairs_5m=evidence, look=5)  # level 0.0006
        assert rules(first_look) == ["error_rate"]
        assert rules(fifth_look) == []

    def test_evidence_accumulates_since_the_start(self) -> None:
        window = pairs(1_000, only_v2=60)  # 6% in the window, and 60 against 0 here
        balanced = PairedCounts(only_v1_failed=60, only_v2_failed=60)
        assert rules(a.Evidence(pairs_5m=window, discordant_since_start=balanced)) == []
        # A fifth look: 8 discordant inputs in a window are not enough alone (p = 0.004),
        # 30 since the start are (p = 9e-10).
        thin = pairs(100, both_failed=2, only_v2=8)
        assert rules(a.Evidence(pairs_5m=thin, look=5)) == []
        accumulated = PairedCounts(only_v2_failed=30)
        evidence = a.Evidence(pairs_5m=thin, discordant_since_start=accumulated, look=5)
        assert rules(evidence) == ["error_rate"]

    def test_look_levels_sum_to_alpha(self) -> None:
        total = sum(paired.look_alpha(k) for k in range(1, 200_000))
        assert total == pytest.approx(0.05, rel=1e-4)
        assert total < 0.05

    def test_message_names_the_numbers(self) -> None:
        [breach, _] = a.rollback_breaches(
            a.Evidence(
                pairs_5m=pairs(1_000, only_v2=80), pairs_10m=pairs(1_000, only_v2=80), look=1
            ),
            CONFIG,
        )
        assert "8.00%" in breach.message and "5.00%" in breach.message
        assert "80 times" in breach.message and "McNemar" in breach.message
        assert breach.p_value == pytest.approx(0.5**80)


class TestUnpairedFallback:
    def test_needs_both_versions(self) -> None:
        assert rules(a.Evidence(v2_5m=version(100, 50))) == []

    def test_v2_worse_than_v1_rolls_back(self) -> None:
        evidence = a.Evidence(v1_5m=version(1_000, 10), v2_5m=version(200, 20))
        assert rules(evidence) == ["error_rate"]

    def test_both_failing_equally_holds(self) -> None:
        evidence = a.Evidence(v1_5m=version(1_000, 100), v2_5m=version(200, 20))
        assert rules(evidence) == []


class TestLatencyRule:
    def test_floor_ignores_microsecond_jitter(self) -> None:
        # 5 us vs 20 us is 4x, but 15 us is far under the 1 ms floor.
        evidence = a.Evidence(pairs_5m=pairs(1_000), paired_p95_5m=(0.005, 0.020))
        assert rules(evidence) == []

    def test_ceiling_is_the_larger_of_multiple_and_floor(self) -> None:
        assert a.latency_ceiling(10.0, CONFIG) == 20.0
        assert a.latency_ceiling(0.5, CONFIG) == 1.5
        at = a.Evidence(pairs_5m=pairs(1_000), paired_p95_5m=(10.0, 20.0))
        above = a.Evidence(pairs_5m=pairs(1_000), paired_p95_5m=(10.0, 20.001))
        assert rules(at) == [] and rules(above) == ["latency_p95"]

    def test_served_latencies_when_there_are_no_pairs(self) -> None:
        evidence = a.Evidence(v1_5m=version(100, 0, p95=10.0), v2_5m=version(100, 0, p95=25.0))
        assert rules(evidence) == ["latency_p95"]
        assert rules(a.Evidence(v2_5m=version(100, 0, p95=1_000.0))) == []


class TestHealth:
    def test_no_data_is_not_healthy(self) -> None:
        evidence = a.Evidence()
        assert not evidence.has_data
        status = a.health_status(
            breaches=[], breaker_state="CLOSED", warnings=[], has_data=evidence.has_data
        )
        assert status == "no_data"

    def test_degraded_near_the_error_threshold(self) -> None:
        [warning] = a.health_warnings(a.Evidence(pairs_5m=pairs(100, only_v2=4)), CONFIG)
        assert "within 20%" in warning
        assert a.health_warnings(a.Evidence(pairs_5m=pairs(100, only_v2=3)), CONFIG) == []

    def test_shared_failures_are_explained_not_alarmed(self) -> None:
        [warning] = a.health_warnings(a.Evidence(pairs_5m=pairs(1_000, both_failed=100)), CONFIG)
        assert "no rollback" in warning

    def test_a_real_breach_is_not_explained_away(self) -> None:
        warnings = a.health_warnings(a.Evidence(pairs_5m=pairs(1_000, only_v2=80)), CONFIG)
        assert not any("no rollback" in warning for warning in warnings)

    def test_latency_warning_respects_the_floor(self) -> None:
        fast = a.Evidence(pairs_5m=pairs(100), paired_p95_5m=(0.005, 0.5))
        assert a.health_warnings(fast, CONFIG) == []
        slow = a.Evidence(pairs_5m=pairs(100), paired_p95_5m=(10.0, 12.1))
        [warning] = a.health_warnings(slow, CONFIG)
        assert "1.2x" in warning

    def test_sample_ratio_mismatch_warns_with_its_code(self) -> None:
        ratio = paired.sample_ratio_test(300, 10_000, 10)
        [warning] = a.health_warnings(a.Evidence(sample_ratio=ratio), CONFIG)
        assert warning.startswith("sample_ratio_mismatch:")

    def test_unhealthy_on_breach_or_open_breaker(self) -> None:
        breach = a.Breach("error_rate", "x", 0.1, 0.05)
        assert (
            a.health_status(breaches=[breach], breaker_state="CLOSED", warnings=[]) == "unhealthy"
        )
        assert a.health_status(breaches=[], breaker_state="OPEN", warnings=[]) == "unhealthy"
        assert a.health_status(breaches=[], breaker_state="HALF_OPEN", warnings=[]) == "degraded"


class TestSampleRatio:
    def test_chi_square_matches_scipy(self) -> None:
        result = paired.sample_ratio_test(1_100, 10_000, 10)
        expected = stats.chisquare([1_100, 8_900], [1_000, 9_000]).pvalue
        assert result["p_value"] == pytest.approx(expected, rel=1e-9)
        assert result["mismatch"] is True
        assert paired.sample_ratio_test(1_020, 10_000, 10)["mismatch"] is False

    def test_dark_launch_expects_no_v2_contexts(self) -> None:
        assert paired.sample_ratio_test(0, 500, 0)["mismatch"] is False
        assert paired.sample_ratio_test(1, 500, 0)["mismatch"] is True


class TestPairedStatistics:
    def test_mcnemar_p_value_is_the_exact_binomial_and_agrees_with_its_interval(self) -> None:
        for only_v1, only_v2 in [(0, 0), (3, 9), (10, 25), (40, 40), (0, 6), (2, 12)]:
            result = paired.error_rate_difference(pairs(1_000, only_v1=only_v1, only_v2=only_v2))
            if only_v1 + only_v2:
                exact = stats.binomtest(only_v2, only_v1 + only_v2, 0.5).pvalue
                # Binomial(n, 1/2) is symmetric: central and scipy's two-sided p agree.
                assert result["p_value"] == pytest.approx(min(1.0, exact), rel=1e-9)
            low, high = result["confidence_interval"]
            assert (low > 0 or high < 0) == result["significant"]

    def test_wilson_interval_is_never_zero_width(self) -> None:
        low, high = paired.wilson_interval(0, 1_000)
        assert low == pytest.approx(0.0, abs=1e-12) and high > 0.003

    def test_median_interval_ranks_cover_the_median(self) -> None:
        low, high = paired.median_ci_ranks(100)
        assert (low, high) == (40, 61)  # the textbook ranks for n = 100
        assert paired.median_ci_ranks(5) is None


def z_statistic(x1: int, n1: int, x2: int, n2: int) -> float:
    p1, p2 = (x1 + 1) / (n1 + 2), (x2 + 1) / (n2 + 2)
    return (p2 - p1) / math.sqrt(p1 * (1 - p1) / (n1 + 2) + p2 * (1 - p2) / (n2 + 2))


class TestComparison:
    def compare(self, **kwargs: object) -> dict:
        defaults: dict = {
            "v1": None,
            "v2": None,
            "pairs": PairedCounts(),
            "latency": None,
            "evidence": a.Evidence(),
            "breaches": [],
            "breaker_state": "CLOSED",
            "config": CONFIG,
        }
        return a.compare(**{**defaults, **kwargs})

    def test_unpaired_error_test_agrees_with_its_interval(self) -> None:
        for x1, n1, x2, n2 in [(30, 1000, 45, 800), (0, 500, 0, 50), (10, 1000, 19, 1000)]:
            result = a.error_rate_test(version(n1, x1), version(n2, x2))
            expected = 2 * stats.norm.sf(abs(z_statistic(x1, n1, x2, n2)))
            assert result["p_value"] == pytest.approx(expected, rel=1e-9)
            low, high = result["confidence_interval"]
            assert low < high
            assert (low > 0 or high < 0) == result["significant"]

    def test_mann_whitney_agrees_with_scipy_and_its_interval(self) -> None:
        v1 = [1.0 + (n * 7919 % 1000) / 1000 for n in range(300)]
        for shift in (0.0, 0.05, 0.5):
            v2 = [value + shift + 0.0001 for value in v1]
            result = a.latency_test(v1, v2)
            expected = stats.mannwhitneyu(
                v2, v1, alternative="two-sided", use_continuity=False, method="asymptotic"
            ).pvalue
            assert result["p_value"] == pytest.approx(expected, rel=1e-6)
            low, high = result["confidence_interval_ms"]
            assert (low > 0 or high < 0) == result["significant"]

    def test_clear_regression_with_a_breach_is_rollback(self) -> None:
        breach = a.Breach("error_rate", "bad", 0.12, 0.05)
        answer = self.compare(
            v1=version(2000, 20), v2=version(500, 60), breaches=[breach], breaker_state="CLOSED"
        )
        assert answer["comparison"]["recommendation"] == "rollback"
        assert answer["analysis"]["v1_is_more_reliable"] is True
        assert answer["comparison"]["error_rate_diff"] == pytest.approx(0.12 - 0.01)

    def test_open_breaker_is_rollback(self) -> None:
        answer = self.compare(breaker_state="OPEN")
        assert answer["comparison"]["recommendation"] == "rollback"

    def test_identical_paired_versions_promote(self) -> None:
        counts = pairs(1_000, both_failed=100)
        answer = self.compare(pairs=counts, evidence=a.Evidence(pairs_5m=counts, pairs_10m=counts))
        assert answer["analysis"]["basis"] == "paired"
        assert answer["evidence"]["error_rate"]["p_value"] == 1.0
        assert answer["comparison"]["recommendation"] == "promote"

    def test_significantly_worse_v2_is_not_promoted(self) -> None:
        counts = pairs(1_000, only_v2=30)
        answer = self.compare(pairs=counts, evidence=a.Evidence(pairs_5m=counts, pairs_10m=counts))
        assert answer["comparison"]["recommendation"] == "collect_more_data"

    def test_too_few_samples_collects_more_data(self) -> None:
        answer = self.compare(
            v1=version(1000, 10),
            v2=version(19, 0),
            evidence=a.Evidence(v1_10m=version(1000, 10), v2_10m=version(19, 0)),
        )
        assert answer["comparison"]["recommendation"] == "collect_more_data"
        assert answer["evidence"]["enough_samples"] is False

    def test_sample_ratio_mismatch_blocks_promote(self) -> None:
        counts = pairs(1_000)
        ratio = paired.sample_ratio_test(300, 10_000, 10)
        answer = self.compare(
            pairs=counts,
            evidence=a.Evidence(pairs_5m=counts, pairs_10m=counts, sample_ratio=ratio),
        )
        assert answer["comparison"]["recommendation"] == "collect_more_data"


@pytest.mark.parametrize(
    ("p_value", "shown"), [(0.0, "p < 0.0001"), (0.00003, "p < 0.0001"), (0.01234, "p = 0.0123")]
)
def test_p_values_in_messages_read_as_a_statistician_writes_them(p_value: float, shown: str):
    assert a._p(p_value) == shown


def test_a_spent_down_significance_level_never_reads_zero():
    assert a._level(0.0000123) == "1.2e-05" and a._level(0.0152) == "0.0152"
