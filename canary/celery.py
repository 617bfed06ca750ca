"""The Celery application; tasks are discovered in every installed app."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")

app = Celery("canary")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.beat_init.connect
def apply_monitor_schedule(**kwargs: object) -> None:
    """Beat starts with the monitor's period taken from CANARY_MONITOR_INTERVAL_SECONDS."""
    from monitoring.automation.schedule import ensure_monitor_schedule

    ensure_monitor_schedule()
