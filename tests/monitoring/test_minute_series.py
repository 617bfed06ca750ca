"""``minute_series``: per-minute, per-version counts and p95 in one query."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.models import Deployment
from monitoring.decision.selectors import minute_series
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db


def test_buckets_by_minute_and_version_in_one_query(canary_v2: Deployment):
    now = timezone.now().replace(second=30, microsecond=0)
    earlier = now - timedelta(minutes=3)
    add_logs(canary_v2, "v1", [10.0] * 20, at=earlier)
    add_logs(canary_v2, "v2", [float(i) for i in range(1, 21)], errors=5, at=earlier)
    add_logs(canary_v2, "v2", [4.0] * 4, at=now)
    add_logs(canary_v2, "v2", [4.0] * 4, at=now - timedelta(hours=2))  # outside the window
    with CaptureQueriesContext(connection) as queries:
        rows = minute_series(deployment_id=canary_v2.pk, since=now - timedelta(hours=1))
    assert len(queries) == 1
    minute = earlier.replace(second=0)
    assert [(r["minute"], r["served_version"], r["total"], r["errors"]) for r in rows] == [
        (minute, "v1", 20, 0),
        (minute, "v2", 20, 5),
        (now.replace(second=0), "v2", 4, 0),
    ]
    assert rows[1]["p95_latency_ms"] == pytest.approx(19.05)
    assert rows[0]["p95_latency_ms"] == pytest.approx(10.0)


def test_counts_the_pairs_and_their_disagreements_per_minute(canary_v2: Deployment):
    now = timezone.now().replace(second=30, microsecond=0)
    # 10 v2-served inputs, 4 failed on v2 where v1 (the shadow) succeeded: 4 disagreements.
    add_logs(canary_v2, "v2", [5.0] * 10, errors=4, paired=True, at=now)
    # 30 v1-served inputs, 2 failed in both versions: they agree.
    add_logs(canary_v2, "v1", [5.0] * 30, errors=2, shared_errors=2, paired=True, at=now)
    add_logs(canary_v2, "v1", [5.0] * 5, at=now)  # not paired (shadow sampling)
    rows = minute_series(deployment_id=canary_v2.pk, since=now - timedelta(hours=1))
    assert [(r["served_version"], r["total"], r["pairs"], r["disagreed"]) for r in rows] == [
        ("v1", 35, 30, 0),
        ("v2", 10, 10, 4),
    ]
