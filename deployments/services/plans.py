"""Rollout plans (SPEC 10.1): where a canary's ``canary_config.steps`` stand, pause and resume.

The monitor decides *whether* a plan may advance (monitoring knows the evidence);
every change of the plan's row happens here, under the deployment's row lock and
compared against the step and state the caller saw, so a repeated monitor run or
two approvers pressing resume at once move the plan by one step, never two.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from canary.errors import Conflict, ValidationFailed
from deployments.choices import DeploymentStatus, EventAction, PlanState
from deployments.models import Deployment, DeploymentPlan
from deployments.services.actors import MAX_REASON, Actor, _text_or_400, actor_label
from deployments.services.transition import (
    _check_unchanged,
    _lock,
    _record_unchanged,
)

PlanSteps = Sequence[dict[str, Any]]


class PlanConflict(Conflict):
    """Pause or resume asked of a plan in a state that does not allow it."""

    code = "plan_state"


def plan_steps(deployment: Deployment) -> list[dict[str, Any]]:
    return list(deployment.canary_config.get("steps") or [])


def step_kind(step: dict[str, Any]) -> str:
    """``traffic``, ``pause_minutes``, ``approval`` or ``promote``."""
    [key] = step
    return "approval" if key == "pause" else key


def describe_step(step: dict[str, Any]) -> str:
    kind = step_kind(step)
    if kind == "traffic":
        return f"traffic {step['traffic']}%"
    if kind == "pause_minutes":
        return f"pause {step['pause_minutes']} min"
    if kind == "approval":
        return "approval"
    return "promote"


def _leading_traffic(steps: PlanSteps) -> list[int]:
    values: list[int] = []
    for step in steps:
        if step_kind(step) != "traffic":
            break
        values.append(int(step["traffic"]))
    return values


def plan_start_traffic(steps: PlanSteps, canary_pct: Any, default: int) -> int:
    """The traffic a plan starts at: its leading traffic steps, applied at once.

    A ``canary_pct`` given with a plan must equal its first traffic step, so a client
    cannot start somewhere the plan does not say.
    """
    first = next((int(s["traffic"]) for s in steps if step_kind(s) == "traffic"), None)
    if canary_pct is not None and first is not None and canary_pct != first:
        raise ValidationFailed(
            {
                "canary_pct": [
                    f"Must equal the plan's first traffic step ({first}%), or be left out."
                ]
            }
        )
    leading = _leading_traffic(steps)
    if leading:
        return leading[-1]
    return default if canary_pct is None else int(canary_pct)


def _plan_begin(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> None:
    """Inside start-canary's transaction: the plan's row at its first step that waits."""
    steps = plan_steps(deployment)
    applied = len(_leading_traffic(steps))
    history = [
        {"step": index, "started_at": now.isoformat(), "ended_at": now.isoformat()}
        for index in range(applied)
    ]
    state = PlanState.NONE
    if steps:
        state = PlanState.RUNNING if applied < len(steps) else PlanState.DONE
        if applied < len(steps):
            history.append({"step": applied, "started_at": now.isoformat(), "ended_at": None})
        payload["plan"] = {"applied_steps": list(range(applied)), "current_step": applied}
    DeploymentPlan.objects.update_or_create(
        deployment=deployment,
        defaults={
            "state": state,
            "paused_from": "",
            "current_step": applied,
            "step_started_at": now,
            "history": history,
            "refused_step": None,
            "waiting_for": "",
        },
    )


def _locked_plan(deployment: Deployment) -> DeploymentPlan:
    plan = DeploymentPlan.objects.select_for_update().filter(deployment=deployment).first()
    if plan is None:  # a canary started before plans existed: it has no steps
        plan = DeploymentPlan.objects.create(deployment=deployment, state=PlanState.NONE)
    return plan


def _require_canary(deployment: Deployment, what: str) -> None:
    if deployment.status != DeploymentStatus.CANARY:
        raise PlanConflict(
            f"Only a running canary can be {what}; this deployment is {deployment.status}.",
            status=deployment.status,
        )


def _enter(plan: DeploymentPlan, steps: PlanSteps, step: int, now: datetime) -> None:
    """Close the current step in the history and start ``step`` (or finish the plan)."""
    for entry in plan.history:
        if entry["ended_at"] is None:
            entry["ended_at"] = now.isoformat()
    plan.current_step = step
    plan.step_started_at = now
    plan.refused_step = None
    plan.waiting_for = ""
    if step >= len(steps):
        plan.state = PlanState.DONE
    else:
        plan.history.append({"step": step, "started_at": now.isoformat(), "ended_at": None})


def deployment_pause(
    *,
    deployment_id: Any,
    actor: Actor,
    reason: str | None = None,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> DeploymentPlan:
    """Stop the plan (or ``auto_progress``) advancing; the monitor still rolls back."""
    reason = _text_or_400("reason", reason, MAX_REASON).strip()
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        _check_unchanged(deployment, expected_status)
        _require_canary(deployment, "paused")
        plan = _locked_plan(deployment)
        if plan.state not in (PlanState.RUNNING, PlanState.WAITING_APPROVAL, PlanState.NONE):
            raise PlanConflict(
                f"The plan is {plan.state}; only a running plan (or a canary without one) "
                "can be paused.",
                plan_state=plan.state,
            )
        payload: dict[str, Any] = {"step": plan.current_step, "plan_state": plan.state}
        if reason:
            payload["reason"] = reason
        plan.paused_from = plan.state
        plan.state = PlanState.PAUSED
        plan.save(update_fields=["state", "paused_from"])
        _record_unchanged(
            deployment,
            action=EventAction.PAUSE,
            actor=actor,
            payload=payload,
            at=now,
        )
    return plan


def deployment_resume(
    *,
    deployment_id: Any,
    actor: Actor,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> DeploymentPlan:
    """Run a paused plan again, or complete the approval step it waits on (the approver
    recorded). Under the row lock: of two approvers resuming at once, one moves the
    plan and the other gets a 409."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        _check_unchanged(deployment, expected_status)
        _require_canary(deployment, "resumed")
        plan = _locked_plan(deployment)
        payload: dict[str, Any] = {"step": plan.current_step, "plan_state": plan.state}
        if plan.state == PlanState.PAUSED:
            plan.state = plan.paused_from or PlanState.RUNNING
            plan.paused_from = ""
            plan.save(update_fields=["state", "paused_from"])
        elif plan.state == PlanState.WAITING_APPROVAL:
            steps = plan_steps(deployment)
            payload.update(approval=True, approved_by=actor_label(actor))
            plan.state = PlanState.RUNNING
            _enter(plan, steps, plan.current_step + 1, now)
            payload["current_step"] = plan.current_step
            plan.save()
        else:
            raise PlanConflict(
                f"The plan is {plan.state}; only a paused plan or one waiting for approval "
                "can be resumed.",
                plan_state=plan.state,
            )
        _record_unchanged(
            deployment,
            action=EventAction.RESUME,
            actor=actor,
            payload=payload,
            at=now,
        )
    return plan


