"""How measurement follows the lifecycle (connected in ``MonitoringConfig.ready``)."""

from __future__ import annotations

from typing import Any

from deployments import transitions
from deployments.choices import CompensationStatus, CompensationStrategy, EventAction
from deployments.models import Deployment, DeploymentEvent
from monitoring.automation.compensation import compensation_flag
from monitoring.notifications.dispatch import notify
from monitoring.recording.breaker import breaker_force_open


def flag_executions_for_compensation(
    sender: Any, deployment: Deployment, action: str, **kwargs: Any
) -> None:
    # Inside the rollback's transaction: the flags commit with the rollback or not at all.
    if action == transitions.ROLLBACK and (
        deployment.compensation_status == CompensationStatus.PENDING
    ):
        compensation_flag(deployment=deployment)


def after_rollback(
    sender: Any, deployment: Deployment, action: str, from_status: str, actor: str, **kwargs: Any
) -> None:
    """After commit: keep v2 out for one cooldown, and tell people who need to know."""
    if action != transitions.ROLLBACK:
        return
    if from_status == transitions.CANARY:
        breaker_force_open(deployment_id=deployment.pk)
    if actor.startswith("system:"):
        # A rollback of an active deployment by the monitor is its bake's (SPEC 10.3).
        during = " during the bake after promotion" if from_status == transitions.ACTIVE else ""
        notify(
            deployment=deployment,
            headline=f"Automatic rollback by {actor}{during}",
            reason=deployment.rollback_reason,
        )
        return
    event = (
        DeploymentEvent.objects.filter(deployment=deployment, action=EventAction.ROLLBACK)
        .order_by("-id")
        .first()
    )
    applied = bool(event and event.payload.get("apply_compensation", True))
    if applied and deployment.compensation_strategy == CompensationStrategy.NOTIFY_AND_ROLLBACK:
        notify(
            deployment=deployment,
            headline=f"Rolled back by {actor}",
            reason=deployment.rollback_reason,
        )


def after_approval(
    sender: Any,
    deployment: Deployment,
    approver: str,
    approved_by: list[str],
    required_approvals: int,
    **kwargs: Any,
) -> None:
    """After commit: one approval is in, the others are asked for theirs."""
    missing = required_approvals - len(approved_by)
    notify(
        deployment=deployment,
        headline=f"Promotion awaits {missing} more approval{'s' if missing != 1 else ''}",
        reason=(
            f"{approver} approved promoting this canary ({len(approved_by)} of "
            f"{required_approvals}; approved by {', '.join(approved_by)}). Another approver "
            "completes the promotion by pressing promote; a traffic change or a rollback "
            "clears the approvals."
        ),
    )
