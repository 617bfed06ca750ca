"""The scheduled monitor: roll back bad canaries, advance good ones, notify.

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
from canary.errors import DomainError
from deployments import services as lifecycle
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from monitoring.automation import governance
from monitoring.breaker.store import breaker_state_for
from monitoring.decision.selectors import evidence_at, step_started_at, version_stats
from monitoring.decision.shadow import paired_counts
from monitoring.leases import lease_acquire, lease_release
from monitoring.models import HealthRecord
from monitoring.notifications.dispatch import notify
from monitoring.statistics import analysis

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


def monitor_run(*, now: datetime | None = None, holder: str | None = None) -> MonitorReport:
    """Evaluate every running canary once."""
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
        canaries = Deployment.objects.filter(status=DeploymentStatus.CANARY).order_by("pk")
        for deployment in canaries:
            report.checked += 1
            try:
                _evaluate(deployment, now, report)
            except Exception:
                logger.exception("monitor failed on deployment %s", deployment.pk)
            _governance_check(deployment, now)
        outcome = (
            f"checked {report.checked}, rolled back {len(report.rolled_back)}, "
            f"progressed {len(report.progressed)}, promoted {len(report.promoted)}"
        )
    finally:
        lease_release(MONITOR_JOB, holder=holder, outcome=outcome)
    return report


def _evaluate(deployment: Deployment, now: datetime, report: MonitorReport) -> None:
    config = analysis.with_defaults(deployment.canary_config)
    evidence = evidence_at(deployment, now)
    breaches = analysis.rollback_breaches(evidence, config)
    breaker_state = breaker_state_for(deployment_id=deployment.pk, canary_config=config)
    warnings = analysis.health_warnings(evidence, config)
    status = analysis.health_status(
        breaches=breaches,
        breaker_state=breaker_state,
        warnings=warnings,
        has_data=evidence.has_data,
    )
    reasons = [breach.message for breach in breaches]
    if breaker_state == "OPEN":
        reasons.append("The circuit breaker is OPEN.")
    _record_health(deployment, status, reasons, now)

    if reasons and config.get("auto_rollback", True):
        if _act(
            lambda: lifecycle.deployment_rollback(
                deployment_id=deployment.pk,
                reason="Automatic rollback: " + " ".join(reasons),
                actor=SYSTEM_MONITOR,
                expected_status=DeploymentStatus.CANARY,
                now=now,
            )
        ):
            report.rolled_back.append(str(deployment.pk))
        return
    mismatch = bool(evidence.sample_ratio and evidence.sample_ratio.get("mismatch"))
    if mismatch:
        logger.warning("sample ratio mismatch on %s: progression paused", deployment.pk)
    if config.get("auto_progress") and status != "unhealthy" and not mismatch:
        _progress(deployment, now, report)


def _governance_check(deployment: Deployment, now: datetime) -> None:
    """Readiness for the gauge, "ready" and stale-canary notifications (SPEC 9.3)."""
    try:
        governance.governance_check(deployment_id=deployment.pk, now=now)
    except Exception:
        logger.exception("governance check failed on deployment %s", deployment.pk)


def _record_health(deployment: Deployment, status: str, reasons: list[str], now: datetime) -> None:
    previous = HealthRecord.objects.filter(deployment=deployment).first()
    HealthRecord.objects.update_or_create(
        deployment=deployment, defaults={"status": status, "checked_at": now}
    )
    became_unhealthy = status == "unhealthy" and (previous is None or previous.status != status)
    # An automatic rollback notifies on its own; only warn here when nobody acts.
    if became_unhealthy and not deployment.canary_config.get("auto_rollback", True):
        notify(
            deployment=deployment,
            headline="Canary is unhealthy",
            reason=" ".join(reasons) or "A rollback condition holds.",
        )


def _act(change: Any) -> bool:
    try:
        change()
    except DomainError as exc:
        # Another run, the breaker or an approver acted first: nothing to do.
        logger.info("monitor action skipped: %s", exc.detail)
        return False
    return True


def _progress(deployment: Deployment, now: datetime, report: MonitorReport) -> None:
    """Raise traffic by ``increment`` (or promote at 100) after a healthy step."""
    config = deployment.canary_config
    started = step_started_at(deployment)
    if started is None or now - started < timedelta(minutes=config["duration_minutes"]):
        return
    step = version_stats(deployment_id=deployment.pk, since=started, until=now)
    v2 = step["v2"]
    pairs = paired_counts(deployment_id=deployment.pk, since=started, until=now)
    if pairs.pairs >= config["min_samples"]:
        # Judged on the same inputs in both versions: what v2 would have done to everyone.
        v2_error_rate = pairs.v2_errors / pairs.pairs
        enough = True
    else:
        v2_error_rate = v2.error_rate if v2 is not None else 1.0
        enough = v2 is not None and v2.total_requests >= config["min_samples"]
    basis = f" on {pairs.pairs} paired inputs" if pairs.pairs >= config["min_samples"] else ""
    step_healthy = (
        enough
        and v2_error_rate <= config["error_threshold"]
        and 1 - v2_error_rate >= config["success_threshold"]
    )
    if not step_healthy:
        return
    if deployment.traffic_percentage >= 100:
        # Approvals and enforced readiness are for people to clear: wait (and ask them).
        if not governance.auto_promote_allowed(
            deployment=deployment, now=now, step=started.isoformat()
        ):
            return
        if _act(
            lambda: lifecycle.deployment_promote(
                deployment_id=deployment.pk,
                actor=SYSTEM_MONITOR,
                expected_status=DeploymentStatus.CANARY,
                now=now,
            )
        ):
            report.promoted.append(str(deployment.pk))
        return
    target = min(100, deployment.traffic_percentage + config["increment"])
    if _act(
        lambda: lifecycle.deployment_set_traffic(
            deployment_id=deployment.pk,
            traffic_percentage=target,
            actor=SYSTEM_MONITOR,
            reason=(
                f"Automatic progression: healthy for {config['duration_minutes']} minutes "
                f"at {deployment.traffic_percentage}% (v2 error rate {v2_error_rate:.2%}"
                f"{basis})."
            ),
            expected_status=DeploymentStatus.CANARY,
            now=now,
        )
    ):
        report.progressed.append(str(deployment.pk))
