"""The canary page's SVG charts: built from per-minute rows, drawn without JavaScript."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments import services
from deployments.admin import charts
from deployments.models import Deployment
from tests.monitoring.logs import add_logs

Console = Callable[[str], Client]
NOW = datetime(2026, 11, 27, 11, 0, 30, tzinfo=UTC)


def row(
    minute: datetime,
    version: str,
    total: int,
    errors: int,
    p95: float,
    pairs: int = 0,
    disagreed: int = 0,
) -> dict:
    return {
        "minute": minute,
        "served_version": version,
        "total": total,
        "errors": errors,
        "p95_latency_ms": p95,
        "pairs": pairs,
        "disagreed": disagreed,
    }


def test_charts_place_each_minute_and_leave_gaps():
    minutes = charts.minutes_window(NOW)
    assert len(minutes) == 60 and minutes[-1] == NOW.replace(second=0)
    rows = [
        row(minutes[10], "v1", 100, 1, 8.0),
        row(minutes[10], "v2", 10, 2, 12.0),
        row(minutes[12], "v2", 10, 0, 9.0),
    ]
    found = charts.charts_for(
        rows, minutes=minutes, error_threshold=0.05, markers=[(minutes[11], "traffic", "change")]
    )
    requests, errors, p95 = found  # no disagreement chart without paired evaluation
    v1, v2 = errors.series
    assert v2.values[10] == pytest.approx(0.2) and v2.values[11] is None
    assert v1.values[10] == pytest.approx(0.01) and v1.values[12] is None
    assert requests.series[0].values[10] == 100 and p95.series[1].values[12] == 9.0
    assert errors.threshold == 0.05 and errors.markers == [charts.Marker(11, "traffic")]


def test_disagreement_is_one_series_over_both_versions_pairs():
    minutes = charts.minutes_window(NOW)
    rows = [
        row(minutes[3], "v1", 90, 0, 8.0, pairs=90, disagreed=1),
        row(minutes[3], "v2", 10, 3, 9.0, pairs=10, disagreed=3),
        row(minutes[4], "v1", 50, 0, 8.0),  # nothing paired in that minute: a gap
    ]
    *_, disagreement = charts.charts_for(rows, minutes=minutes, error_threshold=None, paired=True)
    (series,) = disagreement.series
    assert series.label == "disagreement"
    assert series.values[3] == pytest.approx(0.04) and series.values[4] is None
    assert 'data-chart="disagreement"' in charts.render(disagreement, minutes)


def test_render_draws_both_series_threshold_and_markers():
    minutes = charts.minutes_window(NOW)
    rows = [row(minutes[i], v, 10, i % 3, 5.0 + i) for i in (5, 6, 9) for v in ("v1", "v2")]
    markers = [(minutes[6], "Traffic 10→20", "change"), (minutes[8], "Breaker opened", "breaker")]
    chart = charts.charts_for(rows, minutes=minutes, error_threshold=0.05, markers=markers)[1]
    svg = charts.render(chart, minutes)
    assert svg.count('class="series series-v1"') == 1 and 'class="series series-v2"' in svg
    assert 'd="M' in svg and " M" in svg  # a gap between minute 6 and 9 starts a new segment
    assert 'class="threshold"' in svg and "error threshold 5%" in svg
    assert "<title>Traffic 10→20</title>" in svg
    assert 'class="marker marker-breaker"' in svg and "<title>Breaker opened</title>" in svg
    assert svg.count("<circle") == 6


@pytest.mark.django_db
def test_canary_page_shows_the_last_hour_per_minute(console: Console, canary_v2: Deployment):
    services.deployment_set_traffic(
        deployment_id=canary_v2.pk, traffic_percentage=20, actor="t", reason="fine"
    )
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    for minutes_ago in (1, 2, 5):
        at = timezone.now() - timedelta(minutes=minutes_ago)
        add_logs(canary, "v1", [8.0] * 10, errors=0, at=at)
        add_logs(canary, "v2", [9.0] * 10, errors=1, at=at)
    url = reverse("admin:deployments_deployment_change", args=[canary_v2.pk])
    body = console("viewer").get(url).content.decode()
    assert 'id="canary-charts"' in body
    assert body.count("<svg viewBox") >= 3
    for name in ("requests", "error", "p95"):
        assert f'data-chart="{name}"' in body
    assert 'class="series series-v1"' in body and 'class="series series-v2"' in body
    assert 'class="marker marker-change"' in body  # the traffic change


@pytest.mark.django_db
def test_ended_deployments_have_no_chart(console: Console, active_v1: Deployment):
    url = reverse("admin:deployments_deployment_change", args=[active_v1.pk])
    assert 'id="canary-charts"' not in console("viewer").get(url).content.decode()


@pytest.mark.django_db
def test_paired_canary_charts_disagreement_and_marks_the_breaker_opening(
    console: Console, canary_v2: Deployment
):
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    for minutes_ago in (1, 2, 3):
        at = timezone.now() - timedelta(minutes=minutes_ago)
        add_logs(canary, "v1", [8.0] * 20, paired=True, at=at)
        add_logs(canary, "v2", [9.0] * 10, errors=minutes_ago, paired=True, at=at)
    services.deployment_breaker_opened(
        deployment_id=canary.pk, consecutive_failures=5, cooldown_seconds=60, actor="system:breaker"
    )
    url = reverse("admin:deployments_deployment_change", args=[canary.pk])
    body = console("viewer").get(url).content.decode()
    assert 'data-chart="disagreement"' in body
    assert 'class="series series-disagreement"' in body
    assert 'class="marker marker-breaker"' in body
    assert "Circuit breaker opened: after 5 consecutive v2 failures" in body


@pytest.mark.django_db
def test_no_disagreement_chart_when_paired_evaluation_is_off(
    console: Console, ruleset: object, active_v1: Deployment
):
    draft = services.deployment_create(
        ruleset_id=active_v1.ruleset_id,
        version="v2.0.0",
        canary_config={"shadow_percentage": 0},
        actor="t",
    )
    canary = services.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="t")
    add_logs(Deployment.objects.select_related("baseline").get(pk=canary.pk), "v2", [9.0] * 5)
    url = reverse("admin:deployments_deployment_change", args=[canary.pk])
    body = console("viewer").get(url).content.decode()
    assert 'data-chart="requests"' in body and 'data-chart="disagreement"' not in body
