"""Webhooks and triggers in the admin: Admin only, secrets shown once, redeliver."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from deployments import services
from deployments.models import Deployment
from monitoring.models import Trigger, Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db


def test_an_admin_creates_a_webhook_and_sees_its_secret_once(
    console: Callable[[str], Client],
) -> None:
    admin = console("admin")
    answer = admin.post(
        "/admin/monitoring/webhook/add/",
        {
            "name": "ci",
            "url": "http://127.0.0.1:9/hook",
            "events": ["deployment.promoted", "deployment.rolled_back"],
            "active": "on",
            "deliveries-TOTAL_FORMS": "0",
            "deliveries-INITIAL_FORMS": "0",
        },
        follow=True,
    )
    assert answer.status_code == 200
    webhook = Webhook.objects.get(name="ci")
    assert webhook.events == ["deployment.promoted", "deployment.rolled_back"]
    assert webhook.secret in answer.content.decode()
    page = admin.get(f"/admin/monitoring/webhook/{webhook.pk}/change/").content.decode()
    assert webhook.secret not in page


def test_the_webhook_page_lists_deliveries_with_a_redeliver_button(
    console: Callable[[str], Client], canary_v2: Deployment
) -> None:
    webhook = Webhook.objects.create(
        name="ci", url="http://127.0.0.1:9/hook", events=["*"], secret="whsec_c2VjcmV0"
    )
    services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status="failed", attempts=8, last_status_code=500
    )
    admin = console("admin")
    page = admin.get(f"/admin/monitoring/webhook/{webhook.pk}/change/").content.decode()
    assert "deployment.promoted" in page
    redeliver = f"/admin/monitoring/webhook/{webhook.pk}/redeliver/{delivery.pk}/"
    assert redeliver in page
    assert admin.post(redeliver).status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)


def test_approvers_and_viewers_see_no_webhooks_or_triggers(
    console: Callable[[str], Client],
) -> None:
    for role in ("approver", "viewer"):
        client = console(role)
        assert client.get("/admin/monitoring/webhook/").status_code == 403
        assert client.get("/admin/monitoring/trigger/").status_code == 403


def test_an_admin_creates_a_trigger_and_sees_its_url_once(
    console: Callable[[str], Client], canary_v2: Deployment
) -> None:
    admin = console("admin")
    answer = admin.post(
        "/admin/monitoring/trigger/add/",
        {"name": "pager", "ruleset": str(canary_v2.ruleset_id), "action": "rollback"},
        follow=True,
    )
    assert answer.status_code == 200
    trigger = Trigger.objects.get(name="pager")
    assert f"/api/v1/triggers/{trigger.pk}/" in answer.content.decode()
    listing = admin.get("/admin/monitoring/trigger/").content.decode()
    assert f"/api/v1/triggers/{trigger.pk}/" not in listing


def test_the_verdict_shows_a_closed_gate_of_the_current_step(
    console: Callable[[str], Client], canary_v2: Deployment
) -> None:
    from canary.errors import GateClosed
    from monitoring.decision.selectors import step_started_at

    gate = {"type": "confirm-traffic", "url": "http://127.0.0.1:9/gate"}
    page = f"/admin/deployments/deployment/{canary_v2.pk}/change/"
    assert "canary-gate-closed" not in console("viewer").get(page).content.decode()
    services.deployment_gate_closed(
        deployment_id=canary_v2.pk,
        closed=GateClosed("closed", gate=gate, status_code=503),
        step=step_started_at(canary_v2).isoformat(),
        actor="system:monitor",
    )
    html = console("viewer").get(page).content.decode()
    assert 'id="canary-gate-closed"' in html
    assert "confirm-traffic" in html and "answered 503" in html
    # A new step (traffic changed) is not held by the old step's gate.
    services.deployment_set_traffic(deployment_id=canary_v2.pk, traffic_percentage=5, actor="t")
    assert "canary-gate-closed" not in console("viewer").get(page).content.decode()
