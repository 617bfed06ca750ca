"""A real Celery worker and beat: the monitor rolls a failing canary back within one period."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.models import Deployment, DeploymentEvent
from tests.monitoring.logs import add_logs
from tests.monitoring.test_breaker_integration import make_canary
from tests.monitoring.webhook import slack_stub
from tests.servers import ROOT, server_env

PERIOD_SECONDS = 2


@contextmanager
def celery_processes(tmp_path: Path, **env: str) -> Iterator[None]:
    """A real worker and beat. The tests' receivers (Slack stubs, webhooks) listen on
    127.0.0.1, which the SSRF-safe sender refuses unless private addresses are allowed."""
    environment = server_env(
        CANARY_MONITOR_INTERVAL_SECONDS=str(PERIOD_SECONDS),
        CANARY_VAR_DIR=str(tmp_path),
        **{"CANARY_WEBHOOK_ALLOW_PRIVATE": "1", **env},
    )
    celery = [sys.executable, "-m", "celery", "-A", "canary"]
    logs = [open(tmp_path / name, "w") for name in ("worker.log", "beat.log")]  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [*celery, "worker", "--pool=solo", "--loglevel=INFO"],
            cwd=ROOT, env=environment, stdout=logs[0], stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [*celery, "beat", "--loglevel=INFO", "--max-interval=1", "--pidfile="],
            cwd=ROOT, env=environment, stdout=logs[1], stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
        # Tasks this worker left queued (a test that failed midway) must not run in the
        # next test's worker, against that test's receivers.
        if settings.CELERY_BROKER_URL.startswith("redis"):
            redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("celery")


@pytest.mark.django_db(transaction=True)
def test_monitor_rolls_back_within_one_period(
    roles: None, tmp_path: Path, viewer: APIClient
) -> None:
    canary = make_canary("scheduled", traffic=10)
    add_logs(
        canary, "v2", [1.0] * 100, errors=20, at=timezone.now() - timedelta(seconds=30), paired=True
    )
    # The stub listens on 127.0.0.1: Slack goes through the SSRF-safe sender (SPEC 10.4).
    with (
        slack_stub() as webhook,
        celery_processes(tmp_path, SLACK_WEBHOOK_URL=webhook.url),
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if Deployment.objects.get(pk=canary.pk).status == "rolled_back":
                break
            time.sleep(0.25)
        rolled_at = time.monotonic()
        # Let a few more periods pass: no second rollback, no second notification.
        while time.monotonic() < rolled_at + 3 * PERIOD_SECONDS and not webhook.received:
            time.sleep(0.25)
        time.sleep(2 * PERIOD_SECONDS)
        jobs = viewer.get("/api/v1/scheduler/jobs").json()["jobs"]

    logs = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
    rolled = Deployment.objects.get(pk=canary.pk)
    assert rolled.status == "rolled_back", logs
    assert DeploymentEvent.objects.filter(deployment=canary, action="rollback").count() == 1
    event = DeploymentEvent.objects.get(deployment=canary, action="rollback")
    assert event.actor == "system:monitor"
    assert len(webhook.received) == 1, logs
    assert "Automatic rollback by system:monitor" in webhook.received[0]["text"]
    [monitor] = [job for job in jobs if job["name"] == "canary-monitor"]
    assert monitor["task"] == "monitoring.tasks.canary_monitor_task"
    assert monitor["enabled"] is True
    assert monitor["interval_seconds"] == PERIOD_SECONDS
    # NOTE: beat persists total_run_count lazily; the monitor's own heartbeat is immediate.
    assert monitor["last_finished_at"] is not None
    assert monitor["ran_recently"] is True


@pytest.mark.django_db(transaction=True)
def test_monitor_judges_v2_against_v1_on_the_same_inputs(roles: None, tmp_path: Path) -> None:
    """Identical failures and microsecond noise are tolerated; v2's own failures are not."""
    at = timezone.now() - timedelta(seconds=30)
    shared = make_canary("shared-failures", traffic=10)
    # 10% of inputs fail in both versions: far above the 5% threshold, not v2's fault.
    add_logs(shared, "v1", [0.01] * 500, errors=50, at=at, paired=True, shared_errors=50)
    worse = make_canary("v2-worse", traffic=10)
    # The same shared 10%, and v2 fails an extra 8% of inputs on which v1 succeeds.
    add_logs(worse, "v1", [0.01] * 400, errors=40, at=at, paired=True, shared_errors=40)
    add_logs(worse, "v2", [0.01] * 100, errors=10, at=at, paired=True)
    add_logs(worse, "v1", [0.01] * 40, at=at, paired=True, shared_errors=40)
    jitter = make_canary("microsecond-jitter", traffic=10)
    # v2 four times slower than v1, in microseconds: under the 1 ms latency floor.
    add_logs(jitter, "v1", [0.005] * 500, at=at, paired=True, shadow_latencies=[0.02] * 500)
    with celery_processes(tmp_path):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if Deployment.objects.get(pk=worse.pk).status == "rolled_back":
                break
            time.sleep(0.25)
        time.sleep(3 * PERIOD_SECONDS)  # several more looks at the other two

    logs = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
    rolled = Deployment.objects.get(pk=worse.pk)
    assert rolled.status == "rolled_back", logs
    assert "always-valid sequential test" in rolled.rollback_reason
    assert Deployment.objects.get(pk=shared.pk).status == "canary"
    assert Deployment.objects.get(pk=jitter.pk).status == "canary"
    runs = DeploymentEvent.objects.filter(deployment=worse, action="rollback").count()
    assert runs == 1
