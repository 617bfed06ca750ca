"""The one decision about a canary, made from its evidence and the regression it holds.

``decision_make`` gathers the evidence (``selectors.evidence_at``), the breaker's state
and a held regression, and judges with ``statistics.decision.decide``. The monitor
stores what it decided (``decision_store``); the console reads that row while it is
fresh (``decision_read``) and decides itself only without one. The API's answers run
the same function on the evidence as of the request. Every test in
it is always valid, so however often anyone asks, the answer is the one the monitor
would give at that moment, never a peek that inflates false alarms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from deployments.models import Deployment
from deployments.selectors import BakeWindow, deployment_bake_window
from monitoring.breaker.store import breaker_state_for
from monitoring.decision.metric_checks import metric_breaches
from monitoring.decision.selectors import evidence_at
from monitoring.models import CanaryDecision, ExecutionLog
from monitoring.statistics.analysis import Evidence
from monitoring.statistics.decision import Decision, HeldRegression, decide


@dataclass(frozen=True)
class Judged:
    """A decision with the evidence it was made on and how fresh that evidence is."""

    decision: Decision
    evidence: Evidence
    decided_at: datetime
    newest_evidence_at: datetime | None
    # "computed" as of the request, or "monitor": the row the monitor stored.
    source: str = "computed"
    # Computed because the monitor's row was stale: when the monitor last decided.
    stale_decided_at: datetime | None = None

    def freshness(self) -> dict[str, Any]:
        age = (
            (self.decided_at - self.newest_evidence_at).total_seconds()
            if self.newest_evidence_at
            else None
        )
        return {
            "decided_at": self.decided_at.isoformat(),
            "newest_evidence_at": (
                self.newest_evidence_at.isoformat() if self.newest_evidence_at else None
            ),
            "evidence_age_seconds": round(age, 1) if age is not None else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.decision.as_dict(), **self.freshness()}


def held_regression(*, deployment_id: Any) -> HeldRegression | None:
    record = (
        CanaryDecision.objects.filter(pk=deployment_id, regression_detected_at__isnull=False)
        .values_list("regression_detected_at", "regression_reasons")
        .first()
    )
    if record is None:
        return None
    detected_at, reasons = record
    return HeldRegression(detected_at.isoformat(), tuple(reasons or ()))


def newest_execution_at(*, deployment_id: Any, until: datetime | None = None) -> datetime | None:
    logs = ExecutionLog.objects.filter(deployment_id=deployment_id)
    if until is not None:
        logs = logs.filter(created_at__lt=until)
    return logs.aggregate(newest=Max("created_at"))["newest"]


def bake_running(*, deployment: Deployment, now: datetime) -> BakeWindow | None:
    """The deployment's bake after its promotion, when it runs at ``now`` (SPEC 10.3)."""
    window = deployment_bake_window(deployment=deployment)
    return window if window is not None and window.running(now) else None


def decision_make(*, deployment: Deployment, now: datetime | None = None) -> Judged:
    """Judge the canary (or the bake after a promotion) as of ``now`` (reads only).

    During a bake the promoted version is v2 and the previous one, evaluated beside it
    in shadow, v1: the same paired rules (error, success, latency) on the executions
    since the promotion, without the breaker, which stays a canary's.
    """
    now = now or timezone.now()
    config = deployment.canary_config
    bake = bake_running(deployment=deployment, now=now)
    if bake is not None:
        evidence = evidence_at(deployment, now, since=bake.started_at)
        decision = decide(
            evidence,
            config,
            breaker_state="CLOSED",
            held=held_regression(deployment_id=deployment.pk),
        )
        newest = newest_execution_at(deployment_id=deployment.pk, until=now)
        return Judged(decision, evidence, now, newest)
    evidence = evidence_at(deployment, now)
    decision = decide(
        evidence,
        config,
        breaker_state=breaker_state_for(deployment_id=deployment.pk, canary_config=config),
        held=held_regression(deployment_id=deployment.pk),
        metric_breaches=metric_breaches(deployment=deployment),
    )
    newest = newest_execution_at(deployment_id=deployment.pk, until=now)
    return Judged(decision, evidence, now, newest)


def _evidence(deployment: Deployment, now: datetime) -> Evidence:
    bake = bake_running(deployment=deployment, now=now)
    if bake is not None:
        return evidence_at(deployment, now, since=bake.started_at)
    return evidence_at(deployment, now)


# The monitor's row is the console's decision while younger than this many monitor runs.
FRESH_INTERVALS = 2


def decision_stored(*, deployment: Deployment, now: datetime | None = None) -> Judged | None:
    """The monitor's stored decision while it still describes the deployment, else None.

    Fresh means decided within ``FRESH_INTERVALS`` monitor intervals, after the
    deployment's last change (a traffic step or approval count decided on before
    it would describe another canary), and agreeing with any regression held since.
    Its evidence is read as of now, for the numbers shown beside it; ``decide`` is
    not called.
    """
    now = now or timezone.now()
    row = CanaryDecision.objects.filter(pk=deployment.pk).first()
    if row is None or row.decided_at is None or not row.body.get("v2_worse"):
        return None
    max_age = timedelta(seconds=FRESH_INTERVALS * int(settings.CANARY_MONITOR_INTERVAL_SECONDS))
    if now - row.decided_at > max_age or row.decided_at < deployment.updated_at:
        return None
    if (row.regression_detected_at is not None) != bool(row.body.get("held_regression")):
        return None  # a regression held (or dismissed) since: the row no longer says it
    return Judged(
        Decision.from_dict(row.body),
        _evidence(deployment, now),
        row.decided_at,
        row.newest_evidence_at,
        source="monitor",
    )


def decision_read(*, deployment: Deployment, now: datetime | None = None) -> Judged:
    """What the console shows (SPEC 9.6): the monitor's stored decision while it is fresh,
    computed as of now only when there is none or it is stale."""
    now = now or timezone.now()
    stored = decision_stored(deployment=deployment, now=now)
    if stored is not None:
        return stored
    judged = decision_make(deployment=deployment, now=now)
    last = CanaryDecision.objects.filter(pk=deployment.pk).values_list("decided_at", flat=True)
    return replace(judged, stale_decided_at=last.first())


def decision_store(*, deployment: Deployment, judged: Judged) -> None:
    """Keep the monitor's decision; the held regression is left as it is."""
    CanaryDecision.objects.update_or_create(
        deployment=deployment,
        defaults={
            "recommendation": judged.decision.recommendation,
            "health_status": judged.decision.health_status,
            "body": judged.as_dict(),
            "decided_at": judged.decided_at,
            "newest_evidence_at": judged.newest_evidence_at,
        },
    )


def stored_decisions(*, deployment_ids: list[Any]) -> dict[str, dict[str, Any]]:
    """The monitor's last decision per deployment (the console's home reads these)."""
    rows = CanaryDecision.objects.filter(pk__in=deployment_ids).values(
        "deployment_id", "body", "regression_detected_at"
    )
    return {str(row["deployment_id"]): row for row in rows}
