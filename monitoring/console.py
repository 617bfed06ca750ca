"""What the admin console shows about the monitor, a canary's step and its breaker.

Reads only: these answer the on-call questions "is anything watching this
canary, when does it act next, how close is the breaker to opening?" from the
monitor's heartbeat (``JobRun``), the step's start (``monitor.step_started_at``)
and the breaker's stored state. The console reaches them through
``deployments.admin_panels`` (``deployments`` must not import ``monitoring``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from deployments.choices import CompensationStatus, DeploymentStatus
from deployments.models import Deployment
from monitoring.automation import compensation
from monitoring.automation.monitor import MONITOR_JOB
from monitoring.automation.schedule import MONITOR_TASK_NAME
from monitoring.breaker import state as breaker
from monitoring.breaker.store import breaker_store
from monitoring.decision.selectors import step_started_at
from monitoring.models import JobRun

logger = logging.getLogger(__name__)

# A run a little late is not a dead beat: allow scheduling and queueing jitter.
STALE_AFTER_INTERVALS = 2


def monitor_status(*, now: datetime | None = None) -> dict[str, Any]:
    """The monitor's heartbeat: last run, next expected run, and whether beat is alive.

    Beat counts as alive while the last run started within two intervals; a
    monitor that never ran says so, which is the first thing to fix when it is
    meant to roll back bad canaries.
    """
    now = now or timezone.now()
    interval = timedelta(seconds=int(settings.CANARY_MONITOR_INTERVAL_SECONDS))
    run = JobRun.objects.filter(name=MONITOR_JOB).first()
    last_started = run.last_started_at if run else None
    next_expected = last_started + interval if last_started else None
    return {
        "interval_seconds": interval.total_seconds(),
        "last_started_at": last_started,
        "last_finished_at": run.last_finished_at if run else None,
        "last_outcome": run.last_outcome if run else "",
        "running": bool(run and run.held_until and run.held_until > now),
        "never_ran": last_started is None,
        "next_expected_at": next_expected,
        "overdue_seconds": (now - next_expected).total_seconds()
        if next_expected and next_expected < now
        else 0.0,
        "since_last_seconds": (now - last_started).total_seconds() if last_started else None,
        "alive": bool(last_started and now - last_started <= STALE_AFTER_INTERVALS * interval),
        "schedule_enabled": _schedule_enabled(),
    }


def _schedule_enabled() -> bool | None:
    """Whether the monitor's periodic task is switched on; None when beat never created it."""
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.filter(name=MONITOR_TASK_NAME).only("enabled").first()
    return None if task is None else task.enabled


def canary_progress(
    *, deployment: Deployment, now: datetime | None = None
) -> dict[str, Any] | None:
    """The current traffic step: elapsed and remaining against ``duration_minutes``, and what next.

    None unless the deployment is a canary: only a canary has a step.
    """
    if deployment.status != DeploymentStatus.CANARY:
        return None
    now = now or timezone.now()
    config = deployment.canary_config
    started = step_started_at(deployment)
    step = timedelta(minutes=int(config.get("duration_minutes", 60)))
    elapsed = (now - started) if started else timedelta(0)
    traffic = deployment.traffic_percentage
    increment = int(config.get("increment", 10))
    return {
        "step_started_at": started,
        "duration_seconds": step.total_seconds(),
        "elapsed_seconds": max(0.0, elapsed.total_seconds()),
        "remaining_seconds": max(0.0, (step - elapsed).total_seconds()),
        "step_done": elapsed >= step,
        "auto_progress": bool(config.get("auto_progress", False)),
        "auto_rollback": bool(config.get("auto_rollback", True)),
        "next_traffic": None if traffic >= 100 else min(100, traffic + increment),
    }


def breaker_detail(*, deployment: Deployment, now: float | None = None) -> dict[str, Any] | None:
    """The breaker as the data plane sees it: state, failures out of the threshold, cooldown left.

    None when the breaker store cannot be read (the page says "unknown" rather
    than guessing CLOSED).
    """
    config = deployment.canary_config
    cooldown = float(config.get("breaker_cooldown_seconds", 60))
    now = time.time() if now is None else now
    try:
        stored = breaker_store().read(deployment.pk)
    except Exception:
        logger.warning("breaker state of %s unreadable", deployment.pk, exc_info=True)
        return None
    state = breaker.current(stored, now=now, cooldown=cooldown)
    cooldown_left = None
    if state.state == breaker.OPEN and state.opened_at is not None:
        cooldown_left = max(0.0, state.opened_at + cooldown - now)
    return {
        "state": state.state,
        "consecutive_failures": state.consecutive_failures,
        "failure_threshold": int(config.get("failure_threshold", 5)),
        "cooldown_seconds": cooldown,
        "cooldown_left_seconds": cooldown_left,
    }


def compensation_pending_list() -> list[dict[str, Any]]:
    """Deployments whose manual compensation nobody has marked done, newest rollback first,
    with the counts of ``GET /deployments/{id}/compensation``.

    For the console's home: a rolled-back release still owes work until an
    operator has dealt with v2's decisions.
    """
    pending = (
        Deployment.objects.filter(compensation_status=CompensationStatus.PENDING)
        .select_related("ruleset", "version")
        .order_by("-rolled_back_at", "-created_at")
    )
    return [
        {"deployment": deployment, **compensation.compensation_summary(deployment=deployment)}
        for deployment in pending
    ]
