"""Per-version statistics computed by the database, never by loading every row.

Percentiles follow PostgreSQL's ``percentile_cont``: the value at fractional rank
``p * (n - 1)`` of the sorted latencies, interpolated linearly between the two
nearest rows. PostgreSQL computes it natively; on SQLite the same definition is
evaluated with two ordered single-row queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    BigIntegerField,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    Q,
    QuerySet,
    Sum,
)
from django.utils import timezone

from monitoring.logstore import columns, rollups
from monitoring.models import ExecutionLog
from monitoring.statistics import paired
from monitoring.statistics.analysis import Evidence, VersionStats
from monitoring.statistics.paired import PairedCounts

VERSIONS = ("v1", "v2")
LATENCY_SAMPLE_SIZE = 5_000


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


def version_stats(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> dict[str, VersionStats | None]:
    """``{"v1": ..., "v2": ...}``; a version with no requests in the window is None.

    Windows longer than ``rollups.LONG_WINDOW`` that rollups already cover are
    answered from them (percentiles within 1%); others exactly from the rows.
    """
    span = _span(deployment_id, since, until)
    if span.hours is None:
        return _exact_stats(deployment_id, since, until)
    return _rolled_up_stats(span)


def _rolled_up_stats(span: _Span) -> dict[str, VersionStats | None]:
    assert span.hours is not None
    totals = {
        row["served_version"]: row
        for row in span.hours.values("served_version")
        .annotate(total=Sum("total"), errors=Sum("errors"), latency_sum=Sum("latency_sum"))
        .order_by()
    }
    rolled_buckets = rollups.merged_buckets(span.hours, "latency_buckets") if totals else {}
    raw = {
        row["served_version"]: row
        for row in span.raw.values("served_version")
        .annotate(
            total=Count("id"),
            errors=Count("id", filter=Q(success=False)),
            latency_sum=Sum("latency_ms"),
        )
        .order_by()
    }
    raw_buckets = rollups.raw_histogram(logs=span.raw) if raw else {}
    result: dict[str, VersionStats | None] = dict.fromkeys(VERSIONS)
    for version in VERSIONS:
        parts = [part for part in (totals.get(version), raw.get(version)) if part]
        total = sum(part["total"] for part in parts)
        if total == 0:
            continue
        errors = sum(part["errors"] for part in parts)
        latency_sum = sum(part["latency_sum"] or 0.0 for part in parts)
        buckets = rollups.added(rolled_buckets.get(version, {}), raw_buckets.get(version, {}))
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


# --- paired (shadow) evaluation ------------------------------------------------------


def _paired_window(deployment_id: Any, since: datetime | None, until: datetime | None) -> QuerySet:
    return _window(deployment_id, since, until).filter(columns.PAIRED)


def paired_counts(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> PairedCounts:
    """How both versions fared on the same inputs in the window (exact, from rollups
    for the whole hours of a long window)."""
    span = _span(deployment_id, since, until, paired=True)
    row = span.raw.filter(columns.PAIRED).aggregate(
        both_succeeded=Count("id", filter=columns.BOTH_SUCCEEDED),
        only_v1_failed=Count("id", filter=columns.V1_ONLY_FAILED),
        only_v2_failed=Count("id", filter=columns.V2_ONLY_FAILED),
        both_failed=Count("id", filter=columns.BOTH_FAILED),
        agreed=Count("id", filter=Q(agreed=True)),
    )
    if span.hours is not None:
        rolled = rollups.paired_totals(span.hours)
        for name in row:
            row[name] += rolled[f"pairs_{name}"]
    return PairedCounts(**row)


def disagreement_count(*, deployment_id: Any, since: datetime | None = None) -> int:
    """How many rows ``shadow_differences`` holds, without counting them one by one."""
    counts = paired_counts(deployment_id=deployment_id, since=since)
    return counts.pairs - counts.agreed


def _side_histograms(span: _Span) -> tuple[dict[int, int], dict[int, int]]:
    """(v1, v2) latency histograms over the span's pairs, each side measured on the
    same inputs: v1's side is the served latency of rows v1 served and the shadow
    latency of rows v2 served."""
    timed = span.raw.filter(columns.PAIRED, shadow_latency_ms__isnull=False)
    served = rollups.raw_histogram(logs=timed)
    shadow = rollups.raw_histogram(logs=timed, bucket=columns.latency_bucket("shadow_latency_ms"))
    assert span.hours is not None
    served_hours = rollups.merged_buckets(span.hours, "paired_latency_buckets")
    shadow_hours = rollups.merged_buckets(span.hours, "shadow_latency_buckets")
    sides = []
    for version, other in (("v1", "v2"), ("v2", "v1")):
        sides.append(
            rollups.added(
                served.get(version, {}),
                served_hours.get(version, {}),
                shadow.get(other, {}),
                shadow_hours.get(other, {}),
            )
        )
    return sides[0], sides[1]


def paired_latency_p95(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> tuple[float, float] | None:
    """(v1 p95, v2 p95) over the window's pairs, each measured on the same inputs."""
    span = _span(deployment_id, since, until, paired=True)
    if span.hours is not None:
        v1_side, v2_side = _side_histograms(span)
        total = sum(v1_side.values())
        if not total:
            return None
        return (
            rollups.histogram_percentile(v1_side, total, 0.95),
            rollups.histogram_percentile(v2_side, total, 0.95),
        )
    logs = _paired_window(deployment_id, since, until).filter(shadow_latency_ms__isnull=False)
    v1 = columns.side("v1", F("latency_ms"), F("shadow_latency_ms"), FloatField())
    v2 = columns.side("v2", F("latency_ms"), F("shadow_latency_ms"), FloatField())
    if connection.vendor == "postgresql":
        row = logs.aggregate(
            n=Count("id"), v1=PercentileCont(v1, 0.95), v2=PercentileCont(v2, 0.95)
        )
        return None if not row["n"] else (float(row["v1"]), float(row["v2"]))
    pairs = list(logs.annotate(a=v1, b=v2).values_list("a", "b"))
    if not pairs:
        return None
    return (
        _percentile_of(sorted(a for a, _ in pairs), 0.95),
        _percentile_of(sorted(b for _, b in pairs), 0.95),
    )


