"""Rollback rules, health and comparison as pure functions, at their exact boundaries."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from deployments.canary_config import default_canary_config
from monitoring import analysis as a

CONFIG = default_canary_config()  # error 0.05, success 0.95, latency x2, min_samples 20


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


def breaches(v1: a.VersionStats | None = None, v2_5m=None, v2_10m=None) -> list[str]:
    return [
        b.rule for b in a.rollback_breaches(v1_5m=v1, v2_5m=v2_5m, v2_10m=v2_10m, config=CONFIG)
    ]


class TestRollbackRules:
    def test_error_rate_exactly_at_threshold_holds(self) -> None:
        assert breaches(v2_5m=version(100, 5)) == []

    def test_error_rate_above_threshold_breaches(self) -> None:
        assert breaches(v2_5m=version(100, 6)) == ["error_rate"]

    def test_min_samples_minus_one_gives_no_verdict(self) -> None:
        assert breaches(v2_5m=version(19, 19), v2_10m=version(19, 19)) == []
        assert breaches(v2_5m=version(20, 19), v2_10m=version(20, 19)) == [
            "error_rate",
            "success_rate",
        ]

    def test_success_rate_exactly_at_threshold_holds(self) -> None:
        assert breaches(v2_10m=version(100, 5)) == []
        assert breaches(v2_10m=version(1000, 51)) == ["success_rate"]

    def test_latency_exactly_at_multiple_holds(self) -> None:
        v1 = version(100, 0, p95=10.0)
        assert breaches(v1, v2_5m=version(100, 0, p95=20.0)) == []
        assert breaches(v1, v2_5m=version(100, 0, p95=20.001)) == ["latency_p95"]

    def test_latency_needs_v1_samples(self) -> None:
        assert breaches(None, v2_5m=version(100, 0, p95=1_000.0)) == []

    def test_messages_name_the_numbers(self) -> None:
        [breach] = a.rollback_breaches(v1_5m=None, v2_5m=version(50, 4), v2_10m=None, config=CONFIG)
        assert "8.00%" in breach.message and "5.00%" in breach.message
        assert "4 of 50" in breach.message


class TestHealth:
    def test_healthy(self) -> None:
        warnings = a.health_warnings(
            v1_5m=version(100, 0), v2_5m=version(100, 1), v2_10m=version(200, 2), config=CONFIG
        )
        assert warnings == []
        assert a.health_status(breaches=[], breaker_state="CLOSED", warnings=warnings) == "healthy"

    def test_degraded_near_the_error_threshold(self) -> None:
        warnings = a.health_warnings(v1_5m=None, v2_5m=version(100, 4), v2_10m=None, config=CONFIG)
        assert len(warnings) == 1 and "within 20%" in warnings[0]
        assert a.health_status(breaches=[], breaker_state="CLOSED", warnings=warnings) == "degraded"
        assert (
            a.health_warnings(v1_5m=None, v2_5m=version(100, 3), v2_10m=None, config=CONFIG) == []
        )

    def test_degraded_near_the_success_floor(self) -> None:
        # Floor 0.95: within 20% of the remaining 0.05 means below 0.96.
        assert (
            a.health_warnings(v1_5m=None, v2_5m=None, v2_10m=version(100, 4), config=CONFIG) == []
        )
        assert (
            len(a.health_warnings(v1_5m=None, v2_5m=None, v2_10m=version(1000, 41), config=CONFIG))
            == 1
        )

    def test_degraded_on_latency_ratio(self) -> None:
        v1 = version(100, 0, p95=10.0)
        assert (
            a.health_warnings(v1_5m=v1, v2_5m=version(100, 0, p95=12.0), v2_10m=None, config=CONFIG)
            == []
        )
        [warning] = a.health_warnings(
            v1_5m=v1, v2_5m=version(100, 0, p95=12.1), v2_10m=None, config=CONFIG
        )
        assert "1.2x" in warning

    def test_degraded_when_half_open(self) -> None:
        assert a.health_status(breaches=[], breaker_state="HALF_OPEN", warnings=[]) == "degraded"

    def test_unhealthy_on_breach_or_open_breaker(self) -> None:
        breach = a.Breach("error_rate", "x", 0.1, 0.05)
        assert (
            a.health_status(breaches=[breach], breaker_state="CLOSED", warnings=[]) == "unhealthy"
        )
        assert a.health_status(breaches=[], breaker_state="OPEN", warnings=[]) == "unhealthy"


def z_test_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    pooled = (x1 + x2) / (n1 + n2)
    z = (x2 / n2 - x1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 2 * stats.norm.sf(abs(z))


class TestComparison:
    def test_error_rate_test_is_the_two_proportion_z_test(self) -> None:
        result = a.error_rate_test(version(1000, 30), version(800, 45))
        assert result["p_value"] == pytest.approx(z_test_p_value(30, 1000, 45, 800), rel=1e-9)
        assert (result["n_v1"], result["n_v2"]) == (1000, 800)
        low, high = result["confidence_interval"]
        assert low < 45 / 800 - 30 / 1000 < high

    def test_clear_regression_is_rollback(self) -> None:
        v1, v2 = version(2000, 20, p95=10.0, avg=5.0), version(500, 60, p95=11.0, avg=5.5)
        answer = a.compare(
            v1=v1,
            v2=v2,
            v1_latencies=[5.0] * 50,
            v2_latencies=[5.5] * 50,
            breaches=[],
            config=CONFIG,
        )
        assert answer["comparison"]["recommendation"] == "rollback"
        assert answer["comparison"]["is_better"] is False
        assert answer["analysis"]["v1_is_more_reliable"] is True
        assert answer["analysis"]["significant_difference"] is True
        assert answer["evidence"]["error_rate"]["p_value"] < 0.05
        assert answer["comparison"]["error_rate_diff"] == pytest.approx(0.12 - 0.01)

    def test_identical_versions_are_not_significant_and_promote(self) -> None:
        v1 = v2 = version(1000, 10, p95=10.0, avg=5.0)
        sample = [float(n % 17) for n in range(500)]
        answer = a.compare(
            v1=v1, v2=v2, v1_latencies=sample, v2_latencies=sample, breaches=[], config=CONFIG
        )
        assert answer["analysis"]["significant_difference"] is False
        assert answer["evidence"]["latency"]["p_value"] == pytest.approx(
            stats.mannwhitneyu(sample, sample).pvalue
        )
        assert answer["comparison"]["recommendation"] == "promote"
        assert answer["comparison"]["is_better"] is True
        assert all(check["held"] for check in answer["evidence"]["thresholds"])

    def test_too_few_samples_collects_more_data(self) -> None:
        answer = a.compare(
            v1=version(1000, 10),
            v2=version(19, 0),
            v1_latencies=[1.0],
            v2_latencies=[1.0],
            breaches=[],
            config=CONFIG,
        )
        assert answer["comparison"]["recommendation"] == "collect_more_data"
        assert answer["evidence"]["enough_samples"] is False

    def test_no_v2_traffic_collects_more_data(self) -> None:
        answer = a.compare(
            v1=version(100, 0),
            v2=None,
            v1_latencies=[],
            v2_latencies=[],
            breaches=[],
            config=CONFIG,
        )
        assert answer["comparison"]["recommendation"] == "collect_more_data"
        assert answer["comparison"]["error_rate_diff"] is None

    def test_a_breach_is_rollback_even_without_significance(self) -> None:
        breach = a.Breach("latency_p95", "slow", 30.0, 20.0)
        answer = a.compare(
            v1=version(100, 0),
            v2=version(100, 0),
            v1_latencies=[1.0, 2.0],
            v2_latencies=[1.0, 2.0],
            breaches=[breach],
            config=CONFIG,
        )
        assert answer["comparison"]["recommendation"] == "rollback"
        assert answer["evidence"]["breaches"][0]["rule"] == "latency_p95"

    def test_faster_v2_is_reported(self) -> None:
        fast = [1.0 + n / 1000 for n in range(300)]
        slow = [2.0 + n / 1000 for n in range(300)]
        answer = a.compare(
            v1=version(300, 0, avg=2.15),
            v2=version(300, 0, avg=1.15),
            v1_latencies=slow,
            v2_latencies=fast,
            breaches=[],
            config=CONFIG,
        )
        assert answer["analysis"]["v2_is_faster"] is True
        assert answer["evidence"]["latency"]["significant"] is True
        assert answer["comparison"]["latency_diff_ms"] == pytest.approx(-1.0)
