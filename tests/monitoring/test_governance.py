"""Readiness from the event history, stale canaries, and what the monitor says about them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from canary.celery import app as celery_app
from deployments import services as lifecycle
from deployments.models import Deployment, DeploymentEvent
from monitoring.automation import governance
from monitoring.automation.monitor import monitor_run
from monitoring.models import GovernanceRecord
from monitoring.prometheus import render_metrics
from tests.deployments.test_promotion_governance import add_healthy_pairs, make_canary
from tests.monitoring.logs import add_logs
from tests.monitoring.webhook import slack_stub

pytestmark = pytest.mark.django_db


@pytest.fixture
def slack(settings: Any) -> Iterator[Any]:
    """Notifications delivered in-process to a real local webhook."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    settings.CANARY_NOTIFY_EMAIL = False
    with slack_stub() as webhook:
        settings.SLACK_WEBHOOK_URL = webhook.url
        yield webhook
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


def texts(webhook: Any) -> list[str]:
    return [message["text"] for message in webhook.received]


def check(answer: Any, name: str) -> dict[str, Any]:
    checks = answer["checks"] if isinstance(answer, dict) else answer.as_dict()["checks"]
    [found] = [c for c in checks if c["name"] == name]
    return found


# --- time at traffic, from the event history -----------------------------------------------


@pytest.mark.parametrize(("minutes", "passed"), [(59, False), (60, True)])
def test_time_at_traffic_boundary_from_events(minutes: int, passed: bool) -> None:
    canary = make_canary("hour-at-half")
    raised = timezone.now()
    lifecycle.deployment_set_traffic(
        deployment_id=canary.pk, traffic_percentage=50, actor="t", now=raised
    )
    found = check(
        governance.readiness_evaluate(deployment=canary, now=raised + timedelta(minutes=minutes)),
        "time_at_traffic",
    )
    assert (found["passed"], found["observed"]) == (passed, float(minutes))


def test_a_dip_below_half_starts_the_hour_over() -> None:
    canary = make_canary("dip")
    t0 = timezone.now()
    for minutes, percentage in ((0, 50), (50, 20), (55, 50), (70, 100)):
        lifecycle.deployment_set_traffic(
            deployment_id=canary.pk,
            traffic_percentage=percentage,
            actor="t",
            now=t0 + timedelta(minutes=minutes),
        )
    found = check(
        governance.readiness_evaluate(deployment=canary, now=t0 + timedelta(minutes=114)),
        "time_at_traffic",
    )
    assert (found["passed"], found["observed"]) == (False, 59.0)
    found = check(
        governance.readiness_evaluate(deployment=canary, now=t0 + timedelta(minutes=115)),
        "time_at_traffic",
    )
    assert found["passed"] is True


def test_starting_at_half_counts_from_the_start(viewer: APIClient) -> None:
    canary = make_canary("start-at-half", traffic=50, readiness_minutes=1)
    event = DeploymentEvent.objects.get(deployment=canary, action="start_canary")
    found = check(
        governance.readiness_evaluate(
            deployment=canary, now=event.created_at + timedelta(minutes=1)
        ),
        "time_at_traffic",
    )
    assert found["passed"] is True


def test_readiness_endpoint(viewer: APIClient) -> None:
    canary = make_canary("endpoint", traffic=50)
    now = timezone.now()
    add_logs(canary, "v1", [2.0] * 30, at=now)
    add_logs(canary, "v2", [2.0] * 30, errors=1, at=now)
    response = viewer.get(f"/api/v1/deployments/{canary.pk}/readiness")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is False  # a few seconds at 50%, not an hour
    assert [c["name"] for c in body["checks"]] == [
        "time_at_traffic",
        "success_rate",
        "p95_latency",
        "breaker_closed",
        "min_samples",
        "sample_ratio",
        "shadow_agreement",
    ]
    # 30 served requests each cannot show v2 within a point of v1: absence of evidence.
    assert check(body, "success_rate")["passed"] is False
    assert "Not yet shown not worse" in check(body, "success_rate")["detail"]
    assert "served requests" in check(body, "success_rate")["detail"]
    assert check(body, "min_samples")["observed"] == 30
    assert check(body, "breaker_closed")["observed"] == "CLOSED"
    assert check(body, "sample_ratio")["detail"] == "not measured yet"
    assert body["detail"] == "Not ready: time_at_traffic, success_rate."


def test_readiness_of_a_deployment_that_is_not_a_canary(
    viewer: APIClient, active_v1: Deployment
) -> None:
    body = viewer.get(f"/api/v1/deployments/{active_v1.pk}/readiness").json()
    assert (body["ready"], body["checks"], body["status"]) == (False, [], "active")
    assert viewer.get("/api/v1/deployments/not-an-id/readiness").status_code == 404


# --- stale canaries --------------------------------------------------------------------------


def test_stale_warning_after_the_configured_days(settings: Any) -> None:
    settings.CANARY_STALE_DAYS = 7
    canary = make_canary("stale")
    started = canary.started_at
    assert governance.stale_warning(canary, started + timedelta(days=7)) is None
    warning = governance.stale_warning(canary, started + timedelta(days=7, seconds=1))
    assert warning is not None and warning.startswith("stale_canary: the canary has run 7 days")
    settings.CANARY_STALE_DAYS = 8
    assert governance.stale_warning(canary, started + timedelta(days=7, seconds=1)) is None


