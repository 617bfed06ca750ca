"""Day partitions created ahead; retention drops exactly the expired days, never a held one."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from deployments.choices import CompensationStatus
from deployments.models import Deployment
from monitoring.logstore import partitions
from monitoring.logstore.retention import retention_run
from monitoring.models import ExecutionLog, ExecutionRollup
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="partitions exist on PostgreSQL only"
)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=offset) for offset in range(count)]


def day_names() -> set[date]:
    return {partition.day for partition in partitions.partitions_list()}


def default_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}")  # noqa: S608
        return cursor.fetchone()[0]


@postgres_only
def test_partitions_are_created_ahead_once() -> None:
    now = at(date(2030, 1, 10), hour=23)
    created = partitions.partitions_ensure(now=now, days_ahead=7)
    assert created == [partitions.partition_for(day).name for day in days(date(2030, 1, 10), 8)]
    assert set(days(date(2030, 1, 10), 8)) <= day_names()
    assert partitions.partitions_ensure(now=now, days_ahead=7) == []


@postgres_only
def test_a_day_that_reached_the_default_partition_gets_its_own(canary_v2: Deployment) -> None:
    stray = date(2031, 5, 5)
    add_logs(canary_v2, "v2", [1.0, 2.0], at=at(stray))
    assert default_rows() == 2
    created = partitions.partitions_ensure(now=at(date(2031, 1, 1)), days_ahead=0)
    assert partitions.partition_for(stray).name in created
    assert default_rows() == 0
    assert ExecutionLog.objects.filter(created_at=at(stray)).count() == 2


def old_days_with_logs(deployment: Deployment, first: date, count: int) -> None:
    partitions.partitions_ensure(now=at(first), days_ahead=count - 1)
    for day in days(first, count):
        add_logs(deployment, "v2", [1.0], at=at(day, hour=0))
        add_logs(deployment, "v2", [1.0], at=at(day, hour=23))


@postgres_only
def test_retention_drops_exactly_the_days_past_the_cutoff(
    canary_v2: Deployment, settings: Any
) -> None:
    settings.CANARY_LOG_RETENTION_DAYS = 30
    old_days_with_logs(canary_v2, date(2030, 1, 28), 5)  # 28, 29, 30, 31 January, 1 February
    now = datetime(2030, 3, 1, tzinfo=UTC)  # cutoff: 30 January 00:00, a day boundary
    dry = retention_run(now=now, dry_run=True)
    expired = {partitions.partition_for(day).name for day in days(date(2030, 1, 28), 2)}
    assert expired <= set(dry.dropped)
    assert partitions.partition_for(date(2030, 1, 30)).name not in dry.dropped
    assert ExecutionLog.objects.filter(deployment=canary_v2).count() == 10  # nothing changed

    report = retention_run(now=now)
    assert report.dropped == dry.dropped
    assert not day_names() & {date(2030, 1, 28), date(2030, 1, 29)}
    kept = ExecutionLog.objects.filter(deployment=canary_v2).order_by("created_at")
    assert kept.count() == 6
    assert kept.first().created_at == at(date(2030, 1, 30), hour=0)

    # Ten hours later the cutoff is inside 30 January: that day is not over, so it stays.
    assert retention_run(now=now + timedelta(hours=10)).dropped == []
    assert ExecutionLog.objects.filter(deployment=canary_v2).count() == 6


@postgres_only
def test_executions_flagged_for_a_pending_compensation_survive(
    canary_v2: Deployment, settings: Any
) -> None:
    settings.CANARY_LOG_RETENTION_DAYS = 30
    old_days_with_logs(canary_v2, date(2030, 1, 1), 2)
    held_day = partitions.partition_for(date(2030, 1, 1)).name
    ExecutionLog.objects.filter(created_at__date=date(2030, 1, 1)).update(needs_reprocess=True)
    Deployment.objects.filter(pk=canary_v2.pk).update(
        compensation_status=CompensationStatus.PENDING
    )
    now = datetime(2030, 3, 1, tzinfo=UTC)
    report = retention_run(now=now)
    assert report.held == {held_day: 2}
    assert partitions.partition_for(date(2030, 1, 2)).name in report.dropped
    assert ExecutionLog.objects.filter(deployment=canary_v2, needs_reprocess=True).count() == 2

    Deployment.objects.filter(pk=canary_v2.pk).update(
        compensation_status=CompensationStatus.COMPLETED
    )
    assert held_day in retention_run(now=now).dropped
    assert not ExecutionLog.objects.filter(deployment=canary_v2).exists()


def test_rollups_are_kept_longer_than_logs(canary_v2: Deployment, settings: Any) -> None:
    settings.CANARY_LOG_RETENTION_DAYS = 30
    settings.CANARY_ROLLUP_RETENTION_DAYS = 400
    now = datetime(2030, 3, 1, tzinfo=UTC)
    for age in (401, 399, 40):
        ExecutionRollup.objects.create(
            deployment=canary_v2,
            served_version="v2",
            hour=now - timedelta(days=age),
            total=1,
            errors=0,
            latency_sum=1.0,
            latency_buckets=[1],
        )
    report = retention_run(now=now)
    assert report.rollups_deleted == 1
    ages = sorted((now - rollup.hour).days for rollup in ExecutionRollup.objects.all())
    assert ages == [40, 399]


def test_sqlite_or_postgres_keeps_young_and_held_rows(canary_v2: Deployment, settings: Any) -> None:
    """The same policy whatever the table is (rows on SQLite, partitions on PostgreSQL)."""
    settings.CANARY_LOG_RETENTION_DAYS = 30
    now = datetime(2030, 3, 1, tzinfo=UTC)
    partitions.partitions_ensure(now=now - timedelta(days=60), days_ahead=60)
    add_logs(canary_v2, "v2", [1.0, 1.0], at=now - timedelta(days=45))
    add_logs(canary_v2, "v2", [1.0], at=now - timedelta(days=5))
    retention_run(now=now)
    assert ExecutionLog.objects.filter(deployment=canary_v2).count() == 1


def test_dry_run_command_prints_and_keeps(
    canary_v2: Deployment, settings: Any, capsys: Any
) -> None:
    settings.CANARY_LOG_RETENTION_DAYS = 1
    add_logs(canary_v2, "v2", [1.0], at=datetime.now(UTC) - timedelta(days=3))
    call_command("canary_retention", "--dry-run")
    out = capsys.readouterr().out
    assert "would drop" in out
    assert ExecutionLog.objects.filter(deployment=canary_v2).count() == 1


def test_jobs_are_scheduled_and_report(viewer: APIClient, canary_v2: Deployment) -> None:
    retention_run()
    jobs = {job["name"]: job for job in viewer.get("/api/v1/scheduler/jobs").json()["jobs"]}
    assert jobs["canary-retention"]["task"] == "monitoring.tasks.retention_task"
    assert jobs["canary-retention"]["interval_seconds"] == 24 * 60 * 60
    assert jobs["canary-retention"]["ran_recently"] is True
    assert "log partitions" in jobs["canary-retention"]["last_outcome"]
    assert jobs["canary-partitions"]["task"] == "monitoring.tasks.partitions_task"
    assert jobs["canary-partitions"]["interval_seconds"] == 60 * 60
