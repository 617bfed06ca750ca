"""The monitor is scheduled on every install, follows the setting, and the API shows it."""

from __future__ import annotations

from typing import Any

import pytest
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from deployments.models import Deployment
from monitoring.automation.monitor import monitor_run
from monitoring.automation.schedule import ensure_monitor_schedule

pytestmark = pytest.mark.django_db


def test_fresh_install_schedules_the_monitor_every_five_minutes() -> None:
    task = PeriodicTask.objects.get(name="canary-monitor")
    assert task.task == "monitoring.tasks.canary_monitor_task"
    assert task.enabled
    assert task.interval.every == 300 and task.interval.period == "seconds"


def test_period_follows_the_setting(settings: Any) -> None:
    settings.CANARY_MONITOR_INTERVAL_SECONDS = 42
    ensure_monitor_schedule()
    assert PeriodicTask.objects.get(name="canary-monitor").interval.every == 42
    assert PeriodicTask.objects.filter(name="canary-monitor").count() == 1


def test_jobs_endpoint(viewer: APIClient, canary_v2: Deployment) -> None:
    before = viewer.get("/api/v1/scheduler/jobs").json()["jobs"]
    [monitor] = [job for job in before if job["name"] == "canary-monitor"]
    assert monitor["ran_recently"] is False
    assert monitor["interval_seconds"] == 300
    assert set(monitor) >= {"name", "task", "schedule", "enabled", "last_run_at", "total_run_count"}
    monitor_run()
    after = viewer.get("/api/v1/scheduler/jobs").json()["jobs"]
    [monitor] = [job for job in after if job["name"] == "canary-monitor"]
    assert monitor["ran_recently"] is True
    assert monitor["last_outcome"].startswith("checked 1")


def test_jobs_endpoint_needs_a_role(client_for: Any) -> None:
    assert APIClient().get("/api/v1/scheduler/jobs").status_code == 401
    from django.contrib.auth import get_user_model

    from tests.accounts import issue_token

    user = get_user_model().objects.create(username="no-role")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user)}")
    assert client.get("/api/v1/scheduler/jobs").status_code == 403
