"""Which rows or rollups a window reads, and percentile aggregates: shared by both reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Aggregate, FloatField, Q, QuerySet
from django.utils import timezone

from monitoring.logstore import rollups
from monitoring.models import ExecutionLog


class PercentileCont(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


class PercentileDisc(PercentileCont):
    function = "percentile_disc"


def _window(deployment_id: Any, since: datetime | None, until: datetime | None) -> QuerySet:
    logs = ExecutionLog.objects.filter(deployment_id=deployment_id)
    if since is not None:
        logs = logs.filter(created_at__gte=since)
    if until is not None:
        logs = logs.filter(created_at__lt=until)
    return logs


@dataclass(frozen=True)
class _Span:
    """A window split into whole hours answered by rollups (None: none are) and the raw
    rows of the rest: the partial first hour and the time since the last rollup."""

    hours: QuerySet | None
    raw: QuerySet


def _span(
    deployment_id: Any, since: datetime | None, until: datetime | None, *, paired: bool = False
) -> _Span:
    """Windows longer than ``rollups.LONG_WINDOW`` that rollups cover come from them;
    ``paired`` also needs every covered hour to carry paired outcomes."""
    end = until or timezone.now()
    if since is not None and end - since < rollups.LONG_WINDOW:
        return _Span(None, _window(deployment_id, since, until))
    watermark = rollups.watermark_for(deployment_id)
    if watermark is None or (since is not None and watermark - since < rollups.LONG_WINDOW):
        return _Span(None, _window(deployment_id, since, until))
    first_hour = None
    if since is not None:
        first_hour = rollups.floor_hour(since)
        if first_hour < since and _has_rows(deployment_id, first_hour, since):
            first_hour += timedelta(hours=1)  # that hour's rollup holds rows before the window
    # Rollups cover [hour, watermark) for the watermark's own hour, whole hours before it.
    rolled_until = watermark if watermark <= end else rollups.floor_hour(end)
    hours = rollups.hours_between(deployment_id=deployment_id, since=first_hour, until=rolled_until)
    if paired and not rollups.paired_complete(hours):
        return _Span(None, _window(deployment_id, since, until))
    edges = ExecutionLog.objects.filter(deployment_id=deployment_id).filter(
        Q(created_at__gte=rolled_until, created_at__lt=end)
        | (
            Q(created_at__gte=since, created_at__lt=first_hour)
            if since is not None and first_hour is not None
            else Q(pk__in=[])
        )
    )
    return _Span(hours, edges)


def _has_rows(deployment_id: Any, since: datetime, until: datetime) -> bool:
    """One index probe: whether the deployment logged anything in [since, until)."""
    return _window(deployment_id, since, until).exists()


def _percentile_of(values: list[float], fraction: float) -> float:
    rank = fraction * (len(values) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)
