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

import orjson
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    BigIntegerField,
    BooleanField,
    Case,
    CharField,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    JSONField,
    Q,
    QuerySet,
    Sum,
    When,
)
from django.utils import timezone

from monitoring import paired, rollups
from monitoring.analysis import Evidence, VersionStats
from monitoring.models import ExecutionLog
from monitoring.paired import PairedCounts

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


# --- paired (shadow) evaluation ------------------------------------------------------

_V2_ONLY_FAILED = Q(served_version="v2", success=False, shadow_success=True) | Q(
    served_version="v1", success=True, shadow_success=False
)
_V1_ONLY_FAILED = Q(served_version="v1", success=False, shadow_success=True) | Q(
    served_version="v2", success=True, shadow_success=False
)


def _side(version: str, served: Any, shadow: Any, output_field: Any = None) -> Case:
    """A column of ``version``'s side of a pair, whichever version was served."""
    return Case(
        When(served_version=version, then=served),
        default=shadow,
        output_field=output_field,
    )


def _paired_window(deployment_id: Any, since: datetime | None, until: datetime | None) -> QuerySet:
    return _window(deployment_id, since, until).filter(shadow_success__isnull=False)


def paired_counts(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> PairedCounts:
    """How both versions fared on the same inputs in the window (one query)."""
    row = _paired_window(deployment_id, since, until).aggregate(
        both_succeeded=Count("id", filter=Q(success=True, shadow_success=True)),
        only_v1_failed=Count("id", filter=_V1_ONLY_FAILED),
        only_v2_failed=Count("id", filter=_V2_ONLY_FAILED),
        both_failed=Count("id", filter=Q(success=False, shadow_success=False)),
        agreed=Count("id", filter=Q(agreed=True)),
    )
    return PairedCounts(**row)


def paired_latency_p95(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> tuple[float, float] | None:
    """(v1 p95, v2 p95) over the window's pairs, each measured on the same inputs."""
    logs = _paired_window(deployment_id, since, until).filter(shadow_latency_ms__isnull=False)
    v1 = _side("v1", F("latency_ms"), F("shadow_latency_ms"), FloatField())
    v2 = _side("v2", F("latency_ms"), F("shadow_latency_ms"), FloatField())
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
    answer is exact and the same on every call.
    """
    logs = _paired_window(deployment_id, since, until).filter(
        shadow_latency_ms__gt=0, latency_ms__gt=0
    )
    ratio = ExpressionWrapper(
        _side("v2", F("latency_ms"), F("shadow_latency_ms"), FloatField())
        / _side("v1", F("latency_ms"), F("shadow_latency_ms"), FloatField()),
        output_field=FloatField(),
    )
    n = logs.count()
    answer: dict[str, Any] = {"pairs": n, "v2_over_v1_median_ratio": None, "ci": None}
    if n == 0:
        return answer
    if connection.vendor == "postgresql" and n > RATIO_SAMPLE_PAIRS:
        return _sampled_latency_ratio(deployment_id, since, until, n)
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


# Above this many pairs the ratio's median and interval come from a repeatable
# page sample (sorting tens of millions of ratios takes tens of seconds).
RATIO_SAMPLE_PAIRS = 200_000
RATIO_SAMPLE_SEED = 7


def _sampled_latency_ratio(
    deployment_id: Any, since: datetime | None, until: datetime | None, pairs: int
) -> dict[str, Any]:
    """The median ratio and its interval over a ``TABLESAMPLE SYSTEM ... REPEATABLE`` sample
    of about ``RATIO_SAMPLE_PAIRS`` pairs: the same pages on every call, so the answer is
    repeatable while the data is unchanged; the interval is the sample's."""
    percent = min(100.0, 100.0 * 1.5 * RATIO_SAMPLE_PAIRS / pairs)
    conditions = [
        "deployment_id = %s",
        "shadow_success IS NOT NULL",
        "latency_ms > 0",
        "shadow_latency_ms > 0",
    ]
    params: list[Any] = [percent, RATIO_SAMPLE_SEED, str(deployment_id)]
    if since is not None:
        conditions.append("created_at >= %s")
        params.append(since)
    if until is not None:
        conditions.append("created_at < %s")
        params.append(until)
    table = ExecutionLog._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r FROM (SELECT CASE WHEN served_version = 'v2' "  # noqa: S608 - fixed names
            "THEN latency_ms / shadow_latency_ms ELSE shadow_latency_ms / latency_ms END AS r "
            f"FROM {table} TABLESAMPLE SYSTEM (%s) REPEATABLE (%s) "
            f"WHERE {' AND '.join(conditions)}) AS sampled ORDER BY r",
            params,
        )
        values = [row[0] for row in cursor.fetchall()]
    answer: dict[str, Any] = {
        "pairs": pairs,
        "sampled_pairs": len(values),
        "v2_over_v1_median_ratio": None,
        "ci": None,
    }
    if values:
        answer["v2_over_v1_median_ratio"] = _percentile_of(values, 0.5)
        ranks = paired.median_ci_ranks(len(values))
        if ranks:
            answer["ci"] = [values[ranks[0] - 1], values[ranks[1] - 1]]
    return answer


def shadow_changes(
    *, deployment_id: Any, since: datetime | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """The most frequent decision changes: (v1 rule, output) -> (v2 rule, output), counted."""
    rows = (
        _paired_window(deployment_id, since, None)
        .filter(agreed=False)
        .annotate(**_pair_sides())
        .values("v1_rule", "v2_rule", "v1_output", "v2_output", "v1_success", "v2_success")
        .annotate(count=Count("id"))
        .order_by("-count", "v1_rule", "v2_rule")[:limit]
    )
    return [
        {
            "v1_rule": row["v1_rule"] or None,
            "v2_rule": row["v2_rule"] or None,
            "v1_output": _json_value(row["v1_output"]),
            "v2_output": _json_value(row["v2_output"]),
            "v1_success": row["v1_success"],
            "v2_success": row["v2_success"],
            "count": row["count"],
        }
        for row in rows
    ]


def _json_value(value: Any) -> Any:
    # Grouped JSON comes back as text on some backends.
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _pair_sides() -> dict[str, Any]:
    rule = {
        version: Case(
            When(served_version=version, success=True, then=F("matched_rule")),
            When(served_version=version, then=F("error_rule")),
            default=F("shadow_rule"),
            output_field=CharField(),
        )
        for version in VERSIONS
    }
    return {
        "v1_rule": rule["v1"],
        "v2_rule": rule["v2"],
        "v1_output": _side("v1", F("output"), F("shadow_output"), JSONField()),
        "v2_output": _side("v2", F("output"), F("shadow_output"), JSONField()),
        "v1_success": _side("v1", F("success"), F("shadow_success"), BooleanField()),
        "v2_success": _side("v2", F("success"), F("shadow_success"), BooleanField()),
    }


def shadow_differences(*, deployment_id: Any, since: datetime | None = None) -> QuerySet:
    """The executions whose versions disagreed, newest first, with both sides annotated."""
    return (
        _paired_window(deployment_id, since, None)
        .filter(agreed=False)
        .annotate(**_pair_sides())
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
    """Only the pairs where exactly one version failed: cheap over a whole canary, as
    they are among the few disagreeing rows the partial index holds."""
    row = (
        _window(deployment_id, since, until)
        .filter(agreed=False)
        .aggregate(
            only_v1_failed=Count("id", filter=_V1_ONLY_FAILED),
            only_v2_failed=Count("id", filter=_V2_ONLY_FAILED),
        )
    )
    return PairedCounts(only_v1_failed=row["only_v1_failed"], only_v2_failed=row["only_v2_failed"])


def paired_latency_direction(
    *, deployment_id: Any, since: datetime | None = None, until: datetime | None = None
) -> tuple[int, int]:
    """(pairs where v2 was slower, pairs where v2 was faster), for the sign test."""
    logs = _paired_window(deployment_id, since, until).filter(shadow_latency_ms__isnull=False)
    v2_slower = Q(served_version="v2", latency_ms__gt=F("shadow_latency_ms")) | Q(
        served_version="v1", shadow_latency_ms__gt=F("latency_ms")
    )
    v2_faster = Q(served_version="v2", latency_ms__lt=F("shadow_latency_ms")) | Q(
        served_version="v1", shadow_latency_ms__lt=F("latency_ms")
    )
    row = logs.aggregate(slower=Count("id", filter=v2_slower), faster=Count("id", filter=v2_faster))
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
