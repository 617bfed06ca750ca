"""Prometheus scraped from a multi-worker server: counters equal what was served, exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deployments.models import Deployment
from monitoring.prometheus import render_metrics
from tests.accounts import create_user
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import granian, gunicorn

EXECUTIONS = 120


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{base}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.django_db(transaction=True)
def test_counters_sum_every_worker(roles: None, tmp_path: Path) -> None:
    canary = make_canary("prometheus", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    deployment = str(canary.pk)
    served: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with gunicorn(workers=3, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as base:
        session = requests.Session()
        for n in range(EXECUTIONS):
            data = {"temperature": 30} if n % 4 else {"zone": "A"}  # every 4th fails
            response = session.post(
                f"{base}/api/v1/rulesets/{canary.ruleset_id}/execute",
                json={"input": data, "user_id": f"user-{n}"},
                headers={**headers, "Connection": "close"},  # spread requests over workers
                timeout=10,
            )
            assert response.status_code == 200, response.text
            body = response.json()
            served[body["canary_version"]] += 1
            errors[body["canary_version"]] += not body["success"]
        metrics = scrape(base)
        # More than one worker process served and wrote its own counters.
        assert len(list(tmp_path.glob("counter_*.db"))) >= 2

    label = (("deployment_id", deployment),)
    assert served["v1"] > 0 and served["v2"] > 0
    for version in ("v1", "v2"):
        assert metrics[(f"canary_{version}_requests_total", label)] == served[version]
        assert metrics.get((f"canary_{version}_errors_total", label), 0) == errors[version]
        assert metrics[(f"canary_{version}_latency_seconds_count", label)] == served[version]
        assert ((f"canary_{version}_latency_seconds_bucket", (*label, ("le", "0.001")))) in metrics
    assert metrics[("canary_deployment_status", (*label, ("status", "canary")))] == 1
    assert metrics[("canary_deployment_status", (*label, ("status", "active")))] == 0
    assert metrics[("canary_traffic_percentage", label)] == 50
    assert any(name.startswith("django_http_requests_total") for name, _ in metrics)


def series_of(text: str, deployment: str) -> dict[tuple[str, tuple], float]:
    return {
        (
            sample.name,
            tuple(sorted((k, v) for k, v in sample.labels.items() if k != "deployment_id")),
        ): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("deployment_id") == deployment and not sample.name.endswith("_created")
    }


def assert_every_series_at_zero(series: dict[tuple[str, tuple], float]) -> None:
    for version in ("v1", "v2"):
        assert series[(f"canary_{version}_requests_total", ())] == 0
        assert series[(f"canary_{version}_errors_total", ())] == 0
        assert series[(f"canary_{version}_latency_seconds_count", ())] == 0
        assert series[(f"canary_{version}_latency_seconds_sum", ())] == 0
        assert series[(f"canary_{version}_latency_seconds_bucket", (("le", "+Inf"),))] == 0
        assert series[(f"canary_{version}_latency_seconds_bucket", (("le", "0.001"),))] == 0


def test_a_running_canary_has_every_series_at_zero_before_its_first_request(
    canary_v2: Deployment,
) -> None:
    """Prometheus' advice: export a series at 0 rather than not at all, so that an error
    rate reads 0 instead of "No data" while v1 has had no error."""
    assert_every_series_at_zero(series_of(render_metrics().decode(), str(canary_v2.pk)))


@pytest.mark.django_db(transaction=True)
def test_every_worker_of_the_server_exports_them(roles: None) -> None:
    canary = make_canary("zero-series", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    deployment = str(canary.pk)
    with granian(workers=3) as server:
        session = requests.Session()
        for _ in range(6):  # a scrape reaches any worker: each one answers the same
            scraped = session.get(f"{server.base}/metrics", headers={"Connection": "close"})
            assert_every_series_at_zero(series_of(scraped.text, deployment))
        # A canary whose v1 succeeds: its error counter stays, at 0.
        for n in range(10):
            response = session.post(
                f"{server.base}/api/v1/rulesets/{canary.ruleset_id}/execute",
                json={"input": {"temperature": 30}, "user_id": f"user-{n}"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert response.status_code == 200 and response.json()["success"]
        series = series_of(session.get(f"{server.base}/metrics").text, deployment)
    assert series[("canary_v1_errors_total", ())] == 0
    assert series[("canary_v2_errors_total", ())] == 0
    served = series[("canary_v1_requests_total", ())] + series[("canary_v2_requests_total", ())]
    assert served == 10
