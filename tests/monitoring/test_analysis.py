"""The descriptive tests of /comparison and the paired statistics, against scipy."""

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

    def test_mann_whitney_corrects_for_ties(self) -> None:
        """Latencies rounded to the timer's resolution tie often; scipy corrects for it."""
        v1 = [float(n % 7) for n in range(200)]
        v2 = [float((n + 1) % 8) for n in range(150)]
        result = a.latency_test(v1, v2)
        expected = stats.mannwhitneyu(
            v2, v1, alternative="two-sided", use_continuity=False, method="asymptotic"
        ).pvalue
        assert result["p_value"] == pytest.approx(expected, rel=1e-6)

    def test_no_discordant_pair_has_an_exact_interval_not_zero_width(self) -> None:
        result = paired.error_rate_difference(pairs(1_000, both_failed=30))
        low, high = result["confidence_interval"]
        bound = 1 - 0.025 ** (1 / 1_000)  # Clopper-Pearson: no discordant pair in 1,000
        assert (low, high) == pytest.approx((-bound, bound))
        assert result["significant"] is False and result["p_value"] == 1.0


@pytest.mark.parametrize(
    ("p_value", "shown"),
    [
        (0.0, "p < 0.0001"),
        (0.00003, "p < 0.0001"),
        (0.01234, "p = 0.0123"),
        (1.0, "p > 0.9999"),
    ],
)
def test_p_values_in_messages_read_as_a_statistician_writes_them(p_value: float, shown: str):
    assert a.p_text(p_value) == shown


@pytest.mark.parametrize(
    ("rate", "signed", "shown"),
    [
        (0.0732, False, "7.32%"),
        (0.05, False, "5.00%"),
        (9e-05, False, "0.0090%"),
        (0.0041, True, "+0.41%"),
        (-9e-05, True, "-0.0090%"),
        (0.0, False, "0.00%"),
    ],
)
def test_rates_in_messages_are_percentages_never_scientific(rate: float, signed: bool, shown: str):
    assert a.percent_text(rate, signed=signed) == shown
