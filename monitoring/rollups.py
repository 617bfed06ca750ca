"""Hourly rollups so long windows never scan millions of execution logs.

A periodic task folds every closed hour of execution logs into one
``ExecutionRollup`` row per version: counts, latency sum and a latency histogram
with log-spaced buckets (each 2% wider than the last). Windows longer than
``LONG_WINDOW`` are answered from rollups plus the raw rows at their edges
(at most about an hour at each end);
percentiles then come from the histogram, within 1% of the exact value (the
bucket's geometric midpoint). Shorter windows, which the monitor and health use,
are always computed exactly from the raw rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, FloatField, Q, Sum, Value
from django.db.models.functions import Floor, Greatest, Ln, TruncHour
from django.utils import timezone

from assignments.buffer import drain_now
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from monitoring.models import ExecutionLog, ExecutionRollup, RollupWatermark

LOW_MS = 0.001
RATIO = 1.02
LONG_WINDOW = timedelta(hours=3)
# A request that began before an hour ended may commit its log a little later.
GRACE = timedelta(seconds=60)


def bucket_expression() -> Any:
    latency = Greatest(F("latency_ms"), Value(LOW_MS), output_field=FloatField())
    return Floor(Ln(latency / Value(LOW_MS)) / Value(math.log(RATIO)))


def bucket_value(index: int) -> float:
    """The geometric midpoint of a bucket: within 1% of any latency in it."""
    return LOW_MS * RATIO ** (index + 0.5)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def rollup_deployment(*, deployment: Deployment, now: datetime | None = None) -> int:
    """Fold the deployment's closed hours into rollups; returns the rows written."""
    now = now or timezone.now()
    until = floor_hour(now - GRACE)
    with transaction.atomic():
        watermark = (
            RollupWatermark.objects.select_for_update().filter(deployment=deployment).first()
        )
        start = watermark.until if watermark else None
        if start is not None and start >= until:
            return 0
        logs = ExecutionLog.objects.filter(deployment=deployment, created_at__lt=until)
        if start is not None:
            logs = logs.filter(created_at__gte=start)
        grouped = (
            logs.annotate(hour=TruncHour("created_at"), bucket=bucket_expression())
            .values("served_version", "hour", "bucket")
            .annotate(
                n=Count("id"),
                errors=Count("id", filter=Q(success=False)),
                latency=Sum("latency_ms"),
            )
            .order_by()
        )
        rows: dict[tuple[str, datetime], dict[str, Any]] = defaultdict(
            lambda: {"total": 0, "errors": 0, "latency_sum": 0.0, "buckets": {}}
        )
        for item in grouped.iterator(chunk_size=5_000):
            row = rows[(item["served_version"], item["hour"])]
            row["total"] += item["n"]
            row["errors"] += item["errors"]
            row["latency_sum"] += item["latency"] or 0.0
            row["buckets"][str(int(item["bucket"]))] = item["n"]
        ExecutionRollup.objects.bulk_create(
            [
                ExecutionRollup(
                    deployment=deployment,
                    served_version=version,
                    hour=hour,
                    total=row["total"],
                    errors=row["errors"],
                    latency_sum=row["latency_sum"],
                    latency_buckets=row["buckets"],
                )
                for (version, hour), row in rows.items()
            ],
            ignore_conflicts=True,
            batch_size=1_000,
        )
        RollupWatermark.objects.update_or_create(deployment=deployment, defaults={"until": until})
    return len(rows)


def rollup_run(*, now: datetime | None = None) -> int:
    """Roll up every deployment that may still receive executions or be asked about."""
    drain_now()
    now = now or timezone.now()
    recent = now - timedelta(days=7)
    deployments = Deployment.objects.filter(
        Q(status=DeploymentStatus.CANARY) | Q(started_at__gte=recent, updated_at__gte=recent)
    )
    return sum(rollup_deployment(deployment=d, now=now) for d in deployments)


def watermark_for(deployment_id: Any) -> datetime | None:
    return (
        RollupWatermark.objects.filter(deployment_id=deployment_id)
        .values_list("until", flat=True)
        .first()
    )


def rolled_up_totals(
    *, deployment_id: Any, since: datetime | None, until: datetime
) -> dict[str, dict[str, Any]]:
    """Counts, latency sums and merged histograms per version over whole hours."""
    rollups = ExecutionRollup.objects.filter(deployment_id=deployment_id, hour__lt=until)
    if since is not None:
        rollups = rollups.filter(hour__gte=since)
    totals = {
        row["served_version"]: {
            "total": row["total"],
            "errors": row["errors"],
            "latency_sum": row["latency_sum"],
            "buckets": defaultdict(int),
        }
        for row in rollups.values("served_version")
        .annotate(total=Sum("total"), errors=Sum("errors"), latency_sum=Sum("latency_sum"))
        .order_by()
    }
    if not totals:
        return totals
    # Merge the histograms in the database: one row per (version, bucket).
    each = "jsonb_each_text" if connection.vendor == "postgresql" else "json_each"
    value = "value::bigint" if connection.vendor == "postgresql" else "value"
    sql, params = rollups.values("id").query.sql_with_params()
    table = ExecutionRollup._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.served_version, b.key, SUM(b.{value}) "  # noqa: S608 - fixed identifiers
            f"FROM {table} r, {each}(r.latency_buckets) b "
            f"WHERE r.id IN ({sql}) GROUP BY r.served_version, b.key",
            params,
        )
        for version, key, count in cursor.fetchall():
            totals[version]["buckets"][int(key)] += int(count)
    return totals


def raw_histogram(*, logs: Any) -> dict[str, dict[int, int]]:
    histogram: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    rows = (
        logs.annotate(bucket=bucket_expression())
        .values("served_version", "bucket")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        histogram[row["served_version"]][int(row["bucket"])] += row["n"]
    return histogram


def histogram_percentile(buckets: dict[int, int], total: int, fraction: float) -> float:
    """percentile_cont's definition on the histogram.

    The rows at ranks floor and ceil of ``fraction * (total - 1)`` are each known
    to within 1% (their bucket's midpoint); they are interpolated as
    percentile_cont interpolates, so the result is within 1% too.
    """
    rank = fraction * (total - 1)
    low, high = math.floor(rank), math.ceil(rank)
    low_value = high_value = bucket_value(max(buckets))
    seen = 0
    found_low = False
    for index in sorted(buckets):
        seen += buckets[index]
        if not found_low and seen > low:
            low_value, found_low = bucket_value(index), True
        if seen > high:
            high_value = bucket_value(index)
            break
    return low_value + (high_value - low_value) * (rank - low)
