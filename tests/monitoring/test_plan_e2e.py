"""A rollout plan run end to end by a real Celery worker and beat at a two-second monitor period.

Traffic steps, a timed pause (the shortest a plan allows: one minute, begun a minute in
the past so that the run does not wait it out), an approval step resumed over HTTP (its
approvers notified with a link to the canary), and the final promote; the events in
order, each with its actor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import F
from django.utils import timezone
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, DeploymentEvent, DeploymentPlan, RuleSet
from tests.monitoring.logs import add_logs
from tests.monitoring.test_scheduler_e2e import celery_processes
from tests.monitoring.webhook import slack_stub

STEPS = [
    {"traffic": 10},
    {"pause_minutes": 1},
    {"traffic": 20},
    {"traffic": 30},
    {"pause": "approval"},
    {"promote": True},
]


def wait_for(check: Callable[[], bool], seconds: float, logs: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    text = "\n".join(p.read_text() for p in logs.glob("*.log"))
    raise AssertionError(f"not reached within {seconds} s\n{text[-5000:]}")


def plan_state(canary: Deployment) -> str:
    return DeploymentPlan.objects.get(deployment=canary).state


@pytest.mark.django_db(transaction=True)
def test_a_plan_runs_end_to_end_under_celery_beat(
    tmp_path: Path, ruleset: RuleSet, active_v1: Deployment, approver: APIClient
) -> None:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", canary_config={"steps": STEPS}, actor="tests"
    )
    started = approver.post(f"/api/v1/deployments/{draft.pk}/start-canary", {}, format="json")
    assert started.status_code == 200, started.content
    canary = Deployment.objects.get(pk=draft.pk)
    plan = DeploymentPlan.objects.filter(deployment=canary)
    assert plan.get().current_step == 1  # the first traffic step applied at the start
    plan.update(step_started_at=F("step_started_at") - timedelta(seconds=61))
    # Healthy and paired, with enough pairs for the promote evidence (non-inferiority).
    add_logs(canary, "v2", [1.0] * 1_500, at=timezone.now(), paired=True)
    add_logs(canary, "v1", [1.0] * 3_000, at=timezone.now(), paired=True)

    with slack_stub() as webhook, celery_processes(tmp_path, SLACK_WEBHOOK_URL=webhook.url):
        wait_for(lambda: plan_state(canary) == "waiting_approval", 150, tmp_path)
        assert Deployment.objects.get(pk=canary.pk).traffic_percentage == 30
        wait_for(lambda: bool(webhook.received), 30, tmp_path)
        resumed = approver.post(f"/api/v1/deployments/{canary.pk}/resume", {}, format="json")
        assert resumed.status_code == 200, resumed.content
        wait_for(lambda: Deployment.objects.get(pk=canary.pk).status == "active", 60, tmp_path)
        wait_for(lambda: plan_state(canary) == "done", 30, tmp_path)

    [message] = [m for m in webhook.received if "Rollout plan waits for approval" in m["text"]]
    assert f"/admin/deployments/deployment/{canary.pk}/change/" in message["text"]
    events = DeploymentEvent.objects.filter(deployment=canary).exclude(action="create")
    trail = [(e.action, e.actor) for e in events.order_by("created_at", "id")]
    assert trail == [
        ("start_canary", "approver-user"),
        ("plan_step", "system:monitor"),  # the minute elapsed
        ("set_traffic", "system:monitor"),
        ("plan_step", "system:monitor"),
        ("set_traffic", "system:monitor"),
        ("plan_step", "system:monitor"),
        ("plan_step", "system:monitor"),  # waiting for approval
        ("resume", "approver-user"),
        ("promote", "system:monitor"),
        ("plan_step", "system:monitor"),  # done
    ]
    assert [e.payload.get("to_traffic") for e in events if e.action == "set_traffic"] == [20, 30]
