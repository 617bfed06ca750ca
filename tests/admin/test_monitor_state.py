"""The monitor's heartbeat, the step and the breaker on the canary page and the index."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment
from monitoring.automation.monitor import MONITOR_JOB
from monitoring.breaker import state as breaker
from monitoring.breaker.store import breaker_store
from monitoring.models import JobRun

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def page(console: Console, deployment: Deployment) -> str:
    url = reverse("admin:deployments_deployment_change", args=[deployment.pk])
    return console("viewer").get(url).content.decode()


def ran(minutes_ago: float, outcome: str = "checked 1, rolled back 0") -> None:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    JobRun.objects.update_or_create(
        name=MONITOR_JOB,
        defaults={"last_started_at": started, "last_finished_at": started, "last_outcome": outcome},
    )


def test_a_monitor_that_never_ran_says_so(console: Console, canary_v2: Deployment):
    body = page(console, canary_v2)
    assert "canary-level-error" in body and "The monitor has never run" in body
    index = console("viewer").get(reverse("admin:index")).content.decode()
    assert "The monitor has never run" in index


def test_a_live_monitor_shows_last_and_next_run(console: Console, canary_v2: Deployment):
    ran(minutes_ago=1)
    body = page(console, canary_v2)
    assert "Monitor alive (every 5 min)" in body and "canary-level-ok" in body
    # NOTE: the page reads the clock itself; a slow test run adds seconds.
    assert re.search(r"\(1 min( \d+ s)? ago\): checked 1, rolled back 0; next run expected", body)


def test_a_stale_monitor_is_red(console: Console, canary_v2: Deployment):
    ran(minutes_ago=20)
    body = page(console, canary_v2)
    assert "Monitor stale: beat looks down" in body and "canary-level-error" in body
    assert re.search(r"next run overdue by 15 min( \d+ s)?\.", body)


def test_step_elapsed_remaining_and_breaker_failures(console: Console, canary_v2: Deployment):
    breaker_store().update(
        canary_v2.pk, lambda state: (None, breaker.BreakerState(consecutive_failures=2))
    )
    body = page(console, canary_v2)
    assert "Step at 10%: " in body and "of 1 h elapsed" in body and "min" in body
    assert "Auto-progress is off: traffic changes only by hand." in body
    assert "Auto-rollback is on." in body
    assert "2 of 5 consecutive v2 failures open it" in body


def test_an_open_breaker_counts_its_cooldown_down(console: Console, canary_v2: Deployment):
    breaker_store().update(
        canary_v2.pk, lambda state: (None, breaker.force_open(state, now=time.time() - 15))
    )
    body = page(console, canary_v2)
    assert 'class="canary-breaker-OPEN">OPEN</strong> — open: v1 serves everyone' in body
    assert re.search(r"HALF_OPEN in (4\d|3\d) s", body)


def test_index_lists_running_canaries_first(console: Console, canary_v2: Deployment):
    ran(minutes_ago=1)
    index = console("viewer").get(reverse("admin:index")).content.decode()
    running = index.index('id="canary-running"')
    assert running < index.index('class="app-deployments')
    assert "v2.0.0 / v1.0.0" in index and '<td class="canary-nowrap">10%<br>' in index
    assert "0 of 5 consecutive v2 failures" in index


def test_ended_deployments_show_no_monitor(console: Console, active_v1: Deployment):
    body = page(console, active_v1)
    assert 'id="canary-monitor"' not in body and 'id="canary-progress"' not in body
