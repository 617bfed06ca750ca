"""Rollups: exact counts and means, percentiles within 1%, idempotent, with raw edges."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from deployments.models import Deployment
from monitoring.decision.selectors import _exact_stats, version_stats
from monitoring.logstore import rollups
from monitoring.models import ExecutionRollup, RollupWatermark
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db


def test_histogram_percentile_is_within_one_percent() -> None:
    latencies = np.random.default_rng(7).lognormal(mean=1.0, sigma=1.2, size=20_000)
    buckets: dict[int, int] = {}
    for latency in latencies:
        index = int(
            np.floor(np.log(max(latency, rollups.LOW_MS) / rollups.LOW_MS) / np.log(rollups.RATIO))
        )
        buckets[index] = buckets.get(index, 0) + 1
    for fraction in (0.5, 0.95, 0.99):
        exact = np.percentile(latencies, fraction * 100, method="linear")
        approx = rollups.histogram_percentile(buckets, len(latencies), fraction)
        assert approx == pytest.approx(exact, rel=0.01)


def test_rollups_fold_closed_slices_once_and_grow_the_current_hour(
    canary_v2: Deployment,
) -> None:
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    for hours_ago in (5, 4, 3):
        add_logs(canary_v2, "v2", [1.0, 2.0, 3.0], errors=1, at=now - timedelta(hours=hours_ago))
    add_logs(canary_v2, "v1", [4.0] * 4, at=now - timedelta(hours=3))
    add_logs(canary_v2, "v2", [9.0], at=now - timedelta(minutes=20))  # a closed slice
    add_logs(canary_v2, "v2", [5.0], at=now - timedelta(minutes=3))  # its slice is open
    assert rollups.rollup_deployment(deployment=canary_v2, now=now) == 5
    assert rollups.rollup_deployment(deployment=canary_v2, now=now) == 0
    rows = ExecutionRollup.objects.filter(deployment=canary_v2, served_version="v2")
    totals = [(r.total, r.errors, r.latency_sum) for r in rows.order_by("hour")]
    assert totals == [(3, 1, 6.0)] * 3 + [(1, 0, 9.0)]
    watermark = RollupWatermark.objects.get(deployment=canary_v2).until
    assert watermark == now - timedelta(minutes=5)  # the last closed slice, after the grace
    # A later run folds only what is new, into the hour it belongs to.
    later = now + timedelta(minutes=10)
    assert rollups.rollup_deployment(deployment=canary_v2, now=later) == 1
    assert ExecutionRollup.objects.filter(deployment=canary_v2).count() == 5
    current = rows.order_by("hour").last()
    assert (current.total, current.latency_sum) == (2, 14.0)
    assert sum(current.latency_buckets.values()) == 2


def test_long_windows_use_rollups_and_raw_edges(canary_v2: Deployment) -> None:
    now = timezone.now().replace(minute=30, second=30, microsecond=0)
    rng = np.random.default_rng(3)
    v2_latencies: list[float] = []
    for minutes_ago in range(180, 0, -10):
        batch = list(rng.lognormal(mean=1.5, sigma=0.8, size=40))
        add_logs(canary_v2, "v2", batch, errors=2, at=now - timedelta(minutes=minutes_ago))
        v2_latencies.extend(batch)
    rollups.rollup_deployment(deployment=canary_v2, now=now)
    tail = [5.0, 6.0]
    add_logs(canary_v2, "v2", tail, at=now - timedelta(seconds=5))  # after the watermark
    v2_latencies.extend(tail)
    since = now - timedelta(hours=4, minutes=10)
    # The window is long and mostly rolled up, so the rollup path answers it.
    assert rollups.watermark_for(canary_v2.pk) - since >= rollups.LONG_WINDOW
    assert ExecutionRollup.objects.filter(deployment=canary_v2).exists()

    combined = version_stats(
        deployment_id=canary_v2.pk, since=since, until=now + timedelta(seconds=1)
    )
    exact = _exact_stats(canary_v2.pk, since, now + timedelta(seconds=1))
    got, want = combined["v2"], exact["v2"]
    assert got.total_requests == want.total_requests == len(v2_latencies)
    assert got.error_count == want.error_count == 36
    assert got.avg_latency_ms == pytest.approx(want.avg_latency_ms)
    assert got.p95_latency_ms == pytest.approx(want.p95_latency_ms, rel=0.01)
    assert got.p99_latency_ms == pytest.approx(want.p99_latency_ms, rel=0.01)
    assert combined["v1"] is None


def test_short_windows_stay_exact(canary_v2: Deployment) -> None:
    now = timezone.now()
    add_logs(canary_v2, "v2", [1.0, 2.0, 3.0, 4.0], at=now - timedelta(minutes=3))
    rollups.rollup_deployment(deployment=canary_v2, now=now + timedelta(hours=2))
    stats = version_stats(deployment_id=canary_v2.pk, since=now - timedelta(minutes=10))
    assert stats["v2"].p95_latency_ms == pytest.approx(np.percentile([1, 2, 3, 4], 95))
