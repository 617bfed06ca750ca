"""Hourly rollups so long windows never scan millions of execution logs.

A periodic task folds every closed five-minute slice of execution logs into its
hour's ``ExecutionRollup`` row, one per version and hour: counts, latency sum and
a latency histogram with log-spaced buckets (each 2% wider than the last), and
for the paired (shadowed) executions their outcome counts, latency histograms of
both sides, a histogram of the v2/v1 latency ratio and the decision changes.
Windows longer than ``LONG_WINDOW`` are answered from rollups plus the raw rows at
their edges (the minutes since the last slice, and the partial first hour when
the deployment logged anything in it before the window); percentiles then come
from the histograms, within 1% of the exact value (the bucket's geometric
midpoint), and counts are exact. Shorter windows, which the monitor and health
use, are always computed exactly from the raw rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from assignments.buffer import drain_now
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from monitoring.logstore import columns
from monitoring.models import ExecutionLog, ExecutionRollup, RollupWatermark

LONG_WINDOW = timedelta(hours=1)
# A request that began before a slice ended may commit its log a little later.
GRACE = timedelta(seconds=60)
# Closed slices of this many minutes are folded into their hour's rollup.
SLICE_MINUTES = 5
# The watermark of a deployment nothing has been folded for yet.
NOTHING_YET = datetime(1970, 1, 1, tzinfo=UTC)

LOW_MS, RATIO = columns.LOW_MS, columns.RATIO
bucket_expression = columns.latency_bucket
bucket_value = columns.latency_bucket_value

PAIRED_COUNTS: dict[str, Q] = {
    "pairs_both_succeeded": columns.BOTH_SUCCEEDED,
    "pairs_only_v1_failed": columns.V1_ONLY_FAILED,
    "pairs_only_v2_failed": columns.V2_ONLY_FAILED,
    "pairs_both_failed": columns.BOTH_FAILED,
    "pairs_agreed": Q(agreed=True),
    "pairs_v2_slower": columns.V2_SLOWER,
    "pairs_v2_faster": columns.V2_FASTER,
}
PAIRED_HISTOGRAMS: dict[str, tuple[Callable[[], Any], Q]] = {
    "ratio_buckets": (columns.ratio_bucket, columns.TIMED_PAIR),
    "paired_latency_buckets": (columns.latency_bucket, Q(shadow_latency_ms__isnull=False)),
    "shadow_latency_buckets": (
        lambda: columns.latency_bucket("shadow_latency_ms"),
        Q(shadow_latency_ms__isnull=False),
    ),
}
PAIRED_FIELDS = (*PAIRED_COUNTS, *PAIRED_HISTOGRAMS, "changes")
# Rows rolled up before paired outcomes were counted have this field null.
PAIRED_MARKER = "pairs_both_succeeded"


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _empty_paired() -> dict[str, Any]:
    empty: dict[str, Any] = dict.fromkeys(PAIRED_COUNTS, 0)
    empty.update({field: {} for field in PAIRED_HISTOGRAMS})
    empty["changes"] = []
    return empty


def decoded_json(value: Any) -> Any:
    """Grouped JSON comes back as text on some backends."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _paired_by_hour(logs: QuerySet) -> dict[tuple[str, datetime], dict[str, Any]]:
    """The paired columns of every ``ExecutionRollup`` field, per (served version, hour)."""
    paired = logs.filter(columns.PAIRED).annotate(hour=TruncHour("created_at"))
    rows: dict[tuple[str, datetime], dict[str, Any]] = defaultdict(_empty_paired)
    counted = (
        paired.values("served_version", "hour")
        .annotate(
            **{name: Count("id", filter=condition) for name, condition in PAIRED_COUNTS.items()}
        )
        .order_by()
    )
    for item in counted:
        rows[(item["served_version"], item["hour"])].update(
            {name: item[name] for name in PAIRED_COUNTS}
        )
    for field, (expression, condition) in PAIRED_HISTOGRAMS.items():
        grouped = (
            paired.filter(condition)
            .annotate(bucket=expression())
            .values("served_version", "hour", "bucket")
            .annotate(n=Count("id"))
            .order_by()
        )
        for item in grouped.iterator(chunk_size=5_000):
            row = rows[(item["served_version"], item["hour"])]
            row[field][str(int(item["bucket"]))] = item["n"]
    changes = (
        paired.filter(agreed=False)
        .annotate(**columns.pair_sides())
        .values("served_version", "hour", *columns.CHANGE_KEYS)
        .annotate(n=Count("id"))
        .order_by()
    )
    for item in changes.iterator(chunk_size=5_000):
        rows[(item["served_version"], item["hour"])]["changes"].append(
            [
                item["v1_rule"],
                item["v2_rule"],
                decoded_json(item["v1_output"]),
                decoded_json(item["v2_output"]),
                item["v1_success"],
                item["v2_success"],
                item["n"],
            ]
        )
    return rows


