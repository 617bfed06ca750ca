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
from django.db.models import Avg, BigIntegerField, Count, ExpressionWrapper, F, Q, QuerySet, Sum
from django.utils import timezone

from monitoring.decision.shadow import paired_counts, paired_latency_p95
from monitoring.decision.windows import PercentileCont, _percentile_of, _Span, _span, _window
from monitoring.logstore import rollups
from monitoring.statistics import paired
from monitoring.statistics.analysis import Evidence, VersionStats

VERSIONS = ("v1", "v2")
LATENCY_SAMPLE_SIZE = 5_000


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


def monitor_look(deployment: Any, now: datetime, since: datetime | None = None) -> int:
    """Which monitor look this is since the canary (or ``since``) started (1 for the first)."""
    from django.conf import settings

    start = since or deployment.started_at
    if start is None:
        return 1
    interval = max(1.0, float(settings.CANARY_MONITOR_INTERVAL_SECONDS))
    elapsed = (now - start).total_seconds()
    return max(1, math.ceil(elapsed / interval))


def evidence_at(
    deployment: Any, now: datetime | None = None, *, since: datetime | None = None
) -> Evidence:
    """What the one decision judges a canary on, at ``now``.

    ``since``: only executions from then on (a bake after a promotion, SPEC 10.3: the
    promoted version served as v2, the previous one beside it in shadow as v1); the
    windows are cut there, and there are no traffic steps or new contexts to test.
    """
    now = now or timezone.now()
    if since is not None:
        return _evidence_since(deployment, now, since)
    five_ago, ten_ago = now - timedelta(minutes=5), now - timedelta(minutes=10)
    five = version_stats(deployment_id=deployment.pk, since=five_ago, until=now)
    ten = version_stats(deployment_id=deployment.pk, since=ten_ago, until=now)
    pairs_5m = paired_counts(deployment_id=deployment.pk, since=five_ago, until=now)
    # A deployment's executions all belong to its canary: no lower bound needed.
    since_start = paired_counts(deployment_id=deployment.pk, until=now)
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
        discordant_since_start=since_start,
        pairs_since_start=since_start,
        strata=() if since_start.pairs else traffic_strata(deployment, until=now),
        latency_samples_5m=latency_samples(
            deployment_id=deployment.pk, since=five_ago, until=now, paired=bool(since_start.pairs)
        ),
        look=monitor_look(deployment, now),
        sample_ratio=sample_ratio(deployment),
    )


def _evidence_since(deployment: Any, now: datetime, since: datetime) -> Evidence:
    five_ago = max(now - timedelta(minutes=5), since)
    ten_ago = max(now - timedelta(minutes=10), since)
    five = version_stats(deployment_id=deployment.pk, since=five_ago, until=now)
    ten = version_stats(deployment_id=deployment.pk, since=ten_ago, until=now)
    pairs_5m = paired_counts(deployment_id=deployment.pk, since=five_ago, until=now)
    since_start = paired_counts(deployment_id=deployment.pk, since=since, until=now)
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
        discordant_since_start=since_start,
        pairs_since_start=since_start,
        strata=(),
        latency_samples_5m=latency_samples(
            deployment_id=deployment.pk, since=five_ago, until=now, paired=True, floor=since
        ),
        look=monitor_look(deployment, now, since),
        sample_ratio=None,
    )


# The latency test reads at most this many executions of a window (the newest), and at
# least LATENCY_MIN_SAMPLE when the last 5 minutes hold fewer: at 20 observations above the
# p95 the bound has something to stand on, so at low traffic the window reaches back (at
# most LATENCY_MAX_LOOKBACK) until it holds that many.
LATENCY_SAMPLE_LIMIT = 20_000
LATENCY_MIN_SAMPLE = 400
LATENCY_MAX_LOOKBACK = timedelta(hours=1)


