"""Per-version statistics computed by the database, never by loading every row.

Percentiles follow PostgreSQL's ``percentile_cont``: the value at fractional rank
``p * (n - 1)`` of the sorted latencies, interpolated linearly between the two
nearest rows. PostgreSQL computes it natively; on SQLite the same definition is
evaluated with two ordered single-row queries.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Avg, Count, FloatField, Q, QuerySet, Sum
from django.utils import timezone

from monitoring import rollups
from monitoring.analysis import VersionStats
from monitoring.models import ExecutionLog

VERSIONS = ("v1", "v2")
LATENCY_SAMPLE_SIZE = 5_000
SAMPLE_SORT_LIMIT = 50_000  # above this many rows, sample pages instead of sorting


class PercentileCont(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


def _window(deployment_id: Any, since: datetime | None, until: datetime | None) -> QuerySet:
    logs = ExecutionLog.objects.filter(deployment_id=deployment_id)
    if since is not None:
        logs = logs.filter(created_at__gte=since)
    if until is not None:
        logs = logs.filter(created_at__lt=until)
    return logs


def version_stats(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> dict[str, VersionStats | None]:
    """``{"v1": ..., "v2": ...}``; a version with no requests in the window is None.

    Windows longer than ``rollups.LONG_WINDOW`` that rollups already cover are
    answered from them (percentiles within 1%); others exactly from the rows.
    """
    watermark = rollups.watermark_for(deployment_id)
    if watermark is not None and (since is None or watermark - since >= rollups.LONG_WINDOW):
        return _rolled_up_stats(deployment_id, since, until or timezone.now(), watermark)
    return _exact_stats(deployment_id, since, until)


def _rolled_up_stats(
    deployment_id: Any, since: datetime | None, until: datetime, watermark: datetime
) -> dict[str, VersionStats | None]:
    """Whole hours from rollups; the partial hour at the start and the tail after
    the watermark from raw rows."""
    first_hour = None
    if since is not None:
        first_hour = rollups.floor_hour(since)
        if first_hour < since:
            first_hour += timedelta(hours=1)
    rolled_until = min(watermark, until)
    totals = rollups.rolled_up_totals(
        deployment_id=deployment_id, since=first_hour, until=rolled_until
    )
    edges = ExecutionLog.objects.filter(deployment_id=deployment_id).filter(
        Q(created_at__gte=rolled_until, created_at__lt=until)
        | (
            Q(created_at__gte=since, created_at__lt=first_hour)
            if since is not None and first_hour is not None
            else Q(pk__in=[])
        )
    )
    raw = {
        row["served_version"]: row
        for row in edges.values("served_version")
        .annotate(
            total=Count("id"),
            errors=Count("id", filter=Q(success=False)),
            latency_sum=Sum("latency_ms"),
        )
        .order_by()
    }
    raw_buckets = rollups.raw_histogram(logs=edges) if raw else {}
    result: dict[str, VersionStats | None] = dict.fromkeys(VERSIONS)
    for version in VERSIONS:
        rolled = totals.get(version)
        extra = raw.get(version)
        total = (rolled["total"] if rolled else 0) + (extra["total"] if extra else 0)
        if total == 0:
            continue
        errors = (rolled["errors"] if rolled else 0) + (extra["errors"] if extra else 0)
        latency_sum = (rolled["latency_sum"] if rolled else 0.0) + (
            (extra["latency_sum"] or 0.0) if extra else 0.0
        )
        buckets: dict[int, int] = dict(rolled["buckets"]) if rolled else {}
        for index, count in raw_buckets.get(version, {}).items():
            buckets[index] = buckets.get(index, 0) + count
        result[version] = VersionStats(
            total_requests=total,
            success_count=total - errors,
            error_count=errors,
            success_rate=(total - errors) / total,
            error_rate=errors / total,
            avg_latency_ms=latency_sum / total,
            p95_latency_ms=rollups.histogram_percentile(buckets, total, 0.95),
            p99_latency_ms=rollups.histogram_percentile(buckets, total, 0.99),
        )
    return result


def _exact_stats(
    deployment_id: Any, since: datetime | None, until: datetime | None
) -> dict[str, VersionStats | None]:
    logs = _window(deployment_id, since, until)
    aggregates: dict[str, Any] = {
        "total": Count("id"),
        "errors": Count("id", filter=Q(success=False)),
        "avg_latency": Avg("latency_ms"),
    }
    postgres = connection.vendor == "postgresql"
    if postgres:
        aggregates["p95"] = PercentileCont("latency_ms", 0.95)
        aggregates["p99"] = PercentileCont("latency_ms", 0.99)
    rows = logs.values("served_version").annotate(**aggregates).order_by()
    result: dict[str, VersionStats | None] = dict.fromkeys(VERSIONS)
    for row in rows:
        total, errors = row["total"], row["errors"]
        version = row["served_version"]
        if postgres:
            p95, p99 = row["p95"], row["p99"]
        else:
            ordered = logs.filter(served_version=version).order_by("latency_ms")
            p95, p99 = _percentile(ordered, total, 0.95), _percentile(ordered, total, 0.99)
        result[version] = VersionStats(
            total_requests=total,
            success_count=total - errors,
            error_count=errors,
            success_rate=(total - errors) / total,
            error_rate=errors / total,
            avg_latency_ms=float(row["avg_latency"]),
            p95_latency_ms=float(p95),
            p99_latency_ms=float(p99),
        )
    return result


def _percentile(ordered: QuerySet, total: int, fraction: float) -> float:
    rank = fraction * (total - 1)
    low, high = math.floor(rank), math.ceil(rank)
    values = list(ordered.values_list("latency_ms", flat=True)[low : high + 1])
    if len(values) == 1:
        return values[0]
    return values[0] + (values[1] - values[0]) * (rank - low)


def latency_sample(
    *,
    deployment_id: Any,
    version: str,
    since: datetime | None = None,
    total: int | None = None,
    limit: int = LATENCY_SAMPLE_SIZE,
) -> list[float]:
    """Up to ``limit`` latencies drawn at random from the window.

    With many rows on PostgreSQL, ``TABLESAMPLE SYSTEM`` reads only a random
    fraction of the table's pages (sized to yield about three times ``limit`` of
    this version's rows) instead of sorting every row by ``random()``.
    """
    logs = _window(deployment_id, since, None).filter(served_version=version)
    if connection.vendor != "postgresql" or not total or total <= SAMPLE_SORT_LIMIT:
        return list(logs.order_by("?").values_list("latency_ms", flat=True)[:limit])
    percent = min(100.0, 100.0 * 3 * limit / total)
    table = ExecutionLog._meta.db_table
    conditions = ["deployment_id = %s", "served_version = %s"]
    params: list[Any] = [percent, str(deployment_id), version]
    if since is not None:
        conditions.append("created_at >= %s")
        params.append(since)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT latency_ms FROM {table} TABLESAMPLE SYSTEM (%s) "  # noqa: S608 - fixed names
            f"WHERE {' AND '.join(conditions)} LIMIT {int(limit)}",
            params,
        )
        return [row[0] for row in cursor.fetchall()]


def window_stats(
    *, deployment_id: Any, now: datetime | None = None
) -> dict[str, VersionStats | None]:
    """The monitor's windows: v1 and v2 over 5 minutes, v2 over 10 minutes."""
    now = now or timezone.now()
    five = version_stats(deployment_id=deployment_id, since=now - timedelta(minutes=5), until=now)
    ten = version_stats(deployment_id=deployment_id, since=now - timedelta(minutes=10), until=now)
    return {"v1_5m": five["v1"], "v2_5m": five["v2"], "v2_10m": ten["v2"]}


def minute_series(
    *, deployment_id: Any, since: datetime, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per minute and version: requests, errors and p95 latency, in one grouped query.

    Rows ``{"minute", "served_version", "total", "errors", "p95_latency_ms"}``
    ordered by minute; minutes without executions are absent. On SQLite
    ``p95_latency_ms`` is None (no ``percentile_cont``; the console is meant for
    PostgreSQL).
    """
    from django.db.models.functions import TruncMinute

    aggregates: dict[str, Any] = {
        "total": Count("id"),
        "errors": Count("id", filter=Q(success=False)),
    }
    if connection.vendor == "postgresql":
        aggregates["p95_latency_ms"] = PercentileCont("latency_ms", 0.95)
    rows = (
        _window(deployment_id, since, until)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute", "served_version")
        .annotate(**aggregates)
        .order_by("minute", "served_version")
    )
    return [{"p95_latency_ms": None, **row} for row in rows]
