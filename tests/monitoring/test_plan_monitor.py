"""The monitor advancing rollout plans (SPEC 10.1), on a fake clock and the real database.

Each run judges the canary on the logs written just before it: paired and healthy
unless a test says otherwise, so the one decision allows raising traffic and,
with enough pairs, promoting.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from assignments.models import Assignment
from deployments import services
from deployments.models import Deployment, DeploymentEvent, DeploymentPlan, RuleSet
from monitoring.automation.monitor import monitor_run
from monitoring.breaker import state as breaker
from monitoring.breaker.store import breaker_store
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db


def start(ruleset: RuleSet, steps: list[dict[str, Any]], **config: Any) -> Deployment:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        canary_config={"steps": steps, **config},
        actor="tests",
    )
    return services.deployment_start_canary(deployment_id=draft.pk, actor="alice")


def healthy(canary: Deployment, at: datetime, pairs: int = 60) -> None:
    add_logs(canary, "v2", [1.0] * pairs, at=at - timedelta(minutes=1), paired=True)
    add_logs(canary, "v1", [1.0] * pairs * 4, at=at - timedelta(minutes=1), paired=True)


def plan_of(canary: Deployment) -> DeploymentPlan:
    return DeploymentPlan.objects.get(deployment=canary)


def fresh(canary: Deployment) -> Deployment:
    return Deployment.objects.get(pk=canary.pk)


def test_a_plan_runs_to_its_promotion(ruleset: RuleSet, active_v1: Deployment) -> None:
    steps = [
        {"traffic": 10},
        {"pause_minutes": 30},
        {"traffic": 20},
        {"traffic": 30},
        {"pause": "approval"},
        {"promote": True},
    ]
    canary = start(ruleset, steps)
    clock = timezone.now()
    clock += timedelta(minutes=10)
    healthy(canary, clock)
    monitor_run(now=clock)
    assert (fresh(canary).traffic_percentage, plan_of(canary).current_step) == (10, 1)
    assert "pausing until" in plan_of(canary).waiting_for

    clock += timedelta(minutes=21)
    healthy(canary, clock)
    monitor_run(now=clock)
    # The pause elapsed; both traffic steps applied in one run; the approval step waits.
    assert fresh(canary).traffic_percentage == 30
    plan = plan_of(canary)
    assert (plan.state, plan.current_step) == ("waiting_approval", 4)
    clock += timedelta(minutes=5)
    healthy(canary, clock)
    monitor_run(now=clock)  # waiting is not advancing
    assert plan_of(canary).state == "waiting_approval"

    services.deployment_resume(deployment_id=canary.pk, actor="bob", now=clock)
    clock += timedelta(minutes=5)
    healthy(canary, clock, pairs=1_500)
    monitor_run(now=clock)
    assert fresh(canary).status == "active"
    plan = plan_of(canary)
    assert (plan.state, plan.current_step) == ("done", 6)
    assert [entry["step"] for entry in plan.history] == [0, 1, 2, 3, 4, 5]

    events = DeploymentEvent.objects.filter(deployment=canary).exclude(action="create")
    trail = [(e.action, e.actor) for e in events.order_by("created_at", "id")]
    assert trail == [
        ("start_canary", "alice"),
        ("plan_step", "system:monitor"),  # the pause elapsed
        ("set_traffic", "system:monitor"),
        ("plan_step", "system:monitor"),
        ("set_traffic", "system:monitor"),
        ("plan_step", "system:monitor"),
        ("plan_step", "system:monitor"),  # waiting for approval
        ("resume", "bob"),
        ("promote", "system:monitor"),
        ("plan_step", "system:monitor"),  # done
    ]


def test_a_breach_during_a_pause_rolls_back_and_the_plan_stops(
    ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = start(ruleset, [{"traffic": 10}, {"pause_minutes": 30}, {"traffic": 50}])
    clock = timezone.now() + timedelta(minutes=5)
    add_logs(canary, "v2", [1.0] * 100, errors=20, at=clock - timedelta(minutes=1), paired=True)
    monitor_run(now=clock)
    assert fresh(canary).status == "rolled_back"
    clock += timedelta(minutes=40)
    monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 0
    assert not DeploymentEvent.objects.filter(deployment=canary, action="plan_step").exists()
    assert plan_of(canary).current_step == 1


def test_an_open_breaker_holds_the_plan(ruleset: RuleSet, active_v1: Deployment) -> None:
    canary = start(ruleset, [{"traffic": 10}, {"pause_minutes": 1}, {"traffic": 20}])
    long_ago = time.time() - 3_600  # OPEN that long is HALF_OPEN: not CLOSED, not a rollback
    breaker_store().update(
        canary.pk, lambda _: (None, breaker.BreakerState(breaker.OPEN, 5, opened_at=long_ago))
    )
    clock = timezone.now() + timedelta(minutes=5)
    healthy(canary, clock)
    monitor_run(now=clock)
    assert fresh(canary).status == "canary"
    assert plan_of(canary).current_step == 1
    assert "circuit breaker is HALF_OPEN" in plan_of(canary).waiting_for
    breaker_store().update(canary.pk, lambda _: (None, breaker.BreakerState()))
    clock += timedelta(minutes=1)
    healthy(canary, clock)
    monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 20


def test_a_sample_ratio_mismatch_holds_the_plan(ruleset: RuleSet, active_v1: Deployment) -> None:
    canary = start(ruleset, [{"traffic": 10}, {"pause_minutes": 1}, {"traffic": 20}])
    now = timezone.now()
    Assignment.objects.bulk_create(
        Assignment(
            deployment=canary,
            tier="user",
            identifier=f"u{i}",
            assigned_version="v2",
            version_id=canary.version_id,
            assigned_at=now,
        )
        for i in range(200)
    )  # every context on v2 at 10% traffic
    clock = now + timedelta(minutes=5)
    healthy(canary, clock)
    monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 10
    assert "sample-ratio mismatch" in plan_of(canary).waiting_for


def test_a_paused_plan_and_a_paused_auto_progress_do_not_advance(
    ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = start(ruleset, [{"traffic": 10}, {"pause_minutes": 1}, {"traffic": 20}])
    services.deployment_pause(deployment_id=canary.pk, actor="carol")
    clock = timezone.now() + timedelta(minutes=5)
    healthy(canary, clock)
    monitor_run(now=clock)
    assert (fresh(canary).traffic_percentage, plan_of(canary).state) == (10, "paused")
    services.deployment_resume(deployment_id=canary.pk, actor="carol")
    monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 20


def test_pause_stops_plain_auto_progress(ruleset: RuleSet, active_v1: Deployment) -> None:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        canary_config={"auto_progress": True, "duration_minutes": 30},
        actor="tests",
    )
    canary = services.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="t")
    services.deployment_pause(deployment_id=canary.pk, actor="carol")
    clock = timezone.now() + timedelta(minutes=31)
    healthy(canary, clock)
    monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 10
    services.deployment_resume(deployment_id=canary.pk, actor="carol")
    monitor_run(now=clock + timedelta(seconds=1))
    assert fresh(canary).traffic_percentage == 20


def test_a_refused_promote_waits_with_one_event_per_step(
    ruleset: RuleSet, active_v1: Deployment
) -> None:
    """Four eyes: the monitor cannot give approvals, so the promote step waits for people."""
    canary = start(ruleset, [{"traffic": 50}, {"promote": True}], required_approvals=2)
    clock = timezone.now()
    for _ in range(3):
        clock += timedelta(minutes=5)
        healthy(canary, clock, pairs=1_500)
        monitor_run(now=clock)
    assert fresh(canary).status == "canary"
    refusals = DeploymentEvent.objects.filter(deployment=canary, action="plan_step")
    assert refusals.count() == 1
    assert refusals.get().payload["code"] == "conflict"
    assert "approvals" in plan_of(canary).waiting_for


def test_plan_gauges(ruleset: RuleSet, active_v1: Deployment) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from monitoring.prometheus import render_metrics

    canary = start(ruleset, [{"traffic": 10}, {"pause_minutes": 30}, {"promote": True}])
    samples = {
        (sample.name, sample.labels.get("deployment_id")): sample.value
        for family in text_string_to_metric_families(render_metrics().decode())
        for sample in family.samples
    }
    assert samples[("canary_plan_step", str(canary.pk))] == 1.0
    assert samples[("canary_plan_step_seconds", str(canary.pk))] >= 0.0
