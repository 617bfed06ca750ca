"""The console shows the decision the monitor stored (SPEC 9.6, issue 21) while it is fresh,
and decides afresh only when there is none, it is older than two monitor runs, or the
canary changed after it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments import services
from deployments.models import Deployment
from monitoring.decision import decisions
from monitoring.models import CanaryDecision
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


@pytest.fixture
def decide_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call of the one decision's judge, counted and passed through."""
    calls: list[Any] = []
    judge = decisions.decide

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return judge(*args, **kwargs)

    monkeypatch.setattr(decisions, "decide", counted)
    return calls


@pytest.fixture
def regressing(canary_v2: Deployment) -> Deployment:
    """A canary whose v2 fails 40% against v1's 1%: the monitor says roll back."""
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    at = timezone.now() - timedelta(minutes=2)
    add_logs(canary, "v1", [10.0] * 200, errors=2, at=at)
    add_logs(canary, "v2", [10.0] * 200, errors=80, at=at)
    return canary


def monitor_decides(deployment: Deployment, *, ago: timedelta = timedelta(seconds=40)) -> None:
    """What the monitor's run does for one canary: decide, then store the decision; made
    ``ago`` in the past, on a canary last changed an hour before that."""
    now = timezone.now()
    Deployment.objects.filter(pk=deployment.pk).update(updated_at=now - ago - timedelta(hours=1))
    deployment.refresh_from_db()
    judged = decisions.decision_make(deployment=deployment, now=now - ago)
    decisions.decision_store(deployment=deployment, judged=judged)


def page(client: Client, deployment: Deployment) -> str:
    response = client.get(reverse("admin:deployments_deployment_change", args=[deployment.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_page_view_with_a_fresh_stored_decision_does_not_decide_again(
    console: Console, regressing: Deployment, decide_calls: list[Any]
):
    monitor_decides(regressing)
    decide_calls.clear()
    body = page(console("approver"), regressing)
    assert decide_calls == []
    assert 'data-recommendation="rollback"' in body
    assert re.search(r"decided 4\d s ago by the monitor", body)
    # The confirmation and the live block read the same row.
    client = console("approver")
    live = reverse("admin:deployments_deployment_live", args=[regressing.pk])
    assert "by the monitor" in client.get(live).content.decode()
    action = reverse("admin:deployments_deployment_action", args=[regressing.pk, "rollback"])
    assert "Rollback verdict for v2.0.0:" in client.get(action).content.decode()
    assert decide_calls == []


def test_the_stored_decision_is_what_the_page_says_even_when_now_would_differ(
    console: Console, canary_v2: Deployment, decide_calls: list[Any]
):
    """The page shows what the monitor decided (and acts on), not a second opinion."""
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    monitor_decides(canary)  # no traffic yet: keep collecting
    decide_calls.clear()
    add_logs(canary, "v1", [10.0] * 200, errors=2)
    add_logs(canary, "v2", [10.0] * 200, errors=80)
    body = page(console("viewer"), canary)
    assert decide_calls == []
    assert 'data-recommendation="collect_more_data"' in body


@pytest.mark.parametrize("why", ["none", "stale", "changed since"])
def test_without_a_fresh_stored_decision_the_page_decides_and_says_so(
    console: Console, regressing: Deployment, decide_calls: list[Any], settings: Any, why: str
):
    if why == "stale":
        interval = timedelta(seconds=settings.CANARY_MONITOR_INTERVAL_SECONDS)
        monitor_decides(regressing, ago=2 * interval + timedelta(seconds=5))
    elif why == "changed since":
        monitor_decides(regressing)
        services.deployment_set_traffic(
            deployment_id=regressing.pk, traffic_percentage=20, actor="t"
        )
    decide_calls.clear()
    body = page(console("viewer"), regressing)
    assert decide_calls
    assert 'data-recommendation="rollback"' in body
    if why == "none":
        assert "computed for this page: the monitor has no fresh decision on it" in body
    else:
        assert "computed for this page: the monitor&#x27;s last decision (" in body
        assert "is older than two of its runs or than the canary&#x27;s last change" in body


def test_home_reads_the_stored_decisions(
    console: Console, regressing: Deployment, decide_calls: list[Any]
):
    monitor_decides(regressing)
    cache.clear()
    decide_calls.clear()
    running = reverse("admin:deployments_deployment_running")
    body = console("viewer").get(running).content.decode()
    assert decide_calls == []
    assert "roll back" in body and "by the monitor" in body
    assert CanaryDecision.objects.filter(pk=regressing.pk).exists()
