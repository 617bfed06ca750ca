"""The readiness checklist as a pure function, each check at its exact boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.statistics import readiness as r
from monitoring.statistics.analysis import VersionStats


def stats(total: int, errors: int = 0, p95: float = 10.0) -> VersionStats:
    return VersionStats(
        total_requests=total,
        success_count=total - errors,
        error_count=errors,
        success_rate=(total - errors) / total,
        error_rate=errors / total,
        avg_latency_ms=p95 / 2,
        p95_latency_ms=p95,
        p99_latency_ms=p95 * 1.5,
    )


READY = r.ReadinessEvidence(
    v1=stats(1000, errors=10, p95=10.0),
    v2=stats(1000, errors=10, p95=12.0),
    v2_worse_p_value=0.5,
    v2_worse_test="two-proportion z-test",
    breaker_state="CLOSED",
    minutes_at_traffic=60.0,
    readiness_minutes=60,
    min_samples=20,
    latency_floor_ms=0.0,
)


def check(evidence: r.ReadinessEvidence, name: str) -> r.Check:
    [found] = [c for c in r.readiness_checks(evidence).checks if c.name == name]
    return found


def test_all_checks_pass_means_ready_and_lists_the_whole_checklist() -> None:
    result = r.readiness_checks(READY)
    assert result.ready is True
    assert [c.name for c in result.checks] == [
        "time_at_traffic",
        "success_rate",
        "p95_latency",
        "breaker_closed",
        "min_samples",
        "sample_ratio",
        "shadow_agreement",
    ]
    assert all(c.passed for c in result.checks)
    assert set(result.as_dict()) == {"ready", "checks"}
    fields = {"name", "passed", "required", "observed", "detail"}
    assert set(result.as_dict()["checks"][0]) == fields


@pytest.mark.parametrize(("minutes", "passed"), [(59.0, False), (59.99, False), (60.0, True)])
def test_time_at_traffic_boundary(minutes: float, passed: bool) -> None:
    evidence = replace(READY, minutes_at_traffic=minutes)
    assert check(evidence, "time_at_traffic").passed is passed
    assert r.readiness_checks(evidence).ready is passed


def test_below_half_traffic_is_not_ready() -> None:
    found = check(replace(READY, minutes_at_traffic=None), "time_at_traffic")
    assert (found.passed, found.observed) == (False, None)
    assert "below 50%" in found.detail


@pytest.mark.parametrize(("v2_p95", "passed"), [(12.0, True), (12.001, False)])
def test_p95_exactly_one_point_two_times_v1_passes(v2_p95: float, passed: bool) -> None:
    evidence = replace(READY, v2=stats(1000, errors=10, p95=v2_p95))
    assert check(evidence, "p95_latency").passed is passed
    assert r.readiness_checks(evidence).ready is passed


def test_p95_floor_is_added_to_the_ceiling() -> None:
    evidence = replace(READY, v2=stats(1000, errors=10, p95=13.0), latency_floor_ms=1.0)
    assert check(evidence, "p95_latency").passed is True
    evidence = replace(evidence, v2=stats(1000, errors=10, p95=13.01))
    assert check(evidence, "p95_latency").passed is False


@pytest.mark.parametrize(("p_value", "passed"), [(0.0501, True), (0.0499, False)])
def test_success_rate_fails_only_when_v2_is_significantly_worse(
    p_value: float, passed: bool
) -> None:
    found = check(replace(READY, v2_worse_p_value=p_value), "success_rate")
    assert found.passed is passed
    assert "one-sided p" in found.detail


@pytest.mark.parametrize(
    ("p_value", "shown"), [(0.0000123, "one-sided p < 0.0001,"), (0.0312, "one-sided p = 0.0312,")]
)
def test_p_values_in_the_details_are_rounded_as_the_console_shows_them(
    p_value: float, shown: str
) -> None:
    assert shown in check(replace(READY, v2_worse_p_value=p_value), "success_rate").detail


def test_success_rate_without_both_versions_is_no_evidence() -> None:
    found = check(replace(READY, v1=None, v2_worse_p_value=None), "success_rate")
    assert (found.passed, found.observed) == (False, None)


@pytest.mark.parametrize("state", ["OPEN", "HALF_OPEN", "UNKNOWN"])
def test_breaker_must_be_closed(state: str) -> None:
    found = check(replace(READY, breaker_state=state), "breaker_closed")
    assert (found.passed, found.observed) == (False, state)


@pytest.mark.parametrize(("v1_total", "passed"), [(19, False), (20, True)])
def test_min_samples_applies_to_both_versions(v1_total: int, passed: bool) -> None:
    found = check(replace(READY, v1=stats(v1_total, p95=10.0)), "min_samples")
    assert (found.passed, found.observed) == (passed, v1_total)


def test_sample_ratio_and_shadow_agreement_are_not_measured_yet() -> None:
    ratio, shadow = check(READY, "sample_ratio"), check(READY, "shadow_agreement")
    assert (ratio.passed, ratio.required, ratio.observed, ratio.detail) == (
        True,
        True,
        None,
        "not measured yet",
    )
    assert (shadow.passed, shadow.required, shadow.observed, shadow.detail) == (
        True,
        False,
        None,
        "not measured yet",
    )


def test_sample_ratio_mismatch_blocks_when_measured() -> None:
    assert check(replace(READY, sample_ratio_p_value=0.001), "sample_ratio").passed is True
    mismatch = replace(READY, sample_ratio_p_value=0.0009)
    assert check(mismatch, "sample_ratio").passed is False
    assert r.readiness_checks(mismatch).ready is False


def test_shadow_agreement_is_informational() -> None:
    evidence = replace(READY, shadow_agreement_rate=0.5)
    found = check(evidence, "shadow_agreement")
    assert (found.passed, found.required, found.observed) == (True, False, 0.5)
    assert r.readiness_checks(evidence).ready is True


def test_one_failing_required_check_makes_it_unready() -> None:
    for changed in (
        replace(READY, minutes_at_traffic=1.0),
        replace(READY, v2_worse_p_value=0.001),
        replace(READY, v2=stats(1000, p95=50.0)),
        replace(READY, breaker_state="OPEN"),
        replace(READY, min_samples=5000),
    ):
        assert r.readiness_checks(changed).ready is False


def test_one_sided_p_value() -> None:
    assert r.one_sided_worse_p_value(0.04, 0.01) == pytest.approx(0.02)
    assert r.one_sided_worse_p_value(0.04, -0.01) == pytest.approx(0.98)
    assert r.one_sided_worse_p_value(1.0, 0.0) == pytest.approx(0.5)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_stretch_is_the_current_continuous_time_at_half_or_more() -> None:
    assert r.stretch_started_at([(at(0), 10)]) is None
    assert r.stretch_started_at([(at(0), 10), (at(5), 50)]) == at(5)
    # Raising further keeps the stretch; a dip below 50% starts it over.
    assert r.stretch_started_at([(at(0), 50), (at(5), 80), (at(9), 100)]) == at(0)
    assert r.stretch_started_at([(at(0), 50), (at(60), 49), (at(70), 50)]) == at(70)
    assert r.stretch_started_at([(at(0), 60), (at(60), 10)]) is None