def _percentile_of(values: list[float], fraction: float) -> float:
    rank = fraction * (len(values) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def paired_latency_ratio(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Median of v2/v1 latency per pair, with a distribution-free 95% interval.

    The interval's ends are order statistics (``paired.median_ci_ranks``), so the
    answer is the same on every call: exact over up to ``RATIO_EXACT_PAIRS`` raw
    pairs, otherwise within 1% (the ratio histogram's bucket).
    """
    span = _span(deployment_id, since, until, paired=True)
    if span.hours is not None:
        return _rolled_up_latency_ratio(span)
    logs = _paired_window(deployment_id, since, until).filter(columns.TIMED_PAIR)
    ratio = columns.latency_ratio()
    # One grouped pass counts the pairs and, for a large window, is the answer.
    ratios = rollups.raw_histogram(logs=logs, bucket=columns.ratio_bucket())
    n = sum(sum(histogram.values()) for histogram in ratios.values())
    answer: dict[str, Any] = {"pairs": n, "v2_over_v1_median_ratio": None, "ci": None}
    if n == 0:
        return answer
    if n > RATIO_EXACT_PAIRS:
        return _ratio_from_histogram(ratios)
    ranks = paired.median_ci_ranks(n)
    if connection.vendor == "postgresql":
        aggregates: dict[str, Any] = {"median": PercentileCont(ratio, 0.5)}
        if ranks:
            # percentile_disc(f) is the value at rank ceil(f * n); (r - 0.5) / n is rank r.
            aggregates["low"] = PercentileDisc(ratio, (ranks[0] - 0.5) / n)
            aggregates["high"] = PercentileDisc(ratio, (ranks[1] - 0.5) / n)
        row = logs.aggregate(**aggregates)
        answer["v2_over_v1_median_ratio"] = float(row["median"])
        if ranks:
            answer["ci"] = [float(row["low"]), float(row["high"])]
        return answer
    values = sorted(logs.annotate(r=ratio).values_list("r", flat=True))
    answer["v2_over_v1_median_ratio"] = _percentile_of(values, 0.5)
    if ranks:
        answer["ci"] = [values[ranks[0] - 1], values[ranks[1] - 1]]
    return answer


def _rolled_up_latency_ratio(span: _Span) -> dict[str, Any]:
    assert span.hours is not None
    raw = rollups.raw_histogram(
        logs=span.raw.filter(columns.PAIRED, columns.TIMED_PAIR), bucket=columns.ratio_bucket()
    )
    return _ratio_from_histogram(raw, rollups.merged_buckets(span.hours, "ratio_buckets"))


def _ratio_from_histogram(*per_version: dict[str, dict[int, int]]) -> dict[str, Any]:
    """The median ratio and its order-statistic interval, each within 1% (its bucket)."""
    buckets = rollups.added(*(h for histogram in per_version for h in histogram.values()))
    n = sum(buckets.values())
    answer: dict[str, Any] = {"pairs": n, "v2_over_v1_median_ratio": None, "ci": None}
    if n == 0:
        return answer
    value = columns.ratio_bucket_value
    answer["v2_over_v1_median_ratio"] = rollups.histogram_percentile(buckets, n, 0.5, value)
    ranks = paired.median_ci_ranks(n)
    if ranks:
        answer["ci"] = [rollups.histogram_order_statistic(buckets, rank, value) for rank in ranks]
    return answer


# Above this many pairs in a raw window the ratio's median and interval come from
# the ratio histogram (one grouped pass) instead of sorting every ratio.
RATIO_EXACT_PAIRS = 200_000


def shadow_changes(
    *, deployment_id: Any, since: datetime | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """The most frequent decision changes: (v1 rule, output) -> (v2 rule, output), counted."""
    span = _span(deployment_id, since, None, paired=True)
    merged = rollups.merged_changes(span.hours) if span.hours is not None else {}
    merged = dict(merged)
    grouped = (
        span.raw.filter(columns.PAIRED, agreed=False)
        .annotate(**columns.pair_sides())
        .values(*columns.CHANGE_KEYS)
        .annotate(count=Count("id"))
        .order_by()
    )
    for row in grouped:
        key = rollups.change_key(
            *(
                rollups.decoded_json(row[name]) if "output" in name else row[name]
                for name in columns.CHANGE_KEYS
            )
        )
        merged[key] = merged.get(key, 0) + row["count"]
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0][0], item[0][1], item[0]))
    return [
        {
            "v1_rule": v1_rule or None,
            "v2_rule": v2_rule or None,
            "v1_output": orjson.loads(v1_output),
            "v2_output": orjson.loads(v2_output),
            "v1_success": v1_success,
            "v2_success": v2_success,
            "count": count,
        }
        for (v1_rule, v2_rule, v1_output, v2_output, v1_success, v2_success), count in ranked[
            :limit
        ]
    ]


def shadow_differences(*, deployment_id: Any, since: datetime | None = None) -> QuerySet:
    """The executions whose versions disagreed, newest first, with both sides annotated."""
    return (
        _paired_window(deployment_id, since, None)
        .filter(agreed=False)
        .annotate(**columns.pair_sides())
        .order_by("-created_at", "-id")
    )


def latency_sample_deterministic(
    *, deployment_id: Any, version: str, since: datetime | None, limit: int = LATENCY_SAMPLE_SIZE
) -> list[float]:
    """Up to ``limit`` latencies of ``version``, the same ones on every call.

    Rows are picked by a hash of their id (not by physical order or a fresh random
    draw), so the sample is spread over the whole window, identical for both
    versions' method, and repeatable.
    """
    logs = _window(deployment_id, since, None).filter(served_version=version)
    total = logs.count()
    if total <= limit:
        return list(logs.values_list("latency_ms", flat=True))
    # Keep about 1.25 x limit rows by id hash, then the first ``limit`` of them by that hash.
    modulus = 1_000_003
    keep = max(1, int(modulus * min(1.0, 1.25 * limit / total)))
    # A multiplicative hash modulo a prime: a fixed permutation of ids, within bigint.
    picked = logs.annotate(
        h=ExpressionWrapper(F("id") % modulus * 2654435761 % modulus, BigIntegerField())
    )
    return list(
        picked.filter(h__lt=keep).order_by("h", "id").values_list("latency_ms", flat=True)[:limit]
    )


def new_context_split(*, deployment_id: Any, since: datetime | None) -> tuple[int, int]:
    """(v2 contexts, all contexts) among the assignments made since ``since``."""
    from assignments.models import Assignment

    rows = Assignment.objects.filter(deployment_id=deployment_id)
    if since is not None:
        rows = rows.filter(assigned_at__gte=since)
    counts = rows.aggregate(total=Count("id"), v2=Count("id", filter=Q(assigned_version="v2")))
    return counts["v2"], counts["total"]


def step_started_at(deployment: Any) -> datetime | None:
    """When the current traffic step began: the canary's start or its last traffic change."""
    from deployments.choices import EventAction
    from deployments.models import DeploymentEvent

    event = (
        DeploymentEvent.objects.filter(
            deployment=deployment,
            action__in=[EventAction.START_CANARY, EventAction.SET_TRAFFIC],
        )
        .order_by("-created_at", "-id")
        .first()
    )
    return event.created_at if event else deployment.started_at


def sample_ratio(deployment: Any) -> dict[str, Any] | None:
    """v2's share of the contexts assigned since the current step began, tested (SPEC 9.2).

    None with a target filter: contexts outside it are pinned to v1 by design, so
    the planned share of all contexts is unknown.
    """
    if deployment.canary_target_filter:
        return None
    since = step_started_at(deployment)
    v2, total = new_context_split(deployment_id=deployment.pk, since=since)
    result = paired.sample_ratio_test(v2, total, deployment.traffic_percentage)
    result["since"] = since.isoformat() if since else None
    return result


def monitor_look(deployment: Any, now: datetime) -> int:
    """Which monitor look this is since the canary started (1 for the first run)."""
    from django.conf import settings

    if deployment.started_at is None:
        return 1
    interval = max(1.0, float(settings.CANARY_MONITOR_INTERVAL_SECONDS))
    elapsed = (now - deployment.started_at).total_seconds()
    return max(1, math.ceil(elapsed / interval))


def evidence_at(deployment: Any, now: datetime | None = None) -> Evidence:
    """What the monitor, health and comparison judge a canary on, at ``now``."""
    now = now or timezone.now()
    five_ago, ten_ago = now - timedelta(minutes=5), now - timedelta(minutes=10)
    five = version_stats(deployment_id=deployment.pk, since=five_ago, until=now)
    ten = version_stats(deployment_id=deployment.pk, since=ten_ago, until=now)
    pairs_5m = paired_counts(deployment_id=deployment.pk, since=five_ago, until=now)
    return Evidence(
        v1_5m=five["v1"],
        v2_5m=five["v2"],
        v1_10m=ten["v1"],
        v2_10m=ten["v2"],
        pairs_5m=pairs_5m,
        pairs_10m=paired_counts(deployment_id=deployment.pk, since=ten_ago, until=now),
        paired_p95_5m=paired_latency_p95(deployment_id=deployment.pk, since=five_ago, until=now)
        if pairs_5m.pairs
        else None,
        # A deployment's executions all belong to its canary: no lower bound needed.
        discordant_since_start=discordant_counts(deployment_id=deployment.pk, until=now),
        look=monitor_look(deployment, now),
        sample_ratio=sample_ratio(deployment),
    )


def discordant_counts(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> PairedCounts:
    """Only the pairs where exactly one version failed: over raw rows, among the few
    disagreeing ones the partial index holds; over rolled-up hours, from the rollups."""
    span = _span(deployment_id, since, until, paired=True)
    row = span.raw.filter(agreed=False).aggregate(
        only_v1_failed=Count("id", filter=columns.V1_ONLY_FAILED),
        only_v2_failed=Count("id", filter=columns.V2_ONLY_FAILED),
    )
    if span.hours is not None:
        rolled = rollups.paired_totals(span.hours)
        for name in row:
            row[name] += rolled[f"pairs_{name}"]
    return PairedCounts(only_v1_failed=row["only_v1_failed"], only_v2_failed=row["only_v2_failed"])


def paired_latency_direction(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> tuple[int, int]:
    """(pairs where v2 was slower, pairs where v2 was faster), for the sign test."""
    span = _span(deployment_id, since, until, paired=True)
    row = span.raw.filter(columns.PAIRED, shadow_latency_ms__isnull=False).aggregate(
        slower=Count("id", filter=columns.V2_SLOWER),
        faster=Count("id", filter=columns.V2_FASTER),
    )
    if span.hours is not None:
        rolled = rollups.paired_totals(span.hours)
        row["slower"] += rolled["pairs_v2_slower"]
        row["faster"] += rolled["pairs_v2_faster"]
    return row["slower"], row["faster"]


def minute_series(
    *, deployment_id: Any, since: datetime, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per minute and version: requests, errors, p95 latency and the paired outcomes,
    in one grouped query.

    Rows ``{"minute", "served_version", "total", "errors", "p95_latency_ms",
    "pairs", "disagreed"}`` ordered by minute; ``pairs`` counts the executions
    also evaluated by the other version (SPEC 9.1) and ``disagreed`` those whose
    two versions decided differently. Minutes without executions are absent. SQLite has no
    ``percentile_cont``: there the window's rows are read once and grouped here
    (the embedded database serves development traffic, not production volumes).
    """
    from django.db.models.functions import TruncMinute

    logs = _window(deployment_id, since, until).annotate(minute=TruncMinute("created_at"))
    if connection.vendor != "postgresql":
        return _minute_series_in_python(logs)
    rows = (
        logs.values("minute", "served_version")
        .annotate(
            total=Count("id"),
            errors=Count("id", filter=Q(success=False)),
            p95_latency_ms=PercentileCont("latency_ms", 0.95),
            pairs=Count("id", filter=Q(shadow_success__isnull=False)),
            disagreed=Count("id", filter=Q(agreed=False)),
        )
        .order_by("minute", "served_version")
    )
    return list(rows)


def _minute_series_in_python(logs: QuerySet) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, str], list[tuple[bool, float, bool | None, bool | None]]] = {}
    for minute, version, success, latency, shadow_success, agreed in logs.values_list(
        "minute", "served_version", "success", "latency_ms", "shadow_success", "agreed"
    ):
        groups.setdefault((minute, version), []).append((success, latency, shadow_success, agreed))
    return [
        {
            "minute": minute,
            "served_version": version,
            "total": len(outcomes),
            "errors": sum(1 for success, *_ in outcomes if not success),
            "p95_latency_ms": _percentile_of(sorted(row[1] for row in outcomes), 0.95),
            "pairs": sum(1 for row in outcomes if row[2] is not None),
            "disagreed": sum(1 for row in outcomes if row[3] is False),
        }
        for (minute, version), outcomes in sorted(groups.items())
    ]
