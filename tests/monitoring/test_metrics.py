"""Metrics, comparison and health endpoints on known data sets."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.models import Deployment
from monitoring.decision.selectors import version_stats
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

V1_LATENCIES = [float(n) for n in range(1, 101)]  # 1..100 ms
V2_LATENCIES = [0.5, 2.0, 2.0, 3.5, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0, 144.0]


def test_known_data_set(canary_v2: Deployment) -> None:
    add_logs(canary_v2, "v1", V1_LATENCIES, errors=3)
    add_logs(canary_v2, "v2", V2_LATENCIES, errors=2)
    stats = version_stats(deployment_id=canary_v2.pk)
    v1, v2 = stats["v1"], stats["v2"]
    assert (v1.total_requests, v1.success_count, v1.error_count) == (100, 97, 3)
    assert (v1.success_rate, v1.error_rate) == (0.97, 0.03)
    assert v1.avg_latency_ms == pytest.approx(50.5)
    assert (v2.total_requests, v2.error_count) == (11, 2)
    assert v2.error_rate == pytest.approx(2 / 11)
    assert v2.avg_latency_ms == pytest.approx(sum(V2_LATENCIES) / 11)
    # percentile_cont: linear interpolation at rank p * (n - 1), numpy's "linear" method.
    for observed, latencies in ((v1, V1_LATENCIES), (v2, V2_LATENCIES)):
        assert observed.p95_latency_ms == pytest.approx(
            np.percentile(latencies, 95, method="linear")
        )
        assert observed.p99_latency_ms == pytest.approx(
            np.percentile(latencies, 99, method="linear")
        )
    assert v1.p95_latency_ms == pytest.approx(95.05)


def test_window_excludes_older_logs(canary_v2: Deployment, viewer: APIClient) -> None:
    add_logs(canary_v2, "v2", [1.0] * 5, at=timezone.now() - timedelta(minutes=30))
    add_logs(canary_v2, "v2", [2.0] * 3)
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/metrics", {"window_minutes": 10}).json()
    assert body["v2_metrics"]["total_requests"] == 3
    assert body["v1_metrics"] is None
    assert body["window"]["window_minutes"] == 10
    whole = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/metrics").json()
    # The whole canary starts at started_at; the 30-minute-old rows predate it.
    assert whole["v2_metrics"]["total_requests"] == 3


def test_metrics_shape(canary_v2: Deployment, viewer: APIClient) -> None:
    add_logs(canary_v2, "v1", [1.0, 2.0])
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/metrics").json()
    assert body["deployment_id"] == str(canary_v2.pk)
    assert set(body["v1_metrics"]) == {
        "total_requests",
        "success_count",
        "error_count",
        "success_rate",
        "error_rate",
        "avg_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
    }
    assert body["v2_metrics"] is None


@pytest.mark.parametrize("window", ["0", "abc", "-5"])
def test_bad_window_is_400(canary_v2: Deployment, viewer: APIClient, window: str) -> None:
    response = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/metrics", {"window_minutes": window})
    assert response.status_code == 400
    assert "window_minutes" in response.json()


def test_comparison_recommends_rollback_on_a_regression(
    canary_v2: Deployment, viewer: APIClient
) -> None:
    add_logs(canary_v2, "v1", [5.0 + n % 7 for n in range(400)], errors=4)
    add_logs(canary_v2, "v2", [5.0 + n % 7 for n in range(100)], errors=12)
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/comparison").json()
    assert body["comparison"]["recommendation"] == "rollback"
    assert body["comparison"]["is_better"] is False
    assert body["analysis"]["v1_is_more_reliable"] is True
    assert body["comparison"]["error_rate_diff"] == pytest.approx(0.12 - 0.01)
    evidence = body["evidence"]
    assert evidence["error_rate"]["n_v1"] == 400 and evidence["error_rate"]["n_v2"] == 100
    assert evidence["latency"]["sample_v2"] == 100
    assert {b["rule"] for b in evidence["breaches"]} == {"error_rate", "success_rate"}


def test_comparison_without_data_collects_more(canary_v2: Deployment, viewer: APIClient) -> None:
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/comparison").json()
    assert body["comparison"]["recommendation"] == "collect_more_data"


def test_health_healthy_degraded_unhealthy(canary_v2: Deployment, viewer: APIClient) -> None:
    url = f"/api/v1/deployments/{canary_v2.pk}/health"
    empty = viewer.get(url).json()
    assert empty["health_status"] == "no_data"
    assert empty["circuit_breaker_state"] == "CLOSED"
    assert empty["current_error_rate"] is None and empty["warnings"] == []

    add_logs(canary_v2, "v1", [5.0] * 100)
    add_logs(canary_v2, "v2", [5.0] * 100, errors=4)  # 4%: within 20% of 5%
    degraded = viewer.get(url).json()
    assert degraded["health_status"] == "degraded"
    assert degraded["current_error_rate"] == pytest.approx(0.04)
    assert any("within 20%" in w for w in degraded["warnings"])

    add_logs(canary_v2, "v2", [5.0] * 10, errors=10)  # 14 of 110
    unhealthy = viewer.get(url).json()
    assert unhealthy["health_status"] == "unhealthy"
    assert any("above the 5.00% threshold" in w for w in unhealthy["warnings"])
    assert unhealthy["last_check_at"]


def test_measurement_endpoints_need_a_role(canary_v2: Deployment, client_for: object) -> None:
    for path in ("metrics", "comparison", "health"):
        url = f"/api/v1/deployments/{canary_v2.pk}/{path}"
        assert APIClient().get(url).status_code == 401
        assert client_for("viewer").get(url).status_code == 200  # type: ignore[operator]
        assert client_for("viewer").get(f"/api/v1/deployments/nope/{path}").status_code == 404  # type: ignore[operator]