def floor_slice(moment: datetime) -> datetime:
    return moment.replace(
        minute=moment.minute - moment.minute % SLICE_MINUTES, second=0, microsecond=0
    )


def rollup_deployment(*, deployment: Deployment, now: datetime | None = None) -> int:
    """Fold the deployment's closed slices into their hours' rollups; returns the rows
    written or grown.

    Slices are ``SLICE_MINUTES`` long, so the raw rows a long window still reads
    after the last rollup are minutes of traffic, not up to an hour; a slice of the
    current hour is added to that hour's row.
    """
    backfill_paired(deployment=deployment)
    now = now or timezone.now()
    until = floor_slice(now - GRACE)
    # The watermark row exists before it is locked, so two runs at once (a first fold of
    # a big canary outlasts the one-minute schedule) wait for each other instead of
    # both folding the same rows.
    RollupWatermark.objects.get_or_create(deployment=deployment, defaults={"until": NOTHING_YET})
    with transaction.atomic():
        watermark = RollupWatermark.objects.select_for_update().get(deployment=deployment)
        start = watermark.until if watermark.until > NOTHING_YET else None
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
            lambda: {"total": 0, "errors": 0, "latency_sum": 0.0, "latency_buckets": {}}
        )
        for item in grouped.iterator(chunk_size=5_000):
            row = rows[(item["served_version"], item["hour"])]
            row["total"] += item["n"]
            row["errors"] += item["errors"]
            row["latency_sum"] += item["latency"] or 0.0
            row["latency_buckets"][str(int(item["bucket"]))] = item["n"]
        paired = _paired_by_hour(logs) if rows else {}
        for key, row in rows.items():
            row.update(paired.get(key) or _empty_paired())
        existing = {
            (rollup.served_version, rollup.hour): rollup
            for rollup in ExecutionRollup.objects.select_for_update().filter(
                deployment=deployment, hour__in={hour for _, hour in rows}
            )
        }
        grown = []
        for key in list(rows):
            if key in existing:
                _add_into(existing[key], rows.pop(key))
                grown.append(existing[key])
        ExecutionRollup.objects.bulk_update(grown, _MERGED_FIELDS, batch_size=500)
        ExecutionRollup.objects.bulk_create(
            [
                ExecutionRollup(deployment=deployment, served_version=version, hour=hour, **row)
                for (version, hour), row in rows.items()
            ],
            batch_size=1_000,
        )
        watermark.until = until
        watermark.save(update_fields=["until"])
    return len(rows) + len(grown)


_MERGED_FIELDS = ("total", "errors", "latency_sum", "latency_buckets", *PAIRED_FIELDS)


def _add_into(rollup: ExecutionRollup, more: dict[str, Any]) -> None:
    """Grow an hour's rollup by the rows of a later slice of that hour."""
    for name in ("total", "errors", "latency_sum", *PAIRED_COUNTS):
        setattr(rollup, name, (getattr(rollup, name) or 0) + more[name])
    for name in ("latency_buckets", *PAIRED_HISTOGRAMS):
        merged = dict(getattr(rollup, name) or {})
        for index, count in more[name].items():
            merged[index] = merged.get(index, 0) + count
        setattr(rollup, name, merged)
    changes: dict[tuple[Any, ...], list[Any]] = {}
    for entry in [*(rollup.changes or []), *more["changes"]]:
        key = change_key(*entry[:6])
        if key in changes:
            changes[key][6] += entry[6]
        else:
            changes[key] = list(entry)
    rollup.changes = list(changes.values())


def backfill_paired(*, deployment: Deployment) -> int:
    """Fill the paired fields of rollups written before they existed, a day at a time.

    An hour whose raw logs retention has already dropped gets zeros: what the raw
    rows would have answered for it.
    """
    stale = ExecutionRollup.objects.filter(
        deployment=deployment, **{f"{PAIRED_MARKER}__isnull": True}
    )
    first = stale.order_by("hour").values_list("hour", flat=True).first()
    filled = 0
    while first is not None:
        day_end = first + timedelta(days=1)
        with transaction.atomic():
            rows = list(stale.filter(hour__lt=day_end).select_for_update())
            logs = ExecutionLog.objects.filter(
                deployment=deployment, created_at__gte=first, created_at__lt=day_end
            )
            paired = _paired_by_hour(logs)
            for row in rows:
                for field, value in (
                    paired.get((row.served_version, row.hour)) or _empty_paired()
                ).items():
                    setattr(row, field, value)
            ExecutionRollup.objects.bulk_update(rows, PAIRED_FIELDS, batch_size=500)
        filled += len(rows)
        first = stale.order_by("hour").values_list("hour", flat=True).first()
    return filled


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
    """Until when the deployment's executions are all rolled up (None: nothing yet)."""
    until = (
        RollupWatermark.objects.filter(deployment_id=deployment_id)
        .values_list("until", flat=True)
        .first()
    )
    return until if until is not None and until > NOTHING_YET else None


