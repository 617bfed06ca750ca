"""The monitor's side of rollout plans (SPEC 10.1): whether a plan may advance, and advancing it.

A plan advances only while the canary is healthy by the one decision, the breaker is
CLOSED, no sample-ratio mismatch is flagged and every metric check passed; it never
advances while paused. Each step goes through the service a person's action uses:
traffic through ``deployment_set_traffic`` (raising it needs the decision's
``may_raise_traffic``, as auto-progress does), the promote step through
``deployment_promote_or_approve`` (readiness enforcement, four eyes and gates apply).
Any refusal of those services ("not now": not ready, approvals pending, a closed gate)
makes the plan wait at its step, recorded once per step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from canary.errors import DomainError, GateClosed
from deployments import services as lifecycle
from deployments.choices import DeploymentStatus, PlanState
from deployments.models import Deployment, DeploymentPlan
from deployments.services.plans import plan_steps, step_kind
from monitoring.decision.metric_checks import PASS, MetricResult
from monitoring.decision.selectors import sample_ratio
from monitoring.notifications.dispatch import notify
from monitoring.statistics.decision import PROMOTE, Decision
from monitoring.statistics.readiness import SAMPLE_RATIO_ALPHA

logger = logging.getLogger(__name__)

SYSTEM_MONITOR = lifecycle.SYSTEM_MONITOR


def plan_blockers(
    deployment: Deployment, decision: Decision, metrics: list[MetricResult]
) -> list[str]:
    """Why the plan may not advance now, in words; empty when it may."""
    reasons = []
    if decision.health_status == "unhealthy" or decision.held is not None:
        reasons.append("the canary is unhealthy")
    if decision.breaker_state != "CLOSED":
        reasons.append(f"the circuit breaker is {decision.breaker_state}")
    ratio = sample_ratio(deployment)
    if ratio and ratio.get("p_value") is not None and ratio["p_value"] < SAMPLE_RATIO_ALPHA:
        reasons.append("a sample-ratio mismatch is flagged")
    for result in metrics:
        if result.outcome != PASS:
            reasons.append(f"metric check {result.name} is {result.outcome} ({result.detail})")
    return reasons


def plan_is_paused(deployment: Deployment) -> bool:
    """Paused plans and paused ``auto_progress`` alike stop advancing."""
    return DeploymentPlan.objects.filter(deployment=deployment, state=PlanState.PAUSED).exists()


def plan_advance(
    *,
    deployment: Deployment,
    decision: Decision,
    metrics: list[MetricResult],
    now: datetime,
    promoted: Callable[[], None],
) -> None:
    """Advance a running plan as far as it may go in this run (consecutive steps at once)."""
    steps = plan_steps(deployment)
    for _ in range(len(steps) + 1):
        plan = DeploymentPlan.objects.filter(deployment=deployment).first()
        if plan is None or plan.state != PlanState.RUNNING or plan.current_step >= len(steps):
            return
        blockers = plan_blockers(deployment, decision, metrics)
        index, step = plan.current_step, steps[plan.current_step]
        if blockers:
            _wait(deployment, index, "; ".join(blockers))
            return
        if not _take_step(deployment, plan, index, step, decision, now, promoted):
            return
        deployment.refresh_from_db(fields=["status", "traffic_percentage"])
        if deployment.status != DeploymentStatus.CANARY:
            return


def _take_step(
    deployment: Deployment,
    plan: DeploymentPlan,
    index: int,
    step: dict[str, Any],
    decision: Decision,
    now: datetime,
    promoted: Callable[[], None],
) -> bool:
    """Do the step when its time has come; True when the plan moved past it."""
    kind = step_kind(step)
    if kind == "pause_minutes":
        ends = (plan.step_started_at or now) + timedelta(minutes=int(step["pause_minutes"]))
        if now < ends:
            _wait(deployment, index, f"pausing until {ends.isoformat()}")
            return False
        return _complete(deployment, index, now, {})
    if kind == "traffic":
        return _traffic(deployment, index, int(step["traffic"]), decision, now)
    if kind == "approval":
        if lifecycle.plan_wait_for_approval(
            deployment_id=deployment.pk, step=index, actor=SYSTEM_MONITOR, now=now
        ):
            notify(
                deployment=deployment,
                headline="Rollout plan waits for approval",
                reason=(
                    f"Step {index + 1} of the canary's rollout plan is an approval step. "
                    "Review the canary and resume the plan (the console's Resume button, or "
                    "POST /api/v1/deployments/{id}/resume), or roll it back.".replace(
                        "{id}", str(deployment.pk)
                    )
                ),
            )
        return False
    return _promote(deployment, index, decision, now, promoted)


def _traffic(
    deployment: Deployment, index: int, target: int, decision: Decision, now: datetime
) -> bool:
    current = deployment.traffic_percentage
    if target > current and not decision.may_raise_traffic:
        why = "; ".join(decision.waiting_for) or "the decision does not allow raising traffic"
        _wait(deployment, index, f"raising traffic to {target}% waits: {why}")
        return False
    if target != current:
        try:
            lifecycle.deployment_set_traffic(
                deployment_id=deployment.pk,
                traffic_percentage=target,
                actor=SYSTEM_MONITOR,
                reason=f"Rollout plan step {index + 1}: traffic {target}%.",
                expected_status=DeploymentStatus.CANARY,
                expected_traffic_percentage=current,
                now=now,
            )
        except DomainError as exc:
            _refused(deployment, index, exc, now)
            return False
    return _complete(deployment, index, now, {"traffic_percentage": target})


def _promote(
    deployment: Deployment,
    index: int,
    decision: Decision,
    now: datetime,
    promoted: Callable[[], None],
) -> bool:
    if decision.recommendation != PROMOTE:
        why = "; ".join(decision.waiting_for) or decision.recommendation
        _wait(deployment, index, f"promote waits: {why}")
        return False
    try:
        outcome = lifecycle.deployment_promote_or_approve(
            deployment_id=deployment.pk,
            actor=SYSTEM_MONITOR,
            expected_status=DeploymentStatus.CANARY,
            now=now,
        )
    except DomainError as exc:
        _refused(deployment, index, exc, now)
        return False
    if not outcome.promoted:
        return False
    lifecycle.plan_finish(deployment_id=deployment.pk, step=index, actor=SYSTEM_MONITOR, now=now)
    promoted()
    return True


def _complete(deployment: Deployment, index: int, now: datetime, detail: dict[str, Any]) -> bool:
    done = lifecycle.plan_step_complete(
        deployment_id=deployment.pk, step=index, actor=SYSTEM_MONITOR, now=now, detail=detail
    )
    return done is not None


def _refused(deployment: Deployment, index: int, exc: DomainError, now: datetime) -> None:
    logger.info("plan of %s waits at step %s: %s", deployment.pk, index, exc.detail)
    if isinstance(exc, GateClosed):
        # SPEC 10.4: a closed gate is a ``gate_closed`` event, once per step.
        lifecycle.deployment_gate_closed(
            deployment_id=deployment.pk, closed=exc, step=f"plan:{index}", actor=SYSTEM_MONITOR
        )
        _wait(deployment, index, exc.detail)
        return
    lifecycle.plan_step_refused(
        deployment_id=deployment.pk,
        step=index,
        actor=SYSTEM_MONITOR,
        detail=exc.detail,
        code=exc.code,
        now=now,
    )


def _wait(deployment: Deployment, index: int, reason: str) -> None:
    logger.info("plan of %s waits at step %s: %s", deployment.pk, index, reason)
    lifecycle.plan_note_waiting(deployment_id=deployment.pk, step=index, reason=reason)