def _plan_for_step(deployment_id: Any, step: int) -> tuple[Deployment, DeploymentPlan] | None:
    """The locked canary and its plan when the plan still runs at ``step``; else None."""
    deployment = _lock(deployment_id)
    if deployment.status != DeploymentStatus.CANARY:
        return None
    plan = _locked_plan(deployment)
    if plan.state != PlanState.RUNNING or plan.current_step != step:
        return None
    return deployment, plan


def plan_step_complete(
    *,
    deployment_id: Any,
    step: int,
    actor: Actor,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> DeploymentPlan | None:
    """Move a running plan past ``step`` (a ``plan_step`` event); None when it is no longer
    there (another run, a pause or a resume moved it first)."""
    with transaction.atomic(durable=True):
        found = _plan_for_step(deployment_id, step)
        if found is None:
            return None
        deployment, plan = found
        steps = plan_steps(deployment)
        _enter(plan, steps, step + 1, now)
        plan.save()
        _record_unchanged(
            deployment,
            action=EventAction.PLAN_STEP,
            actor=actor,
            payload={
                "completed_step": step,
                "step": describe_step(steps[step]),
                "current_step": plan.current_step,
                "plan_state": plan.state,
                **(detail or {}),
            },
            at=now,
        )
    return plan


def plan_finish(*, deployment_id: Any, step: int, actor: Actor, now: datetime) -> None:
    """After the promote step promoted: the plan is done (the deployment is active now)."""
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        plan = DeploymentPlan.objects.select_for_update().filter(deployment=deployment).first()
        if plan is None or plan.current_step != step or plan.state == PlanState.DONE:
            return
        _enter(plan, plan_steps(deployment), step + 1, now)
        plan.state = PlanState.DONE
        plan.save()
        _record_unchanged(
            deployment,
            action=EventAction.PLAN_STEP,
            actor=actor,
            payload={
                "completed_step": step,
                "step": "promote",
                "current_step": plan.current_step,
                "plan_state": plan.state,
            },
            at=now,
        )


def plan_wait_for_approval(
    *, deployment_id: Any, step: int, actor: Actor, now: datetime
) -> Deployment | None:
    """A running plan reached an approval step: it waits for a resume. The deployment
    when this call made the change (its caller notifies the approvers once), else None."""
    with transaction.atomic(durable=True):
        found = _plan_for_step(deployment_id, step)
        if found is None:
            return None
        deployment, plan = found
        plan.state = PlanState.WAITING_APPROVAL
        plan.waiting_for = "approval: an Approver resumes the plan"
        plan.save(update_fields=["state", "waiting_for"])
        _record_unchanged(
            deployment,
            action=EventAction.PLAN_STEP,
            actor=actor,
            payload={"step": "approval", "current_step": step, "plan_state": plan.state},
            at=now,
        )
    return deployment


def plan_step_refused(
    *, deployment_id: Any, step: int, actor: Actor, detail: str, code: str, now: datetime
) -> bool:
    """A service said "not now" to ``step`` (readiness, approvals, a closed gate): the plan
    waits. The first refusal of a step is recorded as an event; repeats change nothing."""
    with transaction.atomic(durable=True):
        found = _plan_for_step(deployment_id, step)
        if found is None:
            return False
        deployment, plan = found
        plan.waiting_for = detail
        if plan.refused_step == step:
            plan.save(update_fields=["waiting_for"])
            return False
        plan.refused_step = step
        plan.save(update_fields=["waiting_for", "refused_step"])
        _record_unchanged(
            deployment,
            action=EventAction.PLAN_STEP,
            actor=actor,
            payload={
                "step": describe_step(plan_steps(deployment)[step]),
                "current_step": step,
                "plan_state": plan.state,
                "waiting": detail,
                "code": code,
            },
            at=now,
        )
    return True


def plan_note_waiting(*, deployment_id: Any, step: int, reason: str) -> None:
    """Say why a running plan does not advance (the console and ``/plan`` show it)."""
    DeploymentPlan.objects.filter(
        deployment_id=deployment_id, current_step=step, state=PlanState.RUNNING
    ).exclude(waiting_for=reason).update(waiting_for=reason)
