"""The scheduled monitor's rules at their boundaries, single flight and auto-progress."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deployments import services as lifecycle
from deployments.models import Deployment, DeploymentEvent
from monitoring.automation.monitor import monitor_run
from monitoring.models import JobRun
from tests.monitoring.logs import add_logs
from tests.monitoring.test_breaker_integration import make_canary

pytestmark = pytest.mark.django_db


def status(deployment: Deployment) -> str:
    return Deployment.objects.get(pk=deployment.pk).status


class TestRollbackRules:
    """v2's failures here are paired with v1 succeeding on the same inputs (SPEC 9.2)."""

    def test_error_rate_exactly_at_threshold_holds(self, canary_v2: Deployment) -> None:
        now = timezone.now()
        add_logs(
            canary_v2, "v2", [1.0] * 1000, errors=50, at=now - timedelta(minutes=1), paired=True
        )
        assert monitor_run(now=now).rolled_back == []
        assert status(canary_v2) == "canary"

    def test_error_rate_above_threshold_rolls_back(self, canary_v2: Deployment) -> None:
        now = timezone.now()
        add_logs(
            canary_v2, "v2", [1.0] * 1000, errors=51, at=now - timedelta(minutes=1), paired=True
        )
        report = monitor_run(now=now)
        assert report.rolled_back == [str(canary_v2.pk)]
        rolled = Deployment.objects.get(pk=canary_v2.pk)
        assert rolled.status == "rolled_back"
        assert "v2 failed on 5.10% of the 1,000 inputs v1 handled" in rolled.rollback_reason
        event = DeploymentEvent.objects.get(deployment=canary_v2, action="rollback")
        assert event.actor == "system:monitor"

    def test_min_samples_minus_one_gives_no_verdict(self, canary_v2: Deployment) -> None:
        now = timezone.now()
        add_logs(canary_v2, "v2", [1.0] * 19, errors=19, at=now - timedelta(minutes=1), paired=True)
        assert monitor_run(now=now).rolled_back == []
        add_logs(canary_v2, "v2", [1.0], errors=1, at=now - timedelta(minutes=1), paired=True)
        assert monitor_run(now=now).rolled_back == [str(canary_v2.pk)]

    def test_five_minute_window_edge(self, draft_v2: Deployment) -> None:
        # Isolate the 5-minute error rule from the 10-minute success rule.
        lifecycle.deployment_update(
            deployment_id=draft_v2.pk, canary_config={"success_threshold": 0.0}, actor="t"
        )
        canary = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
        now = timezone.now()
        add_logs(canary, "v2", [1.0] * 400, at=now - timedelta(minutes=1), paired=True)
        just_outside = now - timedelta(minutes=5, microseconds=1)
        add_logs(canary, "v2", [1.0] * 40, errors=40, at=just_outside, paired=True)
        assert monitor_run(now=now).rolled_back == []
        add_logs(canary, "v2", [1.0] * 40, errors=40, at=now - timedelta(minutes=5), paired=True)
        assert monitor_run(now=now).rolled_back == [str(canary.pk)]  # 40 of 440 = 9.1%

    def test_success_rate_ten_minute_edge(self, canary_v2: Deployment) -> None:
        now = timezone.now()
        add_logs(canary_v2, "v2", [1.0] * 950, at=now - timedelta(minutes=1), paired=True)
        outside = now - timedelta(minutes=10, microseconds=1)
        add_logs(canary_v2, "v2", [1.0] * 60, errors=60, at=outside, paired=True)
        assert monitor_run(now=now).rolled_back == []
        at_edge = now - timedelta(minutes=10)
        add_logs(canary_v2, "v2", [1.0] * 60, errors=60, at=at_edge, paired=True)
        report = monitor_run(now=now)
        assert report.rolled_back == [str(canary_v2.pk)]
        assert "success rate" in Deployment.objects.get(pk=canary_v2.pk).rollback_reason

    def test_latency_rule(self, canary_v2: Deployment) -> None:
        """The latency rule needs a confidence bound on the p95 difference, on at least 20
        observations above each version's p95 (SPEC 9.6): 400 requests each."""
        now = timezone.now()
        add_logs(canary_v2, "v1", [10.0] * 400, at=now - timedelta(minutes=1))
        add_logs(canary_v2, "v2", [20.0] * 380, at=now - timedelta(minutes=1))
        add_logs(canary_v2, "v2", [500.0] * 19, at=now - timedelta(minutes=1))
        # 2x v1's p95 exactly, and too few slow requests to be sure of v2's p95: no verdict.
        assert monitor_run(now=now).rolled_back == []
        add_logs(canary_v2, "v2", [500.0] * 100, at=now - timedelta(minutes=1))
        assert monitor_run(now=now).rolled_back == [str(canary_v2.pk)]
        reason = Deployment.objects.get(pk=canary_v2.pk).rollback_reason
        assert "p95 latency" in reason and "observations above the p95" in reason

    def test_auto_rollback_off_leaves_it_running(
        self, ruleset: object, draft_v2: Deployment
    ) -> None:
        lifecycle.deployment_update(
            deployment_id=draft_v2.pk, canary_config={"auto_rollback": False}, actor="t"
        )
        canary = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
        now = timezone.now()
        add_logs(canary, "v2", [1.0] * 50, errors=50, at=now - timedelta(minutes=1), paired=True)
        assert monitor_run(now=now).rolled_back == []
        assert status(canary) == "canary"
        assert canary.health_record.status == "unhealthy"

    def test_heartbeat_is_recorded(self, canary_v2: Deployment) -> None:
        monitor_run()
        run = JobRun.objects.get(name="canary-monitor")
        assert run.last_finished_at is not None and run.held_until is None
        assert run.last_outcome.startswith("checked 1")


