"""The rollout plan in the console (SPEC 10.1): the row of steps, pause and resume, metric checks.

Pause and resume are ``DeploymentAction``s like every other button: a confirmation
page, then the same service the API calls (``deployment_pause``/``deployment_resume``)
with the status the page showed. The metric checks' latest values come from the
``"metric_checks"`` panel monitoring registers (``deployments.admin_panels``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.utils import timezone

from deployments import admin_panels, selectors, services
from deployments.admin.actions import (
    ACTIONS,
    ActionForm,
    DeploymentAction,
    Situation,
    actions_for,
)
from deployments.admin.display import CHANGE_DEPLOYMENT, duration
from deployments.choices import DeploymentStatus, PlanState
from deployments.models import Deployment
from deployments.services.plans import describe_step

PLAN = "plan"
PAUSE = "pause"
RESUME = "resume"

STATE_LABELS = {
    PlanState.NONE: "no plan",
    PlanState.RUNNING: "running",
    PlanState.PAUSED: "paused",
    PlanState.WAITING_APPROVAL: "waiting for approval",
    PlanState.DONE: "done",
}


class PauseForm(ActionForm):
    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=services.MAX_REASON,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Optional. Recorded on the pause event.",
    )


def _plan_state(deployment: Deployment) -> str:
    return selectors.deployment_plan_get(deployment=deployment)["state"]


def _may_pause(s: Situation) -> bool:
    return s.deployment.status == DeploymentStatus.CANARY and _plan_state(s.deployment) in (
        PlanState.NONE,
        PlanState.RUNNING,
        PlanState.WAITING_APPROVAL,
    )


def _may_resume(s: Situation) -> bool:
    return s.deployment.status == DeploymentStatus.CANARY and _plan_state(s.deployment) in (
        PlanState.PAUSED,
        PlanState.WAITING_APPROVAL,
    )


def _pause_consequence(s: Situation) -> str:
    return (
        "The rollout plan (or automatic progression) stops advancing until someone resumes "
        "it. The monitor still rolls the canary back if it breaches a rule."
    )


def _resume_consequence(s: Situation) -> str:
    if _plan_state(s.deployment) == PlanState.WAITING_APPROVAL:
        return (
            "You approve the plan's approval step: the monitor takes the next steps on its "
            "next run, as long as the canary stays healthy. Your name is recorded."
        )
    return "The plan advances again from the step it was paused at."


def _run_pause(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    services.deployment_pause(
        deployment_id=deployment.pk,
        actor=user,
        reason=data.get("reason") or None,
        expected_status=data["expected_status"],
    )
    return "Rollout paused."


def _run_resume(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    plan = services.deployment_resume(
        deployment_id=deployment.pk, actor=user, expected_status=data["expected_status"]
    )
    return f"Rollout resumed ({STATE_LABELS.get(plan.state, plan.state)})."


PLAN_ACTIONS = (
    DeploymentAction(
        PAUSE,
        "Pause rollout",
        CHANGE_DEPLOYMENT,
        PauseForm,
        _pause_consequence,
        _run_pause,
        group=PLAN,
        when=_may_pause,
    ),
    DeploymentAction(
        RESUME,
        "Resume rollout",
        CHANGE_DEPLOYMENT,
        ActionForm,
        _resume_consequence,
        _run_resume,
        style="primary",
        group=PLAN,
        when=_may_resume,
    ),
)
ACTIONS.update({action.name: action for action in PLAN_ACTIONS})


def _current_note(plan: dict[str, Any], step: dict[str, Any], now: datetime) -> str:
    state = plan["state"]
    if state == PlanState.WAITING_APPROVAL:
        return "waiting for approval"
    if state == PlanState.PAUSED:
        return "paused"
    if plan["next_step_at"] is not None:
        return f"{duration(max(0.0, (plan['next_step_at'] - now).total_seconds()))} left"
    return plan["waiting_for"] or ""


def plan_steps_rows(plan: dict[str, Any], now: datetime | None = None) -> list[dict[str, Any]]:
    """One cell per step: done, current (with its time left or what it waits for), next."""
    now = now or timezone.now()
    rows = []
    for index, step in enumerate(plan["steps"]):
        if index < plan["current_step"]:
            status, note = "done", ""
        elif index == plan["current_step"]:
            status, note = "current", _current_note(plan, step, now)
        else:
            status, note = "next", ""
        rows.append(
            {"index": index + 1, "label": describe_step(step), "status": status, "note": note}
        )
    return rows


def plan_panel(user: Any, deployment: Deployment, buttons: list[dict[str, str]]) -> dict | None:
    """The deployment page's plan block; None for a deployment with neither plan nor checks."""
    plan = selectors.deployment_plan_get(deployment=deployment)
    metrics = admin_panels.panel("metric_checks", deployment) or []
    auto_progress = bool(deployment.canary_config.get("auto_progress"))
    if not (plan["steps"] or metrics or auto_progress or plan["state"] == PlanState.PAUSED):
        return None
    return {
        "state": plan["state"],
        "state_label": STATE_LABELS.get(plan["state"], plan["state"]),
        "steps": plan_steps_rows(plan),
        "waiting_for": plan["waiting_for"],
        "metrics": metrics,
        "buttons": buttons,
        "can_act": bool(user.has_perm(CHANGE_DEPLOYMENT)),
    }


def plan_buttons(situation: Situation, user: Any) -> list[DeploymentAction]:
    return actions_for(situation, user, group=PLAN)


def plan_summary(deployment: Deployment) -> str:
    """The home page's words for a running canary's plan: "step 3 of 7, paused"."""
    plan = selectors.deployment_plan_get(deployment=deployment)
    if not plan["steps"]:
        return "paused" if plan["state"] == PlanState.PAUSED else ""
    total = len(plan["steps"])
    label = STATE_LABELS.get(plan["state"], plan["state"])
    if plan["current_step"] >= total:
        return f"plan {label}"
    step = describe_step(plan["steps"][plan["current_step"]])
    return f"plan step {plan['current_step'] + 1} of {total} ({step}), {label}"
