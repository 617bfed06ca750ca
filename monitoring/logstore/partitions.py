"""The execution log's day partitions on PostgreSQL: list, create ahead, drop whole.

The table is ``PARTITION BY RANGE (created_at)`` with one partition per UTC day,
``monitoring_executionlog_pYYYYMMDD``, and a default partition that catches rows
outside every created day (migration ``0013_partition_execution_log`` explains
the layout). Days are created ahead by the ``canary-partitions`` job; a day
that reached the default partition anyway (the job did not run, a clock was
wrong) is moved out into its own partition at the next run, so retention can
still drop it whole. On SQLite every function here is a no-op: the table is
plain there.
"""

# ruff: noqa: S608 - SQL names only fixed identifiers and dates; values are parameters

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

TABLE = "monitoring_executionlog"
DEFAULT_PARTITION = f"{TABLE}_default"
_DAY_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")


@dataclass(frozen=True)
class DayPartition:
    name: str
    day: date

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)


def partitioned() -> bool:
    """Whether the execution log is a partitioned table here (PostgreSQL after 0012)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass", [TABLE])
        return cursor.fetchone() is not None


def partition_for(day: date) -> DayPartition:
    return DayPartition(f"{TABLE}_p{day:%Y%m%d}", day)


def partitions_list() -> list[DayPartition]:
    """The day partitions attached now, oldest first (the default partition excluded)."""
    if not partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = []
    for name in names:
        match = _DAY_NAME.match(name)
        if match:
            days.append(DayPartition(name, datetime.strptime(match[1], "%Y%m%d").date()))
    return sorted(days, key=lambda partition: partition.day)


def partitions_ensure(*, now: datetime, days_ahead: int) -> list[str]:
    """Create the partitions of today and the next ``days_ahead`` days, and of any
    day found in the default partition; return the names created.

    Idempotent: an existing day is left alone. Each day is created in its own
    transaction: rows of that day are moved out of the default partition into a
    new table, which is then attached (PostgreSQL refuses to attach a range the
    default partition holds rows of).
    """
    if not partitioned():
        return []
    existing = {partition.day for partition in partitions_list()}
    today = now.astimezone(UTC).date()
    wanted = {today + timedelta(days=offset) for offset in range(days_ahead + 1)}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {DEFAULT_PARTITION}"
        )
        wanted |= {row[0] for row in cursor.fetchall()}
    created = []
    for day in sorted(wanted - existing):
        _create_day(partition_for(day))
        created.append(partition_for(day).name)
    return created


def _create_day(partition: DayPartition) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        # NOTE: taken first, so no row of the day can reach the default partition
        # between the move and the attach.
        cursor.execute(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(
            f"CREATE TABLE {partition.name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
            "WHERE created_at >= %s AND created_at < %s RETURNING *) "
            f"INSERT INTO {partition.name} SELECT * FROM moved",
            [partition.start, partition.end],
        )
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {partition.name} FOR VALUES FROM (%s) TO (%s)",
            [partition.start, partition.end],
        )


def partition_holds_flagged(partition: DayPartition, *, deployment_ids: list[str]) -> int:
    """How many executions of these deployments flagged for reprocessing the day holds."""
    if not deployment_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {partition.name} "
            "WHERE deployment_id = ANY(%s::uuid[]) AND served_version = 'v2' AND needs_reprocess",
            [deployment_ids],
        )
        return cursor.fetchone()[0]


def partition_rows(partition: DayPartition) -> int:
    """The planner's estimate of the rows a partition holds (no scan of 85 GB)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
            [partition.name],
        )
        return cursor.fetchone()[0]


def partition_drop(partition: DayPartition) -> None:
    """Detach and drop one day: a catalog change, no row is deleted one by one."""
    with transaction.atomic(), connection.cursor() as cursor:
        # NOTE: deferred foreign-key checks of rows written earlier in an enclosing
        # transaction would forbid the drop; checking them now is harmless.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {partition.name}")
        cursor.execute(f"DROP TABLE {partition.name}")
