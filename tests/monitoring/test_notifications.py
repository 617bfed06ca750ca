"""Notifications reach a real HTTP endpoint and the mail outbox; failures retry, then give up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from canary.celery import app as celery_app
from deployments import services as lifecycle
from deployments.models import Deployment
from monitoring.automation.monitor import monitor_run
from monitoring.notifications.dispatch import notify
from tests.monitoring.logs import add_logs
from tests.monitoring.webhook import slack_stub

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run tasks in-process (retries included) so this file needs no worker."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


@pytest.fixture
def channels(settings: Any, eager_celery: None) -> Iterator[Any]:
    settings.CANARY_NOTIFY_EMAIL = True
    settings.CANARY_NOTIFY_EMAILS = ["oncall@example.com"]
    settings.CANARY_BASE_URL = "https://canary.example.com"
    with slack_stub() as webhook:
        settings.SLACK_WEBHOOK_URL = webhook.url
        yield webhook


def fail_canary(deployment: Deployment) -> None:
    add_logs(
        deployment,
        "v2",
        [1.0] * 100,
        errors=20,
        at=timezone.now() - timedelta(minutes=1),
        paired=True,
    )


def test_automatic_rollback_notifies_slack_and_email(
    canary_v2: Deployment, channels: Any, django_capture_on_commit_callbacks: Any
) -> None:
    fail_canary(canary_v2)
    with django_capture_on_commit_callbacks(execute=True):
        monitor_run()
    [message] = channels.received
    text = message["text"]
    assert "Automatic rollback by system:monitor" in text
    assert "thermostat" in text and "v2.0.0" in text and "v1: v1.0.0" in text
    assert "error rate 20.00%" in text
    assert f"https://canary.example.com/admin/deployments/deployment/{canary_v2.pk}/change/" in text
    [email] = mail.outbox
    assert email.to == ["oncall@example.com"]
    assert email.subject == "[Canary] thermostat v2.0.0: Automatic rollback by system:monitor"


def test_notify_and_rollback_strategy_notifies_a_manual_rollback(
    ruleset: Any, draft_v2: Deployment, channels: Any, django_capture_on_commit_callbacks: Any
) -> None:
    lifecycle.deployment_update(
        deployment_id=draft_v2.pk, compensation_strategy="notify_and_rollback", actor="t"
    )
    lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.deployment_rollback(deployment_id=draft_v2.pk, reason="looks off", actor="alice")
    [message] = channels.received
    assert "Rolled back by alice" in message["text"] and "looks off" in message["text"]


def test_rollback_only_strategy_stays_quiet(
    canary_v2: Deployment, channels: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.deployment_rollback(deployment_id=canary_v2.pk, reason="x", actor="alice")
    assert channels.received == [] and mail.outbox == []


def test_no_channel_configured_sends_nothing_and_fails_nothing(
    canary_v2: Deployment,
    settings: Any,
    eager_celery: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.SLACK_WEBHOOK_URL = ""
    settings.CANARY_NOTIFY_EMAIL = False
    fail_canary(canary_v2)
    with django_capture_on_commit_callbacks(execute=True):
        monitor_run()
    assert Deployment.objects.get(pk=canary_v2.pk).status == "rolled_back"
    assert mail.outbox == []
    with django_capture_on_commit_callbacks() as queued:
        result = notify(deployment=canary_v2, headline="h", reason="r")
    assert result == {"slack": False, "email": []}
    assert queued == []


def test_failing_webhook_is_retried_then_given_up(
    canary_v2: Deployment,
    settings: Any,
    eager_celery: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.CANARY_NOTIFY_EMAIL = False
    with slack_stub(fail_first=100) as webhook:
        settings.SLACK_WEBHOOK_URL = webhook.url
        fail_canary(canary_v2)
        with django_capture_on_commit_callbacks(execute=True):
            monitor_run()
    assert webhook.attempts == 5  # the first try and four retries
    assert webhook.received == []
    assert Deployment.objects.get(pk=canary_v2.pk).status == "rolled_back"


def test_a_flaky_webhook_delivers_on_retry(
    canary_v2: Deployment,
    settings: Any,
    eager_celery: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.CANARY_NOTIFY_EMAIL = False
    with slack_stub(fail_first=2) as webhook:
        settings.SLACK_WEBHOOK_URL = webhook.url
        fail_canary(canary_v2)
        with django_capture_on_commit_callbacks(execute=True):
            monitor_run()
    assert webhook.attempts == 3
    assert len(webhook.received) == 1


def test_email_goes_to_approvers_by_default(
    canary_v2: Deployment,
    settings: Any,
    eager_celery: None,
    client_for: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from django.contrib.auth import get_user_model

    settings.SLACK_WEBHOOK_URL = ""
    settings.CANARY_NOTIFY_EMAIL = True
    settings.CANARY_NOTIFY_EMAILS = []
    client_for("approver")
    client_for("viewer")
    users = get_user_model().objects
    users.filter(username="approver-user").update(email="approver@example.com")
    users.filter(username="viewer-user").update(email="viewer@example.com")
    fail_canary(canary_v2)
    with django_capture_on_commit_callbacks(execute=True):
        monitor_run()
    [email] = mail.outbox
    assert email.to == ["approver@example.com"]
