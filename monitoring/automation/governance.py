"""Release governance on the Django side: gather readiness evidence, stale canaries,
the notifications the monitor sends about them (SPEC 9.3).

The checklist itself is the pure ``monitoring.statistics.readiness``; this module reads the
database, the breaker and the clock for it. Every function takes ``now`` so the
boundaries (an hour at 50%, seven days of canary) are tested exactly.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from deployments.selectors import deployment_pending_approvers
from monitoring.decision.readiness import (
    readiness_evaluate,
    stale_days,
    stale_warning,
    summary,
    traffic_history,
)
from monitoring.models import GovernanceRecord
from monitoring.notifications.dispatch import notify
from monitoring.notifications.webhooks import deployment_announce
from monitoring.statistics import readiness

logger = logging.getLogger(__name__)

# --- what the monitor does each run -------------------------------------------------------


def governance_check(*, deployment_id: Any, now: datetime) -> None:
    """Record readiness (for the gauge), and notify once when it is reached and once a
    day while the canary is stale. Re-reads the deployment: the run may have ended it."""
    deployment = Deployment.objects.filter(pk=deployment_id).first()
    if deployment is None or deployment.status != DeploymentStatus.CANARY:
        return
    verdict = readiness_evaluate(deployment=deployment, now=now)
    GovernanceRecord.objects.update_or_create(
        deployment=deployment,
        defaults={
            "ready": verdict.ready,
            "checks": [check.as_dict() for check in verdict.checks],
            "checked_at": now,
        },
    )
    if verdict.ready:
        started = readiness.stretch_started_at(traffic_history(deployment=deployment, until=now))
        if started is not None and _claim(deployment, "ready_notified_for", started.isoformat()):
            deployment_announce(
                deployment=deployment,
                event_type="deployment.ready",
                event={
                    "event_id": None,
                    "deployment_id": str(deployment.pk),
                    "action": "ready",
                    "actor": "system:monitor",
                    "from_status": deployment.status,
                    "to_status": deployment.status,
                    "payload": {"checks": [check.as_dict() for check in verdict.checks]},
                    "created_at": now,
                },
                at=now,
            )
            notify(
                deployment=deployment,
                headline="Canary is ready to promote",
                reason=(
                    "Every required readiness check passes ("
                    + ", ".join(c.name for c in verdict.checks if c.required)
                    + ")."
                    + _approvals_note(deployment)
                ),
            )
    days = stale_days(deployment, now)
    if days is not None and _claim(deployment, "stale_notified_day", days):
        notify(
            deployment=deployment,
            headline=f"Canary has run {days} days",
            reason=stale_warning(deployment, now) or "",
        )


def auto_promote_allowed(*, deployment: Deployment, now: datetime, step: str) -> bool:
    """May the monitor's auto-progress promote now? Never past an unready canary when
    readiness is enforced, and never in place of approvers: with more than one approval
    required it notifies them (once per traffic step ``step``) and waits."""
    config = deployment.canary_config
    required = int(config.get("required_approvals", 1))
    if required > 1:
        if _claim(deployment, "approval_notified_for", step):
            approved = deployment_pending_approvers(deployment=deployment)
            notify(
                deployment=deployment,
                headline=f"Promotion awaits approval ({len(approved)} of {required})",
                reason=(
                    f"The canary finished a healthy step at 100% and would be promoted, but "
                    f"promoting it needs {required} approvals from different approvers"
                    + (f" (approved so far: {', '.join(approved)})" if approved else "")
                    + ". Review its readiness and press promote."
                ),
            )
        return False
    if config.get("enforce_readiness", False):
        verdict = readiness_evaluate(deployment=deployment, now=now)
        if not verdict.ready:
            logger.info("auto-promote of %s waits: %s", deployment.pk, summary(verdict))
            return False
    return True


def _approvals_note(deployment: Deployment) -> str:
    required = int(deployment.canary_config.get("required_approvals", 1))
    if required <= 1:
        return ""
    return f" Promoting it needs {required} approvals from different approvers."


def _claim(deployment: Deployment, field: str, value: Any) -> bool:
    """Compare-and-set: True for exactly one caller that moves ``field`` to ``value``."""
    GovernanceRecord.objects.get_or_create(deployment=deployment)
    return (
        GovernanceRecord.objects.filter(deployment=deployment)
        .exclude(**{field: value})
        .update(**{field: value})
        == 1
    )
