"""Retention of execution logs and rollups, and the partitions created ahead.

Execution logs are kept ``CANARY_LOG_RETENTION_DAYS`` (default 30) and dropped
a whole day partition at a time; rollups, which answer metrics of old
deployments, are kept ``CANARY_ROLLUP_RETENTION_DAYS`` (default 400).

A day that holds v2 executions flagged for reprocessing of a deployment whose
manual compensation is still pending is *held*: kept whole, reported, and
dropped by the first run after the compensation is marked done. Holding (rather
than copying the flagged rows elsewhere) keeps replay, differences and the
admin reading one table, and a held day is visible in every run's outcome; its
cost, a day of logs kept longer, lasts only as long as someone leaves a
compensation open.

On SQLite (one plain table, development sizes) the same policy deletes rows.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from deployments.choices import CompensationStatus
from deployments.models import Deployment
from monitoring.leases import lease_acquire, lease_release
from monitoring.logstore import partitions
from monitoring.models import ExecutionLog, ExecutionRollup

logger = logging.getLogger(__name__)

RETENTION_JOB = "canary-retention"
PARTITIONS_JOB = "canary-partitions"
JOB_LEASE = timedelta(minutes=10)


@dataclass
class RetentionReport:
    dry_run: bool
    log_cutoff: datetime
    rollup_cutoff: datetime
    dropped: list[str] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)
    rows_dropped: int = 0
    rollups_deleted: int = 0
    skipped: bool = False

    def summary(self) -> str:
        verb = "would drop" if self.dry_run else "dropped"
        held = ", ".join(f"{name} ({count} flagged)" for name, count in self.held.items())
        return (
            f"{verb} {len(self.dropped)} log partitions (~{self.rows_dropped} rows)"
            + (f": {', '.join(self.dropped)}" if self.dropped else "")
            + f"; held {len(self.held)}"
            + (f": {held}" if held else "")
            + f"; {'would delete' if self.dry_run else 'deleted'} "
            f"{self.rollups_deleted} rollups before {self.rollup_cutoff:%Y-%m-%d}"
        )


def _pending_compensations() -> list[str]:
    return [
        str(pk)
        for pk in Deployment.objects.filter(
            compensation_status=CompensationStatus.PENDING
        ).values_list("pk", flat=True)
    ]


def retention_run(*, now: datetime | None = None, dry_run: bool = False) -> RetentionReport:
    """Drop what is past retention (or, with ``dry_run``, only say what would go).

    A partition is dropped only when its whole day ends before the cutoff, so
    no row younger than the retention is ever lost. Single flight: a run that
    finds another holding the lease changes nothing.
    """
    now = now or timezone.now()
    report = RetentionReport(
        dry_run=dry_run,
        log_cutoff=now - timedelta(days=settings.CANARY_LOG_RETENTION_DAYS),
        rollup_cutoff=now - timedelta(days=settings.CANARY_ROLLUP_RETENTION_DAYS),
    )
    holder = uuid.uuid4().hex
    if not dry_run and not lease_acquire(RETENTION_JOB, holder=holder, now=now, lease=JOB_LEASE):
        report.skipped = True
        return report
    outcome = "error"
    try:
        pending = _pending_compensations()
        if partitions.partitioned():
            _drop_partitions(report, pending)
        else:
            _delete_rows(report, pending)
        rollups = ExecutionRollup.objects.filter(hour__lt=report.rollup_cutoff)
        if dry_run:
            report.rollups_deleted = rollups.count()
        else:
            report.rollups_deleted = rollups.delete()[0]
        outcome = report.summary()
        if report.held:
            logger.warning("retention holds log partitions for pending compensations: %s", outcome)
    finally:
        if not dry_run:
            lease_release(RETENTION_JOB, holder=holder, outcome=outcome)
    return report


def _drop_partitions(report: RetentionReport, pending: list[str]) -> None:
    for partition in partitions.partitions_list():
        if partition.end > report.log_cutoff:
            break
        flagged = partitions.partition_holds_flagged(partition, deployment_ids=pending)
        if flagged:
            report.held[partition.name] = flagged
            continue
        report.dropped.append(partition.name)
        report.rows_dropped += partitions.partition_rows(partition)
        if not report.dry_run:
            partitions.partition_drop(partition)


def _delete_rows(report: RetentionReport, pending: list[str]) -> None:
    expired = ExecutionLog.objects.filter(created_at__lt=report.log_cutoff).exclude(
        Q(deployment_id__in=pending, served_version="v2", needs_reprocess=True)
    )
    report.rows_dropped = expired.count() if report.dry_run else expired.delete()[0]


def partitions_run(*, now: datetime | None = None) -> list[str]:
    """Create the log partitions ahead (``CANARY_LOG_PARTITIONS_AHEAD_DAYS``, default 7)."""
    now = now or timezone.now()
    holder = uuid.uuid4().hex
    if not lease_acquire(PARTITIONS_JOB, holder=holder, now=now, lease=JOB_LEASE):
        return []
    outcome = "error"
    try:
        created = partitions.partitions_ensure(
            now=now, days_ahead=settings.CANARY_LOG_PARTITIONS_AHEAD_DAYS
        )
        existing = partitions.partitions_list()
        outcome = f"created {len(created)}; {len(existing)} day partitions" + (
            f" up to {existing[-1].day:%Y-%m-%d}" if existing else " (plain table)"
        )
    finally:
        lease_release(PARTITIONS_JOB, holder=holder, outcome=outcome)
    return created