def latency_samples(
    *,
    deployment_id: Any,
    since: datetime,
    until: datetime,
    paired: bool,
    floor: datetime | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """(v1 latencies, v2 latencies, basis) of a window: on the pairs (both versions timed on
    the same inputs) when there are any, else each version's served requests. ``floor``:
    a thin window never reaches back before it."""
    if paired:
        fields: tuple[str, ...] = (
            "served_version",
            "latency_ms",
            "shadow_latency_ms",
            "created_at",
        )
        rows = _newest(deployment_id, since, until, fields, floor, shadow_latency_ms__isnull=False)
        if not rows:
            return None
        v1 = tuple(served if version == "v1" else other for version, served, other, _ in rows)
        v2 = tuple(other if version == "v1" else served for version, served, other, _ in rows)
        return v1, v2, f"paired, {len(rows):,} inputs{_reach(rows, since, until)}"
    rows = _newest(
        deployment_id, since, until, ("served_version", "latency_ms", "created_at"), floor
    )
    v1 = tuple(row[1] for row in rows if row[0] == "v1")
    v2 = tuple(row[1] for row in rows if row[0] == "v2")
    if not v1 or not v2:
        return None
    return v1, v2, f"served requests, {len(v1):,} v1 and {len(v2):,} v2{_reach(rows, since, until)}"


def _newest(
    deployment_id: Any,
    since: datetime,
    until: datetime,
    fields: tuple[str, ...],
    floor: datetime | None = None,
    **only: Any,
) -> list[Any]:
    """The window's rows (the newest LATENCY_SAMPLE_LIMIT), or, when it holds fewer than
    LATENCY_MIN_SAMPLE, the newest LATENCY_MIN_SAMPLE of the last LATENCY_MAX_LOOKBACK."""
    rows = list(
        _window(deployment_id, since, until)
        .filter(**only)
        .order_by("-created_at")
        .values_list(*fields)[:LATENCY_SAMPLE_LIMIT]
    )
    if len(rows) >= LATENCY_MIN_SAMPLE:
        return rows
    reach = until - LATENCY_MAX_LOOKBACK
    if floor is not None:
        reach = max(reach, floor)
    return list(
        _window(deployment_id, reach, until)
        .filter(**only)
        .order_by("-created_at")
        .values_list(*fields)[:LATENCY_MIN_SAMPLE]
    )


def _reach(rows: list[Any], since: datetime, until: datetime) -> str:
    oldest = min(row[-1] for row in rows)
    if oldest >= since:
        return ""
    return f" over the last {max(1, round((until - oldest).total_seconds() / 60))} minutes"


def traffic_steps(deployment: Any, *, until: datetime) -> list[tuple[datetime, int]]:
    """``(at, percentage)`` of the canary's start and every traffic change, oldest first."""
    from deployments.choices import EventAction
    from deployments.models import DeploymentEvent

    events = DeploymentEvent.objects.filter(
        deployment=deployment,
        action__in=[EventAction.START_CANARY, EventAction.SET_TRAFFIC],
        created_at__lte=until,
    ).order_by("created_at", "id")
    steps = []
    for at, action, payload in events.values_list("created_at", "action", "payload"):
        key = "traffic_percentage" if action == EventAction.START_CANARY else "to_traffic"
        if isinstance(payload.get(key), int):
            steps.append((at, payload[key]))
    return steps


def traffic_strata(deployment: Any, *, until: datetime) -> tuple[tuple[int, int, int, int], ...]:
    """Without pairs: (v1 errors, v1 requests, v2 errors, v2 requests) per traffic step, so
    a traffic change cannot fake a difference (Simpson's paradox; SPEC 9.6)."""
    steps = traffic_steps(deployment, until=until)
    starts = [at for at, _ in steps] or [deployment.started_at]
    strata = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else until
        stats = version_stats(deployment_id=deployment.pk, since=start, until=end)
        v1, v2 = stats["v1"], stats["v2"]
        strata.append(
            (
                v1.error_count if v1 else 0,
                v1.total_requests if v1 else 0,
                v2.error_count if v2 else 0,
                v2.total_requests if v2 else 0,
            )
        )
    return tuple(row for row in strata if row[1] or row[3])


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
    return _series(logs)


def _series(logs: Any) -> list[dict[str, Any]]:
    """Per ``minute`` (the bucket the caller annotated) and version: counts, p95, pairs."""
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


def hour_series(*, deployment_id: Any, since: datetime) -> list[dict[str, Any]]:
    """``minute_series`` per hour (the key stays ``minute``), for the hours not rolled up yet."""
    from django.db.models.functions import TruncHour

    logs = _window(deployment_id, since, None).annotate(minute=TruncHour("created_at"))
    return _series(logs)


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
