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
from django.db.models import Aggregate, Avg, Count, FloatField, Q, QuerySet
from django.utils import timezone

from monitoring.analysis import VersionStats
from monitoring.models import ExecutionLog

VERSIONS = ("v1", "v2")
LATENCY_SAMPLE_SIZE = 5_000


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
    """``{"v1": ..., "v2": ...}``; a version with no requests in the window is None."""
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
    limit: int = LATENCY_SAMPLE_SIZE,
) -> list[float]:
    """Up to ``limit`` latencies drawn at random from the window."""
    logs = _window(deployment_id, since, None).filter(served_version=version)
    return list(logs.order_by("?").values_list("latency_ms", flat=True)[:limit])


def window_stats(
    *, deployment_id: Any, now: datetime | None = None
) -> dict[str, VersionStats | None]:
    """The monitor's windows: v1 and v2 over 5 minutes, v2 over 10 minutes."""
    now = now or timezone.now()
    five = version_stats(deployment_id=deployment_id, since=now - timedelta(minutes=5), until=now)
    ten = version_stats(deployment_id=deployment_id, since=now - timedelta(minutes=10), until=now)
    return {"v1_5m": five["v1"], "v2_5m": five["v2"], "v2_10m": ten["v2"]}
