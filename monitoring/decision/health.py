"""Selectors that assemble the measurement answers for one deployment."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from assignments.buffer import drain_now
from deployments.models import Deployment
from monitoring.decision import readiness as promotion_readiness
from monitoring.decision.decisions import Judged, bake_running, decision_make, decision_read
from monitoring.decision.metric_checks import metric_check_warnings
from monitoring.decision.selectors import latency_sample_deterministic, version_stats
from monitoring.decision.shadow import (
    disagreement_count,
    paired_counts,
    paired_latency_direction,
    paired_latency_ratio,
    shadow_changes,
    shadow_differences,
)
from monitoring.statistics import analysis, paired
from monitoring.statistics.comparison import compare

# Unpaired latency samples per version: the rank interval compares every pair of
# the two samples (a million differences at 1,000 each).
UNPAIRED_SAMPLE = 1_000


def deployment_metrics(*, deployment: Deployment, window_minutes: int | None) -> dict[str, Any]:
    drain_now()
    now = timezone.now()
    since = now - timedelta(minutes=window_minutes) if window_minutes else deployment.started_at
    stats = version_stats(deployment_id=deployment.pk, since=since)
    return {
        "deployment_id": str(deployment.pk),
        "v1_metrics": stats["v1"].as_dict() if stats["v1"] else None,
        "v2_metrics": stats["v2"].as_dict() if stats["v2"] else None,
        "window": {
            "window_minutes": window_minutes,
            "since": since.isoformat() if since else None,
            "until": now.isoformat(),
        },
    }


def deployment_comparison(
    *,
    deployment: Deployment,
    window_minutes: int | None,
    with_latency: bool = True,
    judged: Judged | None = None,
) -> dict[str, Any]:
    """Repeatable: exact counts and percentiles, and latency samples picked by id hash.

    ``with_latency=False`` leaves out the latency test (the paired latency ratio reads every
    pair of the window): the console's home shows error rates and the decision only.
    ``judged``: the decision to answer with (the console passes the monitor's stored one);
    by default it is made as of now, as the API answers.
    """
    drain_now()
    now = timezone.now()
    since = now - timedelta(minutes=window_minutes) if window_minutes else deployment.started_at
    stats = version_stats(deployment_id=deployment.pk, since=since, until=now)
    pairs = paired_counts(deployment_id=deployment.pk, since=since, until=now)
    given = judged is not None
    if judged is None:
        judged = decision_make(deployment=deployment, now=now)
    if not with_latency:
        latency = None
    elif pairs.pairs:
        ratio = paired_latency_ratio(deployment_id=deployment.pk, since=since, until=now)
        above, below = paired_latency_direction(deployment_id=deployment.pk, since=since, until=now)
        latency = analysis.paired_latency_test(ratio, above, below)
    elif stats["v1"] and stats["v2"]:
        latency = analysis.latency_test(
            latency_sample_deterministic(
                deployment_id=deployment.pk, version="v1", since=since, limit=UNPAIRED_SAMPLE
            ),
            latency_sample_deterministic(
                deployment_id=deployment.pk, version="v2", since=since, limit=UNPAIRED_SAMPLE
            ),
        )
    else:
        latency = None
    answer = compare(
        v1=stats["v1"],
        v2=stats["v2"],
        pairs=pairs,
        latency=latency,
        evidence=judged.evidence,
        decision=judged.decision,
        config=deployment.canary_config,
    )
    return {
        "deployment_id": str(deployment.pk),
        **answer,
        "decision": {
            **judged.freshness(),
            "source": judged.source,
            "stale_decided_at": judged.stale_decided_at,
        }
        if given
        else judged.freshness(),
        "v1_metrics": stats["v1"].as_dict() if stats["v1"] else None,
        "v2_metrics": stats["v2"].as_dict() if stats["v2"] else None,
        "window": {
            "window_minutes": window_minutes,
            "since": since.isoformat() if since else None,
            "until": now.isoformat(),
        },
    }


def deployment_health(*, deployment: Deployment, judged: Judged | None = None) -> dict[str, Any]:
    """Health is the decision's (SPEC 9.6): ``unhealthy`` exactly when it says roll back.

    ``judged`` as in ``deployment_comparison``: the console's stored decision.
    """
    drain_now()
    now = timezone.now()
    config = analysis.with_defaults(deployment.canary_config)
    if judged is None:
        judged = decision_make(deployment=deployment, now=now)
    decision = judged.decision
    warnings = list(decision.reasons)
    breaker_state = decision.breaker_state
    if breaker_state == "OPEN":
        warnings.append(
            "The circuit breaker is OPEN: v2 failed repeatedly, so every request goes to v1 "
            f"until the {config['breaker_cooldown_seconds']} s cooldown ends."
        )
    elif breaker_state == "UNKNOWN":
        warnings.append(
            "The circuit breaker's state cannot be read (Redis is unreachable): requests "
            "are routed from PostgreSQL and the breaker counts nothing until Redis returns."
        )
    elif breaker_state == "HALF_OPEN":
        warnings.append(
            "The circuit breaker is HALF_OPEN: single trial requests are testing v2 again."
        )
    if decision.held is not None:
        warnings.insert(
            0,
            f"regression_held: the monitor found a rollback rule breached at "
            f"{decision.held.detected_at} and automatic rollback is off; roll back, or dismiss "
            "it with a reason (POST .../dismiss-regression).",
        )
    warnings.extend(w for w in decision.warnings if w not in warnings)
    warnings.extend(filter(None, [promotion_readiness.stale_warning(deployment, now)]))
    warnings.extend(metric_check_warnings(deployment=deployment))
    status = decision.health_status
    if status in ("healthy", "no_data") and warnings:
        status = "degraded"  # a stale canary, an unreadable breaker: worth a look
    v2_now = judged.evidence.v2_5m
    bake = bake_running(deployment=deployment, now=now)
    return {
        "deployment_id": str(deployment.pk),
        "health_status": status,
        "circuit_breaker_state": breaker_state,
        "current_error_rate": v2_now.error_rate if v2_now else None,
        "current_success_rate": v2_now.success_rate if v2_now else None,
        "last_check_at": now.isoformat(),
        "warnings": warnings,
        "dark_launch": deployment.status == "canary" and deployment.traffic_percentage == 0,
        "recommendation": decision.recommendation,
        "decision": judged.freshness(),
        # SPEC 10.3: promoted, and still judged against the previous version in shadow.
        "baking": bake is not None,
        "bake_ends_at": bake.ends_at.isoformat() if bake is not None else None,
    }


def deployment_shadow(
    *, deployment: Deployment, window_minutes: int | None, since: datetime | None = None
) -> dict[str, Any]:
    """Paired evaluation of v2 beside v1 on the same inputs (SPEC 9.1); ``since`` overrides
    the window (the bake after a promotion: its pairs alone)."""
    drain_now()
    now = timezone.now()
    if since is None:
        since = now - timedelta(minutes=window_minutes) if window_minutes else deployment.started_at
    counts = paired_counts(deployment_id=deployment.pk, since=since, until=now)
    disagreed = counts.pairs - counts.agreed
    test = paired.mcnemar(counts.only_v1_failed, counts.only_v2_failed)
    ratio = paired_latency_ratio(deployment_id=deployment.pk, since=since, until=now)
    return {
        "deployment_id": str(deployment.pk),
        "dark_launch": deployment.status == "canary" and deployment.traffic_percentage == 0,
        "shadow_percentage": analysis.with_defaults(deployment.canary_config)["shadow_percentage"],
        "evaluated": counts.pairs,
        "agreed": counts.agreed,
        "disagreed": disagreed,
        "disagreement_rate": disagreed / counts.pairs if counts.pairs else None,
        "disagreement_rate_ci": paired.wilson_interval(disagreed, counts.pairs),
        "outcomes": {
            "both_succeeded": counts.both_succeeded,
            "only_v1_failed": counts.only_v1_failed,
            "only_v2_failed": counts.only_v2_failed,
            "both_failed": counts.both_failed,
        },
        "mcnemar": {
            "statistic": test["statistic"],
            "p_value": test["p_value"],
            "worse": test["worse"],
        },
        "latency": {
            "pairs": ratio["pairs"],
            "v2_over_v1_median_ratio": ratio["v2_over_v1_median_ratio"],
            "ci": ratio["ci"],
        },
        "changes": shadow_changes(deployment_id=deployment.pk, since=since),
        "window": {
            "window_minutes": window_minutes,
            "since": since.isoformat() if since else None,
            "until": now.isoformat(),
        },
    }


def shadow_differences_page(
    *, deployment: Deployment, window_minutes: int | None
) -> tuple[Any, int]:
    """The queryset of disagreeing executions for the view to paginate, and how many
    there are (from the paired counts, which rollups answer for long windows)."""
    drain_now()
    since = (
        timezone.now() - timedelta(minutes=window_minutes)
        if window_minutes
        else deployment.started_at
    )
    total = disagreement_count(deployment_id=deployment.pk, since=since)
    return shadow_differences(deployment_id=deployment.pk, since=since), total


def deployment_bake(*, deployment: Deployment) -> dict[str, Any] | None:
    """The console's bake panel (SPEC 10.3): until when, against which version, and the
    pairs since the promotion with the one decision on them; None when not baking."""
    now = timezone.now()
    bake = bake_running(deployment=deployment, now=now)
    if bake is None:
        return None
    previous = (
        Deployment.objects.filter(pk=bake.previous_id)
        .values_list("version__version", flat=True)
        .first()
    )
    judged = decision_read(deployment=deployment, now=now)  # the monitor's, while fresh
    return {
        "started_at": bake.started_at,
        "ends_at": bake.ends_at,
        "previous_deployment_id": str(bake.previous_id),
        "previous_version": previous,
        "recommendation": judged.decision.recommendation,
        "health_status": judged.decision.health_status,
        "reasons": list(judged.decision.reasons or judged.decision.warnings),
        "shadow": deployment_shadow(
            deployment=deployment, window_minutes=None, since=bake.started_at
        ),
    }
