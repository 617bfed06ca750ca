"""Webhooks (SPEC 10.4): the API, deliveries written with their event, signing, retries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook as Verifier

from deployments import services
from deployments.models import Deployment, DeploymentEvent
from monitoring.models import WebhookDelivery
from monitoring.notifications import webhooks
from tests.monitoring.receiver import receiver

pytestmark = pytest.mark.django_db


def create(client: APIClient, **body: Any) -> Any:
    body = {"name": "ci", "url": "http://127.0.0.1:9/hook", "events": ["*"], **body}
    return client.post("/api/v1/webhooks", body, format="json")


def test_create_shows_the_secret_once(admin_api: APIClient) -> None:
    created = create(admin_api)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert set(body) == {
        "id",
        "name",
        "url",
        "events",
        "ruleset_ids",
        "active",
        "secret",
        "created_at",
    }
    again = admin_api.get(f"/api/v1/webhooks/{body['id']}").json()
    assert "secret" not in again
    assert "secret" not in admin_api.get("/api/v1/webhooks").json()[0]


def test_only_admins_manage_webhooks(approver: APIClient, viewer: APIClient) -> None:
    for client in (approver, viewer):
        assert create(client).status_code == 403
        assert client.get("/api/v1/webhooks").status_code == 403


def test_patch_and_delete(admin_api: APIClient) -> None:
    hook = create(admin_api).json()
    changed = admin_api.patch(
        f"/api/v1/webhooks/{hook['id']}",
        {"active": False, "events": ["deployment.promoted"]},
        format="json",
    )
    assert changed.status_code == 200
    assert changed.json()["active"] is False
    assert changed.json()["events"] == ["deployment.promoted"]
    assert admin_api.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert admin_api.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["deployment.exploded"]}, "events"),
        ({"events": []}, "events"),
        ({"ruleset_ids": ["not-a-uuid"]}, "ruleset_ids"),
        ({"name": ""}, "name"),
        ({"url": "ftp://x"}, "url"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(admin_api: APIClient, body: dict, field: str) -> None:
    answer = create(admin_api, **body)
    assert answer.status_code == 400
    assert field in answer.json()


def test_each_mapped_event_writes_one_delivery_in_its_transaction(
    admin_api: APIClient, draft_v2: Deployment
) -> None:
    hook = create(admin_api).json()
    canary = services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
    services.deployment_set_traffic(deployment_id=canary.pk, traffic_percentage=30, actor="t")
    services.deployment_promote(deployment_id=canary.pk, actor="t")
    types = list(
        WebhookDelivery.objects.filter(webhook_id=hook["id"])
        .order_by("created_at")
        .values_list("event_type", flat=True)
    )
    # The baseline's supersede is not an announced event type.
    assert types == [
        "deployment.canary_started",
        "deployment.traffic_changed",
        "deployment.promoted",
    ]
    promoted = WebhookDelivery.objects.get(event_type="deployment.promoted")
    data = promoted.event["data"]
    assert data["deployment"]["status"] == "active"
    assert data["deployment"]["deployment_id"] == str(canary.pk)
    assert data["event"]["action"] == "promote"
    assert promoted.event["attributes"]["type"] == "io.canary.deployment.promoted"
    assert promoted.event["attributes"]["subject"] == str(canary.pk)


def test_event_types_and_rule_sets_filter(admin_api: APIClient, draft_v2: Deployment) -> None:
    only_promotions = create(admin_api, events=["deployment.promoted"]).json()
    other = services.ruleset_create(name="other", actor="t")
    elsewhere = create(admin_api, ruleset_ids=[str(other.pk)]).json()
    services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
    assert not WebhookDelivery.objects.filter(webhook_id=only_promotions["id"]).exists()
    assert not WebhookDelivery.objects.filter(webhook_id=elsewhere["id"]).exists()


def test_actions_of_other_features_are_mapped_by_name() -> None:
    assert webhooks.EVENT_TYPE_OF_ACTION["pause"] == "deployment.paused"
    assert webhooks.EVENT_TYPE_OF_ACTION["resume"] == "deployment.resumed"
    assert webhooks.EVENT_TYPE_OF_ACTION["plan_step"] == "deployment.plan_step"
    assert webhooks.EVENT_TYPE_OF_ACTION["bake_complete"] == "deployment.bake_completed"
    assert set(webhooks.EVENT_TYPE_OF_ACTION.values()) <= set(webhooks.EVENT_TYPES)


def test_a_non_deployment_event_is_announced_through_the_public_function(
    admin_api: APIClient,
) -> None:
    create(admin_api, events=["backtest.completed"])
    [delivery] = webhooks.webhook_announce(
        event_type="backtest.completed",
        subject="b-1",
        source="/api/v1/backtests/b-1",
        data={"backtest": {"id": "b-1", "status": "done"}},
    )
    assert delivery.event["attributes"]["type"] == "io.canary.backtest.completed"


def test_an_attempt_posts_a_cloudevent_signed_per_standard_webhooks(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    with receiver(200) as hook:
        created = create(admin_api, url=hook.url).json()
        services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        delivery = WebhookDelivery.objects.get(event_type="deployment.promoted")
        assert webhooks.delivery_attempt(delivery_id=delivery.pk) is None
    [request] = hook.received
    verified = Verifier(created["secret"]).verify(request.body, request.headers)
    assert request.headers["Content-Type"] == "application/cloudevents+json"
    assert verified["specversion"] == "1.0"
    assert verified["id"] == request.headers["webhook-id"] == str(delivery.event_id)
    assert verified["type"] == "io.canary.deployment.promoted"
    assert verified["datacontenttype"] == "application/json"
    assert verified["data"]["deployment"]["status"] == "active"
    assert verified["data"]["event"]["action"] == "promote"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert delivery.delivered_at is not None


@override_settings(CANARY_WEBHOOK_MAX_ATTEMPTS=2)
def test_a_delivery_fails_after_the_last_attempt_and_can_be_redelivered(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    with receiver(500) as hook:
        created = create(admin_api, url=hook.url).json()
        services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        delivery = WebhookDelivery.objects.get(event_type="deployment.promoted")
        assert webhooks.delivery_attempt(delivery_id=delivery.pk) is not None
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=delivery.created_at)
        assert webhooks.delivery_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 2, 500)
    listed = admin_api.get(f"/api/v1/webhooks/{created['id']}/deliveries").json()
    assert listed["count"] == 1
    row = listed["results"][0]
    assert set(row) == {
        "id", "event_id", "event_type", "status", "attempts", "last_status_code",
        "last_error", "next_attempt_at", "created_at", "delivered_at",
    }  # fmt: skip
    assert row["status"] == "failed"
    again = admin_api.post(f"/api/v1/webhooks/{created['id']}/deliveries/{delivery.pk}/redeliver")
    assert again.status_code == 202
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)


def test_backoff_grows_exponentially_with_jitter(settings: Any) -> None:
    settings.CANARY_WEBHOOK_BACKOFF_SECONDS = 10
    for attempts in range(1, 6):
        delays = {webhooks.backoff_seconds(attempts) for _ in range(20)}
        ceiling = 10 * 2 ** (attempts - 1)
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1


def test_no_delivery_without_a_webhook(canary_v2: Deployment) -> None:
    services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
    assert WebhookDelivery.objects.count() == 0
    assert DeploymentEvent.objects.filter(deployment=canary_v2, action="promote").exists()


def test_the_body_is_valid_json_of_the_stored_event(canary_v2: Deployment) -> None:
    webhooks.webhook_create(name="x", url="http://127.0.0.1:9/", events=["*"])
    [delivery] = webhooks.webhook_announce(
        event_type="deployment.promoted", subject="s", source="/t", data={"a": 1}
    )
    headers, body = webhooks.cloudevent_body(delivery.event)
    assert headers["content-type"] == "application/cloudevents+json"
    assert json.loads(body)["data"] == {"a": 1}


def test_the_sweep_requeues_only_overdue_pending_deliveries(canary_v2: Deployment) -> None:
    from datetime import timedelta

    from django.utils import timezone

    webhooks.webhook_create(name="x", url="http://127.0.0.1:9/", events=["*"])
    now = timezone.now()
    overdue, future, done = (
        webhooks.webhook_announce(
            event_type="deployment.promoted", subject="s", source="/t", data={}
        )[0]
        for _ in range(3)
    )
    WebhookDelivery.objects.filter(pk=overdue.pk).update(next_attempt_at=now - timedelta(hours=1))
    WebhookDelivery.objects.filter(pk=future.pk).update(next_attempt_at=now + timedelta(hours=1))
    WebhookDelivery.objects.filter(pk=done.pk).update(
        status="succeeded", next_attempt_at=now - timedelta(hours=1)
    )
    assert webhooks.deliveries_due(now=now) == [str(overdue.pk)]


def test_a_claimed_delivery_is_not_attempted_twice_at_once(canary_v2: Deployment) -> None:
    with receiver(200) as hook:
        webhooks.webhook_create(name="x", url=hook.url, events=["*"])
        [delivery] = webhooks.webhook_announce(
            event_type="deployment.promoted", subject="s", source="/t", data={}
        )
        assert webhooks.delivery_attempt(delivery_id=delivery.pk) is None
        assert webhooks.delivery_attempt(delivery_id=delivery.pk) is None  # a duplicate task
    assert len(hook.received) == 1


def test_readiness_and_the_breaker_are_announced(canary_v2: Deployment) -> None:
    from django.utils import timezone

    webhooks.webhook_create(name="x", url="http://127.0.0.1:9/", events=["*"])
    services.deployment_breaker_opened(
        deployment_id=canary_v2.pk,
        consecutive_failures=5,
        cooldown_seconds=60,
        actor="system:breaker",
    )
    webhooks.deployment_announce(
        deployment=canary_v2,
        event_type="deployment.ready",
        event={"action": "ready", "payload": {}},
        at=timezone.now(),
    )
    types = set(WebhookDelivery.objects.values_list("event_type", flat=True))
    assert types == {"deployment.breaker_opened", "deployment.ready"}


def test_the_readme_receiver_verifies_a_real_delivery(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("A receiver verifies with the `standardwebhooks` package:", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    with receiver(200) as hook:
        created = create(admin_api, url=hook.url).json()
        services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        delivery = WebhookDelivery.objects.get(event_type="deployment.promoted")
        webhooks.delivery_attempt(delivery_id=delivery.pk)
    namespace: dict[str, Any] = {}
    exec(snippet.replace("whsec_...", created["secret"]), namespace)  # noqa: S102 - the README's own code
    [request] = hook.received
    event = namespace["receive"](request.body, request.headers)
    assert event["type"] == "io.canary.deployment.promoted"
