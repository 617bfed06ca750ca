"""Celery tasks: the monitor, notifications and compensation replay.

Tasks take ids, re-read what they need, have soft and hard time limits and are
idempotent, so a retry or a duplicate delivery changes nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from celery import shared_task

from monitoring.notifications.sender import SendFailed

logger = logging.getLogger(__name__)


@shared_task(soft_time_limit=240, time_limit=270, acks_late=True, ignore_result=True)
def canary_monitor_task(now: str | None = None) -> dict[str, Any]:
    from datetime import datetime

    from monitoring.automation.monitor import monitor_run

    report = monitor_run(now=datetime.fromisoformat(now) if now else None)
    return report.__dict__


@shared_task(
    autoretry_for=(requests.RequestException, SendFailed),
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
    from monitoring.notifications.channels import slack_send

    slack_send(text)


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
    from monitoring.notifications.channels import email_send

    email_send(subject, text, recipients)


@shared_task(soft_time_limit=3_000, time_limit=3_300, acks_late=True, ignore_result=True)
def compensation_replay_task(deployment_id: str) -> dict[str, int]:
    from monitoring.automation.compensation import compensation_replay

    return compensation_replay(deployment_id=deployment_id)


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


@shared_task(soft_time_limit=60, time_limit=70, acks_late=True, ignore_result=True)
def webhook_deliver_task(delivery_id: str) -> None:
    """One attempt of a webhook delivery; the next one is queued after its backoff."""
    from monitoring.notifications.webhooks import delivery_attempt

    delay = delivery_attempt(delivery_id=delivery_id)
    if delay is not None:
        webhook_deliver_task.apply_async(args=[delivery_id], countdown=delay)


@shared_task(soft_time_limit=50, time_limit=58, acks_late=True, ignore_result=True)
def webhook_sweep_task() -> int:
    """Re-queue deliveries whose task went missing (the broker was down at commit)."""
    from monitoring.notifications.webhooks import deliveries_sweep

    return deliveries_sweep()


@shared_task(soft_time_limit=540, time_limit=590, acks_late=True, ignore_result=True)
def capture_retention_task() -> int:
    """Delete captured inputs past retention or over the per-rule-set bound (idempotent)."""
    from monitoring.recording.captures import capture_retention_run

    return capture_retention_run()


@shared_task(
    soft_time_limit=3_000,
    time_limit=3_300,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def backtest_run_task(backtest_id: str, part: int | None = None) -> None:
    """Run (or resume) one backtest, or one part of it beside the run that queued the part;
    a duplicate delivery finds it done or continues it."""
    from monitoring.automation.backtests import backtest_run

    backtest_run(backtest_id=backtest_id, part=part)


@shared_task(soft_time_limit=50, time_limit=58, acks_late=True, ignore_result=True)
def backtest_sweep_task() -> int:
    """Resume backtests whose worker went silent, or fail them after too many attempts."""
    from monitoring.automation.backtests import backtest_sweep

    return backtest_sweep()
