"""The scheduled monitor: roll back bad canaries, advance good ones (auto-progress or
their rollout plan), judge bakes, notify.

Single flight twice over: a lease row (``JobRun``) taken with a compare-and-set
update keeps a second run from starting while one is in progress, and every
action goes through a lifecycle service with ``expected_status="canary"``, so
even two runs that both decide to act change the deployment once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from assignments.buffer import drain_now
from canary.errors import DomainError, GateClosed
from deployments import services as lifecycle
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from monitoring.automation import governance
from monitoring.automation.bake import bake_check, bakes_open
from monitoring.automation.plans import plan_advance, plan_is_paused
from monitoring.automation.regressions import regression_hold
from monitoring.decision.decisions import decision_make, decision_store
from monitoring.decision.metric_checks import (
    MetricResult,
    metric_checks_evaluate,
    metric_checks_store,
)
from monitoring.decision.selectors import step_started_at, version_stats
from monitoring.decision.shadow import paired_counts
from monitoring.leases import lease_acquire, lease_release
from monitoring.models import HealthRecord
from monitoring.statistics import analysis
from monitoring.statistics.analysis import VersionStats
from monitoring.statistics.decision import PROMOTE, ROLLBACK, Decision, own_rate
from monitoring.statistics.paired import PairedCounts

logger = logging.getLogger(__name__)

SYSTEM_MONITOR = "system:monitor"
MONITOR_JOB = "canary-monitor"
# A run cannot outlive the task's hard time limit, so a lease never needs to be
# longer; and it must end before the next period so a killed run delays nothing.
MAX_LEASE = timedelta(seconds=270)


def monitor_lease() -> timedelta:
    period = timedelta(seconds=settings.CANARY_MONITOR_INTERVAL_SECONDS)
    return max(timedelta(seconds=1), min(MAX_LEASE, period - timedelta(seconds=1)))


@dataclass
class MonitorReport:
    skipped: bool = False
    checked: int = 0
    rolled_back: list[str] = field(default_factory=list)
    progressed: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    bakes_completed: list[str] = field(default_factory=list)


def monitor_run(*, now: datetime | None = None, holder: str | None = None) -> MonitorReport:
    """Evaluate every running canary, and every bake after a promotion, once."""
    now = now or timezone.now()
    holder = holder or uuid.uuid4().hex
    if not lease_acquire(MONITOR_JOB, holder=holder, now=now, lease=monitor_lease()):
        logger.info("monitor run skipped: another run holds the lease")
        return MonitorReport(skipped=True)
    report = MonitorReport()
    outcome = "error"
    try:
        # Judge on every execution answered so far, not on what the drainers wrote.
        drain_now()
        canaries = list(Deployment.objects.filter(status=DeploymentStatus.CANARY).order_by("pk"))
        # Prometheus first, for every canary at once and outside any lock (SPEC 10.1).
        metrics = metric_checks_evaluate(canaries)
        for deployment in canaries:
            report.checked += 1
            try:
                _evaluate(deployment, now, report, metrics.get(str(deployment.pk), []))
            except Exception:
                logger.exception("monitor failed on deployment %s", deployment.pk)
            _governance_check(deployment, now)
        for deployment in bakes_open():
            report.checked += 1
            try:
                done = bake_check(deployment=deployment, now=now, actor=SYSTEM_MONITOR)
            except Exception:
                logger.exception("monitor failed on the bake of deployment %s", deployment.pk)
                continue
            if done == "rolled_back":
                report.rolled_back.append(str(deployment.pk))
            elif done == "complete":
                report.bakes_completed.append(str(deployment.pk))
        outcome = (
            f"checked {report.checked}, rolled back {len(report.rolled_back)}, "
            f"progressed {len(report.progressed)}, promoted {len(report.promoted)}"
        )
    finally:
        lease_release(MONITOR_JOB, holder=holder, outcome=outcome)
    return report


def _evaluate(
    deployment: Deployment,
    now: datetime,
    report: MonitorReport,
    metrics: list[MetricResult] | None = None,
) -> None:
    """One decision (SPEC 9.6) per canary per run: stored, then acted on."""
    config = analysis.with_defaults(deployment.canary_config)
    metrics = metrics or []
    if metrics:
        metric_checks_store(deployment=deployment, results=metrics, now=now)
    judged = decision_make(deployment=deployment, now=now)
    decision = judged.decision
    decision_store(deployment=deployment, judged=judged)
    _record_health(deployment, decision.health_status, now)
    if decision.recommendation == ROLLBACK:
        if decision.held is not None:
            return  # held already, and told: it waits for a person
        if config.get("auto_rollback", True):
            if _act(
                lambda: lifecycle.deployment_rollback(
                    deployment_id=deployment.pk,
                    reason="Automatic rollback: " + " ".join(decision.reasons),
                    actor=SYSTEM_MONITOR,
                    expected_status=DeploymentStatus.CANARY,
                    now=now,
                )
            ):
                report.rolled_back.append(str(deployment.pk))
        elif decision.breaches:
            _act(lambda: regression_hold(deployment=deployment, decision=decision, now=now))
        return
    if not decision.may_raise_traffic and decision.waiting_for:
        logger.info("canary %s waits: %s", deployment.pk, "; ".join(decision.waiting_for))
    if deployment.canary_config.get("steps"):
        plan_advance(
            deployment=deployment,
            decision=decision,
            metrics=metrics,
            now=now,
            promoted=lambda: report.promoted.append(str(deployment.pk)),
        )
    elif config.get("auto_progress") and not plan_is_paused(deployment):
        _progress(deployment, now, report, decision)


def _governance_check(deployment: Deployment, now: datetime) -> None:
    """Readiness for the gauge, "ready" and stale-canary notifications (SPEC 9.3)."""
    try:
        governance.governance_check(deployment_id=deployment.pk, now=now)
    except Exception:
        logger.exception("governance check failed on deployment %s", deployment.pk)


def _record_health(deployment: Deployment, status: str, now: datetime) -> None:
    HealthRecord.objects.update_or_create(
        deployment=deployment, defaults={"status": status, "checked_at": now}
    )


def _act(change: Any) -> bool:
    try:
        change()
    except DomainError as exc:
        # Another run, the breaker or an approver acted first: nothing to do.
        logger.info("monitor action skipped: %s", exc.detail)
        return False
    return True


def _act_at_gate(deployment: Deployment, step_started: datetime, change: Any) -> bool:
    """``_act``, waiting at a closed gate: recorded once per step (SPEC 10.4), then retried
    on every run until the gate opens."""
    try:
        change()
    except GateClosed as closed:
        logger.info("canary %s waits at a closed gate: %s", deployment.pk, closed.detail)
        try:
            lifecycle.deployment_gate_closed(
                deployment_id=deployment.pk,
                closed=closed,
                step=step_started.isoformat(),
                actor=SYSTEM_MONITOR,
            )
        except DomainError as exc:
            logger.info("gate_closed not recorded: %s", exc.detail)
        return False
    except DomainError as exc:
        logger.info("monitor action skipped: %s", exc.detail)
        return False
    return True


def _progress(
    deployment: Deployment, now: datetime, report: MonitorReport, decision: Decision
) -> None:
    """Raise traffic by ``increment`` after a healthy step, or promote at 100.

    Raising needs the thresholds to hold on the step and no evidence that v2 fails more
    often (``may_raise_traffic``); promoting needs the decision to say ``promote``:
    v2 shown not worse than v1 by more than the margin. Too little evidence waits.
    """
    config = analysis.with_defaults(deployment.canary_config)
    started = step_started_at(deployment)
    if started is None or now - started < timedelta(minutes=config["duration_minutes"]):
        return
    step = version_stats(deployment_id=deployment.pk, since=started, until=now)
    pairs = paired_counts(deployment_id=deployment.pk, since=started, until=now)
    min_samples = int(config["min_samples"])
    step_rate = own_rate(pairs, step["v1"], step["v2"], min_samples)
    if step_rate is None and step["v2"] is not None and pairs.pairs < min_samples:
        # A canary with v1 alone at 0% traffic has no v1 served: judge v2's own requests.
        v2 = step["v2"]
        if v2.total_requests >= min_samples:
            step_rate = own_rate(PairedCounts(), _no_errors(v2), v2, min_samples)
    step_healthy = (
        step_rate is not None
        and step_rate.rate <= config["error_threshold"]
        and 1 - step_rate.rate >= config["success_threshold"]
    )
    if not step_healthy:
        return
    if deployment.traffic_percentage >= 100:
        if decision.recommendation != PROMOTE:
            logger.info(
                "auto-promote of %s waits: %s", deployment.pk, "; ".join(decision.waiting_for)
            )
            return
        # Approvals and enforced readiness are for people to clear: wait (and ask them).
        if not governance.auto_promote_allowed(
            deployment=deployment, now=now, step=started.isoformat()
        ):
            return
        if _act_at_gate(
            deployment,
            started,
            lambda: lifecycle.deployment_promote(
                deployment_id=deployment.pk,
                actor=SYSTEM_MONITOR,
                expected_status=DeploymentStatus.CANARY,
                now=now,
            ),
        ):
            report.promoted.append(str(deployment.pk))
        return
    if not decision.may_raise_traffic:
        return
    target = min(100, deployment.traffic_percentage + config["increment"])
    if _act_at_gate(
        deployment,
        started,
        lambda: lifecycle.deployment_set_traffic(
            deployment_id=deployment.pk,
            traffic_percentage=target,
            actor=SYSTEM_MONITOR,
            reason=(
                f"Automatic progression: healthy for {config['duration_minutes']} minutes "
                f"at {deployment.traffic_percentage}% ({step_rate.phrase}; no evidence that "
                "v2 fails more often than v1)."
            ),
            expected_status=DeploymentStatus.CANARY,
            now=now,
        ),
    ):
        report.progressed.append(str(deployment.pk))


def _no_errors(v2: VersionStats) -> VersionStats:
    return VersionStats(v2.total_requests, v2.total_requests, 0, 1.0, 0.0, 0.0, 0.0, 0.0)
