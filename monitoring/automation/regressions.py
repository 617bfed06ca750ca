"""A detected regression holds (SPEC 9.6): held by the monitor, dismissed by an approver.

When the monitor finds a rollback rule breached and does not roll back (automatic
rollback is off), the canary's decision stays ``rollback`` until the canary ends or an
approver dismisses it with a reason: a pause in traffic never turns it back into
"collect more data". Holding is a compare-and-set on the decision row, so overlapping
monitor runs record and notify once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from canary.errors import Conflict, ValidationFailed
from deployments import services as lifecycle
from deployments.choices import EventAction
from deployments.models import Deployment
from monitoring.models import CanaryDecision
from monitoring.notifications.dispatch import notify
from monitoring.statistics.decision import Decision

SYSTEM_MONITOR = "system:monitor"


def regression_hold(*, deployment: Deployment, decision: Decision, now: datetime) -> bool:
    """Hold the breaches the monitor found; True for the one run that held them."""
    reasons = [breach.message for breach in decision.breaches]
    if not reasons:
        return False
    with transaction.atomic():
        CanaryDecision.objects.get_or_create(deployment=deployment)
        claimed = CanaryDecision.objects.filter(
            pk=deployment.pk, regression_detected_at__isnull=True
        ).update(regression_detected_at=now, regression_reasons=reasons)
        if not claimed:
            return False
        lifecycle.deployment_canary_event(
            deployment_id=deployment.pk,
            action=EventAction.REGRESSION_DETECTED,
            actor=SYSTEM_MONITOR,
            payload={
                "rules": [breach.rule for breach in decision.breaches],
                "reasons": reasons,
            },
        )
        notify(
            deployment=deployment,
            headline="Regression detected: roll back",
            reason=" ".join(reasons)
            + " Automatic rollback is off for this canary, so it keeps running; the "
            "verdict stays 'rollback' until someone rolls it back or dismisses the regression.",
        )
    return True


def regression_dismiss(*, deployment_id: Any, reason: Any, actor: Any) -> dict[str, Any]:
    """An approver judged the held regression acceptable; the next run judges afresh."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed({"reason": ["A reason is required to dismiss a regression."]})
    if len(reason) > lifecycle.MAX_REASON:
        raise ValidationFailed(
            {"reason": [f"Ensure this field has no more than {lifecycle.MAX_REASON} characters."]}
        )
    with transaction.atomic():
        record = (
            CanaryDecision.objects.select_for_update()
            .filter(pk=deployment_id, regression_detected_at__isnull=False)
            .first()
        )
        if record is None:
            raise Conflict(
                "No regression is held for this deployment: there is nothing to dismiss.",
                code="no_regression",
            )
        dismissed = {
            "reason": reason.strip(),
            "detected_at": record.regression_detected_at.isoformat(),
            "reasons": record.regression_reasons,
        }
        deployment, event = lifecycle.deployment_canary_event(
            deployment_id=deployment_id,
            action=EventAction.REGRESSION_DISMISSED,
            actor=actor,
            payload=dismissed,
        )
        record.regression_detected_at = None
        record.regression_reasons = []
        record.save(update_fields=["regression_detected_at", "regression_reasons"])
    return {
        "deployment_id": str(deployment.pk),
        "status": deployment.status,
        "dismissed": dismissed,
        "event_id": event.pk,
    }