def test_stale_warning_in_the_health_endpoint(viewer: APIClient) -> None:
    canary = make_canary("stale-health")
    Deployment.objects.filter(pk=canary.pk).update(
        started_at=timezone.now() - timedelta(days=8, hours=1)
    )
    body = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
    [warning] = [w for w in body["warnings"] if w.startswith("stale_canary:")]
    assert "has run 8 days" in warning
    assert body["health_status"] == "degraded"


def test_stale_canary_notifies_once_a_day_not_once_a_run(
    slack: Any, django_capture_on_commit_callbacks: Any
) -> None:
    canary = make_canary("stale-notify")
    started = canary.started_at

    def run_at(**age: float) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            monitor_run(now=started + timedelta(**age))

    run_at(days=6, hours=23)
    assert texts(slack) == []
    for hours in (1, 2, 12, 23):  # four runs on the 8th day: one message
        run_at(days=7, hours=hours)
    assert len(texts(slack)) == 1
    assert "Canary has run 7 days" in texts(slack)[0]
    assert "stale_canary:" in texts(slack)[0]
    run_at(days=8, hours=1)
    run_at(days=8, hours=2)
    assert len(texts(slack)) == 2
    assert "Canary has run 8 days" in texts(slack)[1]


# --- the monitor ---------------------------------------------------------------------------


def test_readiness_reached_is_notified_once(
    slack: Any, django_capture_on_commit_callbacks: Any
) -> None:
    canary = make_canary("ready-notify", readiness_minutes=30)
    t0 = timezone.now()
    lifecycle.deployment_set_traffic(
        deployment_id=canary.pk, traffic_percentage=50, actor="t", now=t0
    )
    add_healthy_pairs(canary, at=t0 + timedelta(minutes=1))

    def run_at(minutes: int) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            monitor_run(now=t0 + timedelta(minutes=minutes))

    run_at(29)
    assert texts(slack) == []
    assert GovernanceRecord.objects.get(deployment=canary).ready is False
    run_at(30)
    run_at(35)
    assert len(texts(slack)) == 1
    assert "Canary is ready to promote" in texts(slack)[0]
    assert GovernanceRecord.objects.get(deployment=canary).ready is True


def test_auto_promote_waits_for_approvals_and_asks_once(
    slack: Any, django_capture_on_commit_callbacks: Any
) -> None:
    canary = make_canary(
        "auto-waits",
        traffic=100,
        auto_progress=True,
        duration_minutes=10,
        required_approvals=2,
        readiness_minutes=600,
    )
    clock = timezone.now()
    for step in range(1, 5):
        clock += timedelta(minutes=6)
        add_healthy_pairs(canary, at=clock - timedelta(minutes=1), each=300)
        with django_capture_on_commit_callbacks(execute=True):
            report = monitor_run(now=clock)
        assert report.promoted == [], step
    canary.refresh_from_db()
    assert canary.status == "canary"
    assert [t for t in texts(slack) if "Promotion awaits approval (0 of 2)" in t] == texts(slack)
    assert len(texts(slack)) == 1


def test_auto_promote_never_overrides_enforced_readiness() -> None:
    canary = make_canary(
        "auto-enforced",
        traffic=100,
        auto_progress=True,
        duration_minutes=10,
        enforce_readiness=True,
        readiness_minutes=600,
    )
    clock = timezone.now() + timedelta(minutes=11)
    add_healthy_pairs(canary, at=clock - timedelta(minutes=1))
    assert monitor_run(now=clock).promoted == []
    # The same canary without enforcement is promoted by that run.
    lifecycle_config = {**canary.canary_config, "enforce_readiness": False}
    Deployment.objects.filter(pk=canary.pk).update(canary_config=lifecycle_config)
    assert monitor_run(now=clock + timedelta(minutes=1)).promoted == [str(canary.pk)]


def test_an_approval_notifies_the_other_approvers(
    slack: Any, django_capture_on_commit_callbacks: Any
) -> None:
    canary = make_canary("approval-notify", required_approvals=2)
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.deployment_promote(deployment_id=canary.pk, actor="alice")
    [text] = texts(slack)
    assert "Promotion awaits 1 more approval" in text
    assert "alice approved" in text


# --- Prometheus ----------------------------------------------------------------------------


def gauges() -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(render_metrics().decode()):
        if family.name in ("canary_pending_approvals", "canary_ready"):
            for sample in family.samples:
                found[(sample.name, sample.labels["deployment_id"])] = sample.value
    return found


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single", "multiprocess"])
def test_governance_gauges(multiprocess: bool, monkeypatch: Any, tmp_path: Any) -> None:
    if multiprocess:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    canary = make_canary("gauges", required_approvals=3)
    key = str(canary.pk)
    assert gauges()[("canary_pending_approvals", key)] == 0
    assert ("canary_ready", key) not in gauges()  # the monitor has not judged it yet
    lifecycle.deployment_promote(deployment_id=canary.pk, actor="alice")
    lifecycle.deployment_promote(deployment_id=canary.pk, actor="bob")
    governance.governance_check(deployment_id=canary.pk, now=timezone.now())
    assert gauges()[("canary_pending_approvals", key)] == 2
    assert gauges()[("canary_ready", key)] == 0
    GovernanceRecord.objects.filter(deployment=canary).update(ready=True)
    assert gauges()[("canary_ready", key)] == 1
    lifecycle.deployment_set_traffic(deployment_id=canary.pk, traffic_percentage=50, actor="t")
    assert gauges()[("canary_pending_approvals", key)] == 0
