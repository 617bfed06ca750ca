"""Each deployment state described as it is: v1 under a canary, rolled back, ended."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments import services
from deployments.models import Deployment
from monitoring.automation.monitor import MONITOR_JOB
from monitoring.models import JobRun
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def page(console: Console, deployment: Deployment, role: str = "approver") -> str:
    url = reverse("admin:deployments_deployment_change", args=[deployment.pk])
    return console(role).get(url).content.decode()


def test_v1_under_a_canary_says_so_and_offers_no_refused_action(
    console: Console, active_v1: Deployment, canary_v2: Deployment
):
    body = page(console, active_v1)
    assert "Baseline of canary v2.0.0 at 10%" in body
    assert "serves the other 90% of new contexts" in body
    assert reverse("admin:deployments_deployment_change", args=[canary_v2.pk]) in body
    assert "at 100% traffic" not in body
    assert 'data-action="rollback"' not in body and 'data-action="deprecate"' not in body
    assert "it can be rolled back or deprecated only after that canary" in body
    assert "90% of new contexts (v1 of canary v2.0.0 at 10%)" in body  # not "100%"
    listing = console("viewer").get(reverse("admin:deployments_deployment_changelist"))
    assert "90% of new contexts (v1 of canary v2.0.0 at 10%)" in listing.content.decode()


def test_v1_without_a_canary_keeps_its_actions(console: Console, active_v1: Deployment):
    body = page(console, active_v1)
    assert "Baseline of canary" not in body
    assert 'data-action="rollback"' in body and 'data-action="deprecate"' in body


def test_a_rolled_back_deployment_leads_with_its_reason(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v1", [10.0] * 40)
    add_logs(canary_v2, "v2", [12.0] * 40, errors=10)
    services.deployment_rollback(
        deployment_id=canary_v2.pk, reason="v2 error rate 25% (threshold 5%)", actor="rita"
    )
    body = page(console, canary_v2)
    outcome = body.index('id="canary-outcome"')
    assert outcome < body.index('class="canary-actions"')
    assert "Reason: v2 error rate 25% (threshold 5%)" in body
    assert "by rita" in body[outcome : outcome + 400]
    assert 'id="canary-comparison"' in body  # the numbers stay
    assert "canary-recommend-" not in body and "Recommendation:" not in body


def test_a_promoted_canary_shows_no_stale_recommendation(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v1", [10.0] * 5)
    add_logs(canary_v2, "v2", [10.0] * 5)
    services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
    body = page(console, canary_v2)
    assert "final numbers" in body
    assert "Recommendation:" not in body and "not enough to recommend" not in body


def test_the_verdict_says_when_the_monitor_acts_in_the_one_date_format(
    console: Console, canary_v2: Deployment
):
    started = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    JobRun.objects.create(name=MONITOR_JOB, last_started_at=started, last_finished_at=started)
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [10.0] * 200, errors=2)
    add_logs(canary, "v2", [10.0] * 200, errors=80)
    url = reverse("admin:deployments_deployment_change", args=[canary_v2.pk])
    body = console("viewer").get(url).content.decode()
    next_run = (started + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"The monitor rolls it back at its next run (about {next_run})." in body
