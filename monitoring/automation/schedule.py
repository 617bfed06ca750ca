"""The monitor's periodic task in django-celery-beat, kept in step with the setting."""

from __future__ import annotations

from typing import Any

from django.conf import settings

MONITOR_TASK_NAME = "canary-monitor"
MONITOR_TASK = "monitoring.tasks.canary_monitor_task"


def ensure_monitor_schedule(**kwargs: Any) -> None:
    """Create or update the monitor's periodic task with ``CANARY_MONITOR_INTERVAL_SECONDS``.

    Run when beat starts, so changing the environment variable and restarting
    beat is all it takes to change the period.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    every = int(settings.CANARY_MONITOR_INTERVAL_SECONDS)
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=every, period=IntervalSchedule.SECONDS
    )
    task, created = PeriodicTask.objects.get_or_create(
        name=MONITOR_TASK_NAME,
        defaults={"task": MONITOR_TASK, "interval": interval, "enabled": True},
    )
    if not created and (task.interval_id != interval.pk or task.task != MONITOR_TASK):
        task.interval = interval
        task.task = MONITOR_TASK
        task.save(update_fields=["interval", "task"])
        PeriodicTasks.update_changed()
