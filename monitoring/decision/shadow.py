"""Paired (shadow) reads: both versions on the same inputs, apart from per-version statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from django.db import connection
from django.db.models import Count, F, FloatField, Q, QuerySet

from monitoring.decision.windows import (
    PercentileCont,
    PercentileDisc,
    _percentile_of,
    _Span,
    _span,
    _window,
)
from monitoring.logstore import columns, rollups
from monitoring.statistics import paired
from monitoring.statistics.paired import PairedCounts


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
