"""Webhook deliveries through a real Celery worker: after commit, retried, at-least-once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from deployments import services
from deployments.models import Deployment
from deployments.signals import deployment_transitioning
from monitoring.models import WebhookDelivery
from monitoring.notifications import webhooks
from tests.monitoring.receiver import receiver
from tests.monitoring.test_scheduler_e2e import celery_processes

WORKER_ENV = {
    "CANARY_WEBHOOK_ALLOW_PRIVATE": "1",
    "CANARY_WEBHOOK_BACKOFF_SECONDS": "0.2",
    "CANARY_WEBHOOK_TIMEOUT_SECONDS": "1",
}


def settled(delivery_id: Any, timeout: float = 60) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        if delivery.status != "pending":
            return delivery
        time.sleep(0.1)
    return WebhookDelivery.objects.get(pk=delivery_id)


def logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in tmp_path.glob("*.log"))


@pytest.mark.django_db(transaction=True)
def test_a_promote_delivers_one_cloudevent_that_verifies(
    canary_v2: Deployment, tmp_path: Path
) -> None:
    with receiver(200) as hook, celery_processes(tmp_path, **WORKER_ENV):
        webhook = webhooks.webhook_create(name="ci", url=hook.url, events=["deployment.promoted"])
        services.deployment_promote(deployment_id=canary_v2.pk, actor="release-bot")
        delivery = WebhookDelivery.objects.get(webhook=webhook)
        done = settled(delivery.pk)
        received = list(hook.received)
    assert done.status == "succeeded", logs(tmp_path)
    [request] = received
    event = Verifier(webhook.secret).verify(request.body, request.headers)
    assert event["type"] == "io.canary.deployment.promoted"
    assert event["id"] == request.headers["webhook-id"]
    assert event["data"]["event"]["actor"] == "release-bot"


@pytest.mark.django_db(transaction=True)
def test_500_twice_then_200_is_three_attempts_with_the_same_id(
    canary_v2: Deployment, tmp_path: Path
) -> None:
    with receiver(500, 500, 200) as hook, celery_processes(tmp_path, **WORKER_ENV):
        webhook = webhooks.webhook_create(name="ci", url=hook.url, events=["*"])
        services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        done = settled(WebhookDelivery.objects.get(webhook=webhook).pk)
        received = list(hook.received)
    assert done.status == "succeeded", logs(tmp_path)
    assert done.attempts == 3
    assert len(received) == 3
    assert len({request.headers["webhook-id"] for request in received}) == 1
    for request in received:  # each attempt is signed afresh, and verifies
        Verifier(webhook.secret).verify(request.body, request.headers)


@pytest.mark.django_db(transaction=True)
def test_a_hanging_receiver_times_out_and_is_retried(canary_v2: Deployment, tmp_path: Path) -> None:
    with receiver("hang", 200) as hook, celery_processes(tmp_path, **WORKER_ENV):
        webhook = webhooks.webhook_create(name="ci", url=hook.url, events=["*"])
        services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        delivery_id = WebhookDelivery.objects.get(webhook=webhook).pk
        done = settled(delivery_id)
        received = list(hook.received)
    assert done.status == "succeeded", logs(tmp_path)
    assert done.attempts == 2
    assert len(received) == 2
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_delivers_nothing(canary_v2: Deployment, tmp_path: Path) -> None:
    def fail(**kwargs: Any) -> None:
        if kwargs["action"] == "promote":
            raise RuntimeError("the promote's transaction fails after its event was written")

    with receiver(200) as hook, celery_processes(tmp_path, **WORKER_ENV):
        webhook = webhooks.webhook_create(name="ci", url=hook.url, events=["*"])
        deployment_transitioning.connect(fail, dispatch_uid="test.fail_promote")
        try:
            with pytest.raises(RuntimeError):
                services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        finally:
            deployment_transitioning.disconnect(dispatch_uid="test.fail_promote")
        # A later change that commits is delivered; the failed promote never is.
        services.deployment_rollback(deployment_id=canary_v2.pk, reason="done", actor="t")
        rollback = WebhookDelivery.objects.get(webhook=webhook, event_type="deployment.rolled_back")
        settled(rollback.pk)
        received = list(hook.received)
    assert not WebhookDelivery.objects.filter(event_type="deployment.promoted").exists()
    types = [Verifier(webhook.secret).verify(r.body, r.headers)["type"] for r in received]
    assert types == ["io.canary.deployment.rolled_back"], logs(tmp_path)
