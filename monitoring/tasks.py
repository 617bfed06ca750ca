"""Celery tasks: the monitor, notifications and compensation replay.

Tasks take ids, re-read what they need, have soft and hard time limits and are
idempotent, so a retry or a duplicate delivery changes nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

logger = logging.getLogger(__name__)


@shared_task(soft_time_limit=240, time_limit=270, acks_late=True, ignore_result=True)
def canary_monitor_task(now: str | None = None) -> dict[str, Any]:
    from datetime import datetime

    from monitoring.automation.monitor import monitor_run

    report = monitor_run(now=datetime.fromisoformat(now) if now else None)
    return report.__dict__


@shared_task(
    autoretry_for=(requests.RequestException,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=False,
    max_retries=4,
    soft_time_limit=30,
    time_limit=40,
    acks_late=True,
    ignore_result=True,
)
def send_slack_notification(text: str) -> None:
    url = settings.SLACK_WEBHOOK_URL
    if not url:
        return
    response = requests.post(url, json={"text": text}, timeout=10)
    response.raise_for_status()


@shared_task(
    autoretry_for=(OSError,),
    retry_backoff=2,
    max_retries=4,
    soft_time_limit=30,
    time_limit=40,
    acks_late=True,
    ignore_result=True,
)
def send_email_notification(subject: str, text: str, recipients: list[str]) -> None:
    send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, recipients)


@shared_task(soft_time_limit=3_000, time_limit=3_300, acks_late=True, ignore_result=True)
def compensation_replay_task(deployment_id: str) -> dict[str, int]:
    from monitoring.automation.compensation import compensation_replay

    return compensation_replay(deployment_id=deployment_id)


def compensation_replay_enqueue(*, deployment: Any) -> dict[str, Any]:
    """Queue the replay of a deployment's flagged executions; the API and the console call this.

    Refused (409) when nothing is flagged, and 503 when the broker is down:
    nothing changes then, and the caller can simply try again.
    """
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import RedisError

    from canary.errors import Conflict, ServiceUnavailable
    from monitoring.automation.compensation import compensation_summary

    summary = compensation_summary(deployment=deployment)
    if not summary["flagged"]:
        raise Conflict(
            "No executions of this deployment are flagged for reprocessing; replay "
            "applies after a rollback with the manual compensation strategy."
        )
    try:
        # NOTE: no publish retries: with the broker down, answer now, not in seconds.
        compensation_replay_task.apply_async(args=[str(deployment.pk)], retry=False)
    except (KombuOperationalError, RedisError, OSError) as exc:
        raise ServiceUnavailable(
            "The task queue is unreachable, so the replay was not queued and nothing "
            "changed. Try again once it is back.",
            retry_after=30,
        ) from exc
    return summary


@shared_task(soft_time_limit=50, time_limit=58, acks_late=True, ignore_result=True)
def rollup_task() -> int:
    """Fold closed minutes of execution logs into rollups (idempotent; logstore.rollups)."""
    from monitoring.logstore.rollups import rollup_run

    return rollup_run()


@shared_task(soft_time_limit=240, time_limit=270, acks_late=True, ignore_result=True)
def partitions_task() -> list[str]:
    """Create the execution log's day partitions ahead (idempotent)."""
    from monitoring.logstore.retention import partitions_run

    return partitions_run()


@shared_task(soft_time_limit=540, time_limit=590, acks_late=True, ignore_result=True)
def retention_task() -> str:
    """Drop execution-log partitions and rollups past retention (idempotent)."""
    from monitoring.logstore.retention import retention_run

    return retention_run().summary()