def hours_between(*, deployment_id: Any, since: datetime | None, until: datetime) -> QuerySet:
    rollups = ExecutionRollup.objects.filter(deployment_id=deployment_id, hour__lt=until)
    if since is not None:
        rollups = rollups.filter(hour__gte=since)
    return rollups


_HISTOGRAM_FIELDS = frozenset({"latency_buckets", *PAIRED_HISTOGRAMS})


def merged_buckets(rollups: QuerySet, field: str) -> dict[str, dict[int, int]]:
    """One histogram field summed per served version, in the database (one row per
    version and bucket comes back, however many hours are merged)."""
    if field not in _HISTOGRAM_FIELDS:
        raise ValueError(f"not a histogram field: {field}")
    each = "jsonb_each_text" if connection.vendor == "postgresql" else "json_each"
    value = "value::bigint" if connection.vendor == "postgresql" else "value"
    sql, params = rollups.values("id").query.sql_with_params()
    table = ExecutionRollup._meta.db_table
    merged: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.served_version, b.key, SUM(b.{value}) "  # noqa: S608 - fixed identifiers
            f"FROM {table} r, {each}(r.{field}) b "
            f"WHERE r.id IN ({sql}) GROUP BY r.served_version, b.key",
            params,
        )
        for version, key, count in cursor.fetchall():
            merged[version][int(key)] += int(count)
    return merged


def paired_complete(rollups: QuerySet) -> bool:
    """Whether every hour in ``rollups`` carries paired outcomes (see ``backfill_paired``)."""
    return not rollups.filter(**{f"{PAIRED_MARKER}__isnull": True}).exists()


def paired_totals(rollups: QuerySet) -> dict[str, int]:
    """The paired outcome counts summed over the hours (both served versions)."""
    row = rollups.aggregate(**{name: Sum(name) for name in PAIRED_COUNTS})
    return {name: row[name] or 0 for name in PAIRED_COUNTS}


def merged_changes(rollups: QuerySet) -> dict[tuple[Any, ...], int]:
    """Decision changes summed over the hours, keyed like ``columns.CHANGE_KEYS``."""
    merged: dict[tuple[Any, ...], int] = defaultdict(int)
    for changes in rollups.exclude(changes=[]).values_list("changes", flat=True):
        for *key, count in changes or ():
            merged[change_key(*key)] += count
    return merged


def change_key(
    v1_rule: Any, v2_rule: Any, v1_output: Any, v2_output: Any, v1_success: Any, v2_success: Any
) -> tuple[Any, ...]:
    """A hashable key for one kind of decision change (outputs are JSON values)."""
    return (
        v1_rule or "",
        v2_rule or "",
        orjson.dumps(v1_output, option=orjson.OPT_SORT_KEYS),
        orjson.dumps(v2_output, option=orjson.OPT_SORT_KEYS),
        v1_success,
        v2_success,
    )


def raw_histogram(*, logs: Any, bucket: Any = None) -> dict[str, dict[int, int]]:
    """Per served version, the rows of ``logs`` counted by ``bucket`` (latency by default)."""
    histogram: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    rows = (
        logs.annotate(bucket=bucket if bucket is not None else bucket_expression())
        .values("served_version", "bucket")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        histogram[row["served_version"]][int(row["bucket"])] += row["n"]
    return histogram


def added(*histograms: Iterable[tuple[int, int]] | dict[int, int]) -> dict[int, int]:
    """The bucket-wise sum of histograms."""
    total: dict[int, int] = defaultdict(int)
    for histogram in histograms:
        items = histogram.items() if isinstance(histogram, dict) else histogram
        for index, count in items:
            total[index] += count
    return total


def histogram_percentile(
    buckets: dict[int, int],
    total: int,
    fraction: float,
    value: Callable[[int], float] = bucket_value,
) -> float:
    """percentile_cont's definition on the histogram.

    The rows at ranks floor and ceil of ``fraction * (total - 1)`` are each known
    to within 1% (their bucket's midpoint); they are interpolated as
    percentile_cont interpolates, so the result is within 1% too.
    """
    rank = fraction * (total - 1)
    low, high = math.floor(rank), math.ceil(rank)
    low_value = histogram_order_statistic(buckets, low + 1, value)
    high_value = histogram_order_statistic(buckets, high + 1, value)
    return low_value + (high_value - low_value) * (rank - low)


def histogram_order_statistic(
    buckets: dict[int, int], rank: int, value: Callable[[int], float] = bucket_value
) -> float:
    """The ``rank``-th smallest value (1-based), within 1%: its bucket's midpoint."""
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return value(index)
    return value(max(buckets))
