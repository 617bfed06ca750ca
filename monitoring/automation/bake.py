"""The bake after a promotion (SPEC 10.3): judge the promoted version against the previous
one, roll it back on a breach, and record the bake's end.

For ``bake_minutes`` after a promotion the data plane evaluates the previous version in
shadow beside the active one (``assignments.services.execute``), recording the promoted
version as v2 and the previous one as v1 under the promoted deployment. The monitor
judges those pairs with the one decision (``decision_make``: the paired error, success
and latency rules; no breaker), and a rollback recommendation rolls the promotion back:
active -> rolled_back, the previous deployment active again (``deployment_rollback``
restores it under the same locks and bumps the routing generation).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import QuerySet

from canary.errors import DomainError
from deployments import services as lifecycle
from deployments.choices import DeploymentStatus, EventAction
from deployments.models import Deployment
from deployments.selectors import deployment_bake_window
from monitoring.automation.regressions import regression_hold
from monitoring.decision.decisions import decision_make, decision_store
from monitoring.models import HealthRecord
from monitoring.statistics import analysis
from monitoring.statistics.decision import ROLLBACK

logger = logging.getLogger(__name__)

BAKE_REASON = "Bake after promotion: automatic rollback to the previous version:"


def bakes_open() -> QuerySet[Deployment]:
    """Active deployments with a bake whose end is not recorded yet."""
    return (
        Deployment.objects.filter(
            status=DeploymentStatus.ACTIVE,
            promoted_at__isnull=False,
            baseline__isnull=False,
            canary_config__bake_minutes__gt=0,
        )
        .exclude(events__action=EventAction.BAKE_COMPLETE)
        .order_by("pk")
    )


def bake_check(*, deployment: Deployment, now: datetime, actor: str) -> str | None:
    """One look at a bake: ``"rolled_back"``, ``"complete"`` or None (it goes on)."""
    window = deployment_bake_window(deployment=deployment)
    if window is None or now < window.started_at:
        return None
    if now >= window.ends_at:
        return "complete" if _act(deployment, now, actor, complete=True) else None
    judged = decision_make(deployment=deployment, now=now)
    decision = judged.decision
    decision_store(deployment=deployment, judged=judged)
    HealthRecord.objects.update_or_create(
        deployment=deployment, defaults={"status": decision.health_status, "checked_at": now}
    )
    if decision.recommendation != ROLLBACK:
        return None
    if decision.held is not None:
        return None  # held already, and told: it waits for a person
    if not analysis.with_defaults(deployment.canary_config).get("auto_rollback", True):
        # SPEC 9.6: a detected regression holds, for a bake as for a canary.
        regression_hold(deployment=deployment, decision=decision, now=now)
        return None
    reason = f"{BAKE_REASON} {' '.join(decision.reasons)}"
    return "rolled_back" if _act(deployment, now, actor, reason=reason) else None


def _act(
    deployment: Deployment, now: datetime, actor: str, *, complete: bool = False, reason: str = ""
) -> bool:
    try:
        if complete:
            return (
                lifecycle.deployment_bake_complete(
                    deployment_id=deployment.pk, actor=actor, now=now
                )
                is not None
            )
        lifecycle.deployment_rollback(
            deployment_id=deployment.pk,
            reason=reason[: lifecycle.MAX_REASON],
            actor=actor,
            expected_status=DeploymentStatus.ACTIVE,
            now=now,
        )
    except DomainError as exc:
        # A person acted first, or a canary builds on it now: nothing to do.
        logger.info("bake action on %s skipped: %s", deployment.pk, exc.detail)
        return False
    return True
