"""Manual compensation on the deployment page: counts, differences, Replay, Mark complete."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from canary.celery import app as celery_app
from deployments import services
from deployments.models import Deployment, DeploymentEvent
from monitoring.models import ExecutionLog
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def page_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_change", args=[deployment.pk])


def action_url(deployment: Deployment, action: str) -> str:
    return reverse("admin:deployments_deployment_action", args=[deployment.pk, action])


@pytest.fixture
def pending(canary_v2: Deployment) -> Deployment:
    """A manual-strategy canary rolled back with compensation: 12 v2 executions flagged."""
    Deployment.objects.filter(pk=canary_v2.pk).update(compensation_strategy="manual")
    add_logs(canary_v2, "v2", [1.0] * 12)
    add_logs(canary_v2, "v1", [1.0] * 5)
    services.deployment_rollback(
        deployment_id=canary_v2.pk, reason="bad decisions", actor="t", apply_compensation=True
    )
    return Deployment.objects.get(pk=canary_v2.pk)


@pytest.fixture
def eager_celery() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


def test_pending_compensation_shows_counts_and_buttons(console: Console, pending: Deployment):
    body = console("approver").get(page_url(pending)).content.decode()
    assert "Compensation: pending" in body
    assert "<strong>12</strong> v2 executions flagged for reprocessing" in body
    assert 'data-action="compensation-replay"' in body
    assert 'data-action="compensation-complete"' in body
    assert "needs_reprocess__exact=1" in body


def test_a_viewer_sees_the_counts_but_no_button(console: Console, pending: Deployment):
    client = console("viewer")
    body = client.get(page_url(pending)).content.decode()
    assert "<strong>12</strong> v2 executions flagged" in body
    assert "compensation-replay" not in body and "compensation-complete" not in body
    forged = client.post(action_url(pending, "compensation-complete"), {"expected_status": "x"})
    assert forged.status_code == 403
    assert Deployment.objects.get(pk=pending.pk).compensation_status == "pending"


def test_replay_from_the_page_lists_the_differing_decisions(
    console: Console, pending: Deployment, eager_celery: None
):
    client = console("approver")
    confirm = client.get(action_url(pending, "compensation-replay")).content.decode()
    assert "evaluated again with v1.0.0" in confirm and "Yes, replay on v1" in confirm
    response = client.post(
        action_url(pending, "compensation-replay"), {"expected_status": "rolled_back"}
    )
    assert response.status_code == 302
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Replay queued for 12 flagged executions of v2.0.0" in messages[0]
    replayed = ExecutionLog.objects.filter(deployment=pending, reprocessed_at__isnull=False)
    assert replayed.count() == 12
    differing = ExecutionLog.objects.filter(deployment=pending, replay_differs=True).count()
    body = client.get(page_url(pending)).content.decode()
    assert "<strong>12</strong> replayed on v1" in body
    assert f"<strong>{differing}</strong> with a different decision" in body
    if differing:
        assert 'id="canary-compensation-differences"' in body


def test_mark_complete_from_the_page(console: Console, pending: Deployment):
    client = console("approver")
    confirm = client.get(action_url(pending, "compensation-complete")).content.decode()
    assert "recorded as done" in confirm
    client.post(action_url(pending, "compensation-complete"), {"expected_status": "rolled_back"})
    assert Deployment.objects.get(pk=pending.pk).compensation_status == "completed"
    assert DeploymentEvent.objects.filter(
        deployment=pending, action="compensation_complete", actor="approver-console"
    ).exists()
    body = client.get(page_url(pending)).content.decode()
    assert "Compensation: completed" in body and "compensation-complete" not in body
    again = client.get(action_url(pending, "compensation-complete"), follow=True)
    assert "No compensation is pending for this deployment." in again.content.decode()
