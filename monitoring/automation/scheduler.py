"""What the scheduler runs and whether it actually ran: the answer to "is auto-rollback on?"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from monitoring.automation.monitor import MONITOR_JOB
from monitoring.automation.schedule import MONITOR_TASK_NAME
from monitoring.models import JobRun


def _period_seconds(task: Any) -> float | None:
    if task.interval is not None:
        return task.interval.schedule.run_every.total_seconds()
    return None


def scheduler_jobs() -> list[dict[str, Any]]:
    from django_celery_beat.models import PeriodicTask

    now = timezone.now()
    heartbeats = {run.name: run for run in JobRun.objects.all()}
    jobs = []
    for task in PeriodicTask.objects.select_related(
        "interval", "crontab", "solar", "clocked"
    ).order_by("name"):
        period = _period_seconds(task)
        # Jobs that take a lease report under their task's name (the monitor under its own).
        heartbeat = heartbeats.get(MONITOR_JOB if task.name == MONITOR_TASK_NAME else task.name)
        last_finished = heartbeat.last_finished_at if heartbeat else None
        # A worker is keeping up when the job finished within two periods.
        recent_reference = last_finished or task.last_run_at
        ran_recently = bool(
            recent_reference
            and period
            and now - recent_reference <= timedelta(seconds=2 * period + 60)
        )
        jobs.append(
            {
                "name": task.name,
                "task": task.task,
                "schedule": str(task.scheduler) if task.scheduler else None,
                "interval_seconds": period,
                "enabled": task.enabled,
                "last_run_at": task.last_run_at,
                "total_run_count": task.total_run_count,
                "last_finished_at": last_finished,
                "last_outcome": heartbeat.last_outcome if heartbeat else None,
                "ran_recently": ran_recently,
            }
        )
    return jobs
