"""Readiness to promote (SPEC 9.3) and staleness, read from the canary's evidence.

The promote service asks ``readiness_gate`` under its row locks; the API, the
console and the monitor's governance all read the same ``readiness_evaluate``.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from assignments.buffer import drain_now
from deployments.choices import DeploymentStatus
from deployments.hooks import ReadinessVerdict
from deployments.models import Deployment
from deployments.selectors import deployment_pending_approvers
from monitoring.breaker.store import breaker_state_for
from monitoring.decision.metric_checks import metric_readiness_checks
from monitoring.decision.selectors import sample_ratio, traffic_steps, traffic_strata, version_stats
from monitoring.decision.shadow import paired_counts, paired_latency_p95
from monitoring.statistics import analysis, paired, readiness
from monitoring.statistics.analysis import Evidence
from monitoring.statistics.decision import non_inferiority, v2_worse
from monitoring.statistics.readiness import ReadinessEvidence

logger = logging.getLogger(__name__)

UNPAIRED_TEST = "one-sided two-proportion test, unpaired (too few paired inputs)"
PAIRED_TEST = "one-sided exact McNemar test on the same inputs (paired evaluation)"
STALE_CODE = "stale_canary"


# --- readiness ----------------------------------------------------------------------


def traffic_history(*, deployment: Deployment, until: datetime) -> list[tuple[datetime, int]]:
    """``(at, percentage)`` of every traffic change of the canary, oldest first."""
    return traffic_steps(deployment, until=until)


def readiness_evidence(*, deployment: Deployment, now: datetime) -> ReadinessEvidence:
    """The evidence over the whole canary so far (the same data ``/comparison`` judges).

    Paired outcomes (both versions on the same inputs) are used whenever there are
    ``min_samples`` of them, with the p95s of the same inputs; otherwise the served
    populations are compared. ``success_rate`` passes on the one decision's promote
    evidence: v2 shown within the non-inferiority margin of v1, always valid.
    """
    config = analysis.with_defaults(deployment.canary_config)
    since = deployment.started_at
    stats = version_stats(deployment_id=deployment.pk, since=since, until=now)
    v1, v2 = stats["v1"], stats["v2"]
    pairs = paired_counts(deployment_id=deployment.pk, since=since, until=now)
    worse_p, test_name = None, UNPAIRED_TEST
    if pairs.pairs >= int(config["min_samples"]):
        _, worse_p = paired.v2_fails_more_paired(pairs, level=0.0)
        test_name = PAIRED_TEST
        p95 = paired_latency_p95(deployment_id=deployment.pk, since=since, until=now)
        if p95 is not None and v1 is not None and v2 is not None:
            v1 = dataclasses.replace(v1, p95_latency_ms=p95[0])
            v2 = dataclasses.replace(v2, p95_latency_ms=p95[1])
    elif v1 is not None and v2 is not None:
        test = analysis.error_rate_test(v1, v2)
        # The p-value belongs to the adjusted difference: its sign decides the side.
        worse_p = readiness.one_sided_worse_p_value(test["p_value"], test["adjusted_difference"])
    # The promote evidence of the one decision (SPEC 9.6): non-inferiority, always valid.
    judged_on = Evidence(
        pairs_since_start=pairs,
        pairs_10m=pairs,
        strata=() if pairs.pairs else traffic_strata(deployment, until=now),
    )
    started = readiness.stretch_started_at(traffic_history(deployment=deployment, until=now))
    ratio = sample_ratio(deployment)
    return ReadinessEvidence(
        v1=v1,
        v2=v2,
        v2_worse_p_value=worse_p,
        v2_worse_test=test_name,
        breaker_state=breaker_state_for(deployment_id=deployment.pk, canary_config=config),
        minutes_at_traffic=(now - started).total_seconds() / 60 if started else None,
        readiness_minutes=int(config["readiness_minutes"]),
        min_samples=int(config["min_samples"]),
        latency_floor_ms=float(config["latency_floor_ms"]),
        sample_ratio_p_value=ratio["p_value"] if ratio else None,
        shadow_agreement_rate=pairs.agreed / pairs.pairs if pairs.pairs else None,
        non_inferiority=non_inferiority(judged_on, config),
        v2_worse=v2_worse(judged_on, config),
    )


def readiness_evaluate(*, deployment: Deployment, now: datetime) -> readiness.Readiness:
    verdict = readiness.readiness_checks(readiness_evidence(deployment=deployment, now=now))
    return _with_metric_checks(verdict, metric_readiness_checks(deployment=deployment))


def _with_metric_checks(
    verdict: readiness.Readiness, metrics: list[readiness.Check]
) -> readiness.Readiness:
    """Each metric check is a required ``metric:<name>`` check (SPEC 10.1)."""
    if not metrics:
        return verdict
    return readiness.Readiness(
        ready=verdict.ready and all(check.passed for check in metrics),
        checks=(*verdict.checks, *metrics),
    )


def deployment_readiness(*, deployment: Deployment, now: datetime | None = None) -> dict[str, Any]:
    """The readiness endpoint's answer; only a running canary can be ready."""
    drain_now()
    now = now or timezone.now()
    answer: dict[str, Any] = {
        "deployment_id": str(deployment.pk),
        "status": deployment.status,
        "enforce_readiness": bool(deployment.canary_config.get("enforce_readiness", False)),
        "required_approvals": int(deployment.canary_config.get("required_approvals", 1)),
        "approved_by": deployment_pending_approvers(deployment=deployment),
        "checked_at": now.isoformat(),
    }
    if deployment.status != DeploymentStatus.CANARY:
        return {
            **answer,
            "ready": False,
            "checks": [],
            "detail": f"Readiness applies to a running canary; this deployment is "
            f"{deployment.status}.",
        }
    verdict = readiness_evaluate(deployment=deployment, now=now)
    return {**answer, **verdict.as_dict(), "detail": summary(verdict)}


def summary(verdict: readiness.Readiness) -> str:
    if verdict.ready:
        return "Every required check passes: the canary is ready to promote."
    failed = [check.name for check in verdict.checks if check.required and not check.passed]
    return "Not ready: " + ", ".join(failed) + "."


def readiness_gate(deployment: Deployment, now: datetime) -> ReadinessVerdict:
    """The promote service's hook (under its row locks: reads only)."""
    verdict = readiness_evaluate(deployment=deployment, now=now)
    return ReadinessVerdict(
        ready=verdict.ready, checks=[check.as_dict() for check in verdict.checks]
    )


def settle() -> None:
    drain_now()


# --- stale canaries -------------------------------------------------------------------


def stale_days(deployment: Deployment, now: datetime) -> int | None:
    """Whole days the canary has run when that is longer than ``CANARY_STALE_DAYS``, else None."""
    if deployment.status != DeploymentStatus.CANARY or deployment.started_at is None:
        return None
    age = now - deployment.started_at
    if age <= timedelta(days=settings.CANARY_STALE_DAYS):
        return None
    return age.days


def stale_warning(deployment: Deployment, now: datetime) -> str | None:
    """The ``stale_canary`` health warning; the string starts with its code."""
    days = stale_days(deployment, now)
    if days is None:
        return None
    return (
        f"{STALE_CODE}: the canary has run {days} days (since "
        f"{deployment.started_at:%Y-%m-%d %H:%M} UTC), longer than the "
        f"{settings.CANARY_STALE_DAYS}-day limit (CANARY_STALE_DAYS); promote it or roll it back."
    )