def test_a_held_lease_skips_the_run(canary_v2: Deployment) -> None:
    now = timezone.now()
    JobRun.objects.create(
        name="canary-monitor", holder="other", held_until=now + timedelta(minutes=1)
    )
    assert monitor_run(now=now).skipped is True
    # An expired lease (a crashed run) does not block forever.
    assert monitor_run(now=now + timedelta(minutes=2)).skipped is False


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_roll_back_once(roles: None) -> None:
    canary = make_canary("monitor-race", traffic=10)
    now = timezone.now()
    add_logs(canary, "v2", [1.0] * 50, errors=20, at=now - timedelta(minutes=1), paired=True)
    barrier = threading.Barrier(2)
    reports = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            reports.append(monitor_run(now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 2
    assert sum(len(report.rolled_back) for report in reports) == 1
    assert DeploymentEvent.objects.filter(deployment=canary, action="rollback").count() == 1


def test_auto_progress_to_promotion_with_a_fake_clock(
    ruleset: object, draft_v2: Deployment
) -> None:
    lifecycle.deployment_update(
        deployment_id=draft_v2.pk,
        canary_config={"auto_progress": True, "increment": 10, "duration_minutes": 30},
        actor="t",
    )
    canary = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=10, actor="t")
    clock = timezone.now()
    seen = [10]
    for _ in range(12):
        # Half a step later: not yet. (Paired: v2 shown as good as v1 on the same inputs.)
        clock += timedelta(minutes=15)
        add_logs(canary, "v2", [1.0] * 30, at=clock - timedelta(minutes=1), paired=True)
        add_logs(canary, "v1", [1.0] * 120, at=clock - timedelta(minutes=1), paired=True)
        monitor_run(now=clock)
        assert Deployment.objects.get(pk=canary.pk).traffic_percentage == seen[-1]
        # A full healthy step: one increment (or the promotion at 100).
        clock += timedelta(minutes=16)
        add_logs(canary, "v2", [1.0] * 30, at=clock - timedelta(minutes=1), paired=True)
        add_logs(canary, "v1", [1.0] * 120, at=clock - timedelta(minutes=1), paired=True)
        monitor_run(now=clock)
        current = Deployment.objects.get(pk=canary.pk)
        if current.status == "active":
            break
        seen.append(current.traffic_percentage)
    assert seen == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert Deployment.objects.get(pk=canary.pk).status == "active"
    steps = DeploymentEvent.objects.filter(deployment=canary, actor="system:monitor")
    assert [e.action for e in steps.order_by("id")] == ["set_traffic"] * 9 + ["promote"]
    assert "Automatic progression" in steps.first().payload["reason"]


def test_auto_progress_waits_for_enough_healthy_samples(
    ruleset: object, draft_v2: Deployment
) -> None:
    lifecycle.deployment_update(
        deployment_id=draft_v2.pk,
        canary_config={"auto_progress": True, "duration_minutes": 30},
        actor="t",
    )
    canary = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=10, actor="t")
    later = timezone.now() + timedelta(minutes=31)
    add_logs(canary, "v2", [1.0] * 19, at=later - timedelta(minutes=1))
    monitor_run(now=later)
    assert Deployment.objects.get(pk=canary.pk).traffic_percentage == 10
