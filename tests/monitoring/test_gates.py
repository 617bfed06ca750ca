"""Gates (SPEC 10.4): an outside system says yes before start, traffic and promote."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook as Verifier

from canary.errors import GateClosed
from deployments import services
from deployments.models import Deployment, DeploymentEvent
from monitoring.automation.monitor import monitor_run
from monitoring.notifications.gates import gate_secret
from tests.monitoring.logs import add_logs
from tests.monitoring.receiver import receiver
from tests.servers import free_port

pytestmark = pytest.mark.django_db


def gated(draft: Deployment, gate_type: str, url: str, **config: Any) -> Deployment:
    return services.deployment_update(
        deployment_id=draft.pk,
        canary_config={"gates": [{"type": gate_type, "url": url}], **config},
        actor="t",
    )


def fresh(deployment: Deployment) -> Deployment:
    return Deployment.objects.get(pk=deployment.pk)


# --- manual actions: 409 gate_closed, or the action goes ahead --------------------------


def test_a_closed_start_gate_refuses_the_start_with_a_409(
    approver: APIClient, draft_v2: Deployment
) -> None:
    with receiver(503, answer_body=b"change freeze") as gate:
        gated(draft_v2, "confirm-start", gate.url)
        answer = approver.post(f"/api/v1/deployments/{draft_v2.pk}/start-canary", {}, format="json")
    assert answer.status_code == 409
    body = answer.json()
    assert body["code"] == "gate_closed"
    assert body["gate"] == {"type": "confirm-start", "url": gate.url}
    assert body["status_code"] == 503
    assert "change freeze" in body["detail"]
    assert fresh(draft_v2).status == "draft"
    [asked] = gate.received
    event = Verifier(gate_secret()).verify(asked.body, asked.headers)
    assert event["type"] == "io.canary.gate.confirm-start"
    assert event["subject"] == str(draft_v2.pk)
    assert event["data"]["deployment"]["status"] == "draft"


def test_an_open_start_gate_lets_the_canary_start(
    approver: APIClient, draft_v2: Deployment
) -> None:
    with receiver(204) as gate:
        gated(draft_v2, "confirm-start", gate.url)
        answer = approver.post(f"/api/v1/deployments/{draft_v2.pk}/start-canary", {}, format="json")
    assert answer.status_code == 200, answer.content
    assert fresh(draft_v2).status == "canary"
    assert len(gate.received) == 1


def test_an_unreachable_gate_is_closed(approver: APIClient, draft_v2: Deployment) -> None:
    url = f"http://127.0.0.1:{free_port()}/gate"  # nothing listens there
    gated(draft_v2, "confirm-start", url)
    answer = approver.post(f"/api/v1/deployments/{draft_v2.pk}/start-canary", {}, format="json")
    assert answer.status_code == 409
    assert answer.json()["code"] == "gate_closed"
    assert answer.json()["status_code"] is None
    assert fresh(draft_v2).status == "draft"


def test_the_traffic_gate_guards_increases_only(approver: APIClient, draft_v2: Deployment) -> None:
    with receiver(500) as gate:
        gated(draft_v2, "confirm-traffic", gate.url)
        canary = services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
        raise_it = approver.put(
            f"/api/v1/deployments/{canary.pk}/traffic", {"traffic_percentage": 30}, format="json"
        )
        lower = approver.put(
            f"/api/v1/deployments/{canary.pk}/traffic", {"traffic_percentage": 5}, format="json"
        )
        asked = len(gate.received)
    assert raise_it.status_code == 409
    assert raise_it.json()["gate"]["type"] == "confirm-traffic"
    assert lower.status_code == 200
    assert fresh(canary).traffic_percentage == 5
    assert asked == 1
    with receiver(200) as gate:
        gated_again = [{"type": "confirm-traffic", "url": gate.url}]
        Deployment.objects.filter(pk=canary.pk).update(canary_config={"gates": gated_again})
        opened = approver.put(
            f"/api/v1/deployments/{canary.pk}/traffic", {"traffic_percentage": 30}, format="json"
        )
    assert opened.status_code == 200
    assert fresh(canary).traffic_percentage == 30
    event = Verifier(gate_secret()).verify(gate.received[0].body, gate.received[0].headers)
    assert event["type"] == "io.canary.gate.confirm-traffic"
    assert event["data"]["request"] == {"action": "set_traffic", "traffic_percentage": 30}


def test_the_promotion_gate(approver: APIClient, draft_v2: Deployment) -> None:
    with receiver(403) as gate:
        gated(draft_v2, "confirm-promotion", gate.url)
        canary = services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
        closed = approver.post(f"/api/v1/deployments/{canary.pk}/promote", {}, format="json")
    assert closed.status_code == 409
    assert closed.json()["code"] == "gate_closed"
    assert closed.json()["status_code"] == 403
    assert fresh(canary).status == "canary"
    with receiver(200) as gate:
        Deployment.objects.filter(pk=canary.pk).update(
            canary_config={"gates": [{"type": "confirm-promotion", "url": gate.url}]}
        )
        opened = approver.post(f"/api/v1/deployments/{canary.pk}/promote", {}, format="json")
    assert opened.status_code == 200
    assert fresh(canary).status == "active"


def test_four_eyes_asks_the_promotion_gate_only_when_the_last_approval_promotes(
    client_for: Any, draft_v2: Deployment
) -> None:
    with receiver(409) as gate:
        gated(draft_v2, "confirm-promotion", gate.url, required_approvals=2)
        canary = services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
        first = services.deployment_promote_or_approve(deployment_id=canary.pk, actor="alice")
        assert not first.promoted
        assert gate.received == []
        with pytest.raises(GateClosed):
            services.deployment_promote_or_approve(deployment_id=canary.pk, actor="bob")
        assert len(gate.received) == 1
        assert fresh(canary).status == "canary"
        gate.script = [200]
        done = services.deployment_promote_or_approve(deployment_id=canary.pk, actor="bob")
    assert done.promoted
    assert fresh(canary).status == "active"


def test_gates_are_validated_in_canary_config(approver: APIClient, draft_v2: Deployment) -> None:
    for gates in (
        [{"type": "confirm-lunch", "url": "http://x/"}],
        [{"type": "confirm-start"}],
        [{"type": "confirm-start", "url": "ftp://x/"}],
        [{"type": "confirm-start", "url": "http://x/"}] * 6,
    ):
        answer = approver.patch(
            f"/api/v1/deployments/{draft_v2.pk}",
            {"canary_config": {"gates": gates}},
            format="json",
        )
        assert answer.status_code == 400, gates
        assert "gates" in str(answer.json())


# --- the monitor waits at a closed gate, one event per step ------------------------------


def healthy_step(canary: Deployment, clock: Any) -> None:
    add_logs(canary, "v2", [1.0] * 30, at=clock - timedelta(minutes=1), paired=True)
    add_logs(canary, "v1", [1.0] * 120, at=clock - timedelta(minutes=1), paired=True)


def test_the_monitor_waits_at_a_closed_traffic_gate_recording_one_event_per_step(
    draft_v2: Deployment,
) -> None:
    with receiver(503) as gate:
        gated(draft_v2, "confirm-traffic", gate.url, auto_progress=True, duration_minutes=30)
        canary = services.deployment_start_canary(
            deployment_id=draft_v2.pk, canary_pct=10, actor="t"
        )
        clock = timezone.now()
        for _ in range(3):  # three runs after a healthy step: the gate stays closed
            clock += timedelta(minutes=31)
            healthy_step(canary, clock)
            monitor_run(now=clock)
        assert fresh(canary).traffic_percentage == 10
        assert len(gate.received) == 3
        gate.script = [200]
        clock += timedelta(minutes=1)
        healthy_step(canary, clock)
        monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 20
    [event] = DeploymentEvent.objects.filter(deployment=canary, action="gate_closed")
    assert event.actor == "system:monitor"
    assert event.payload["gate"] == {"type": "confirm-traffic", "url": gate.url}
    assert event.payload["status_code"] == 503


def test_the_monitor_waits_at_a_closed_promotion_gate(draft_v2: Deployment) -> None:
    with receiver(500) as gate:
        gated(
            draft_v2,
            "confirm-promotion",
            gate.url,
            auto_progress=True,
            duration_minutes=30,
            non_inferiority_margin=0.05,
        )
        canary = services.deployment_start_canary(
            deployment_id=draft_v2.pk, canary_pct=100, actor="t"
        )
        clock = timezone.now()
        for _ in range(2):
            clock += timedelta(minutes=31)
            healthy_step(canary, clock)
            monitor_run(now=clock)
        waited = fresh(canary).status
        assert len(gate.received) == 2
        gate.script = [200]
        clock += timedelta(minutes=1)
        healthy_step(canary, clock)
        monitor_run(now=clock)
    assert waited == "canary"
    assert fresh(canary).status == "active"
    events = DeploymentEvent.objects.filter(deployment=canary, action="gate_closed")
    assert events.count() == 1
    assert events.get().payload["gate"]["type"] == "confirm-promotion"


def test_an_unreachable_gate_keeps_the_monitor_waiting(draft_v2: Deployment) -> None:
    url = f"http://127.0.0.1:{free_port()}/gate"
    gated(draft_v2, "confirm-traffic", url, auto_progress=True, duration_minutes=30)
    canary = services.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=10, actor="t")
    clock = timezone.now() + timedelta(minutes=31)
    healthy_step(canary, clock)
    monitor_run(now=clock)
    assert fresh(canary).traffic_percentage == 10
    [event] = DeploymentEvent.objects.filter(deployment=canary, action="gate_closed")
    assert event.payload["status_code"] is None


@pytest.mark.django_db(transaction=True)
def test_a_slow_gate_holds_no_row_lock(draft_v2: Deployment) -> None:
    """While the gate thinks, another change of the same rule set can lock its rows."""
    import threading
    import time

    from django.db import connection, transaction

    from deployments.models import RuleSet

    with receiver(200) as gate:
        gated(draft_v2, "confirm-start", gate.url)
        original = gate.script
        gate.script = ["hang"]
        outcome: list[Any] = []

        def start() -> None:
            try:
                outcome.append(
                    services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
                )
            except Exception as exc:  # the gate timed out or answered
                outcome.append(exc)
            finally:
                connection.close()

        worker = threading.Thread(target=start)
        worker.start()
        deadline = timezone.now() + timedelta(seconds=30)
        while not gate.received and timezone.now() < deadline:
            time.sleep(0.05)
        assert gate.received, "the gate was never asked"
        with transaction.atomic():
            RuleSet.objects.select_for_update(nowait=True).get(pk=draft_v2.ruleset_id)
            Deployment.objects.select_for_update(nowait=True).get(pk=draft_v2.pk)
        gate.stop.set()  # the gate hangs up: closed, nothing changed
        worker.join(timeout=60)
        gate.script = original
    assert isinstance(outcome[0], GateClosed)
    assert fresh(draft_v2).status == "draft"
