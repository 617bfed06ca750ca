"""Reads of rule sets and deployments, shared by the API and the admin."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from canary.errors import NotFound
from deployments.choices import DeploymentStatus, PlanState
from deployments.models import (
    Deployment,
    DeploymentEvent,
    DeploymentPlan,
    PromotionApproval,
    RuleSet,
    RuleSetTestCase,
    RuleSetVersion,
)
from deployments.rules import CompiledRuleSet, compiled_for


def ruleset_list() -> QuerySet[RuleSet]:
    return RuleSet.objects.all()


def ruleset_get(*, ruleset_id: Any) -> RuleSet:
    return _get_or_404(RuleSet.objects.all(), ruleset_id, "rule set")


def ruleset_version_list(*, ruleset: RuleSet) -> QuerySet[RuleSetVersion]:
    return RuleSetVersion.objects.filter(ruleset=ruleset).order_by("-created_at")


def ruleset_test_case_list(*, ruleset: RuleSet) -> QuerySet[RuleSetTestCase]:
    return RuleSetTestCase.objects.filter(ruleset=ruleset).select_related("created_by")


def ruleset_version_latest(*, ruleset: RuleSet) -> RuleSetVersion | None:
    return RuleSetVersion.objects.filter(ruleset=ruleset).order_by("-created_at").first()


def compiled_rules_for(version: RuleSetVersion) -> CompiledRuleSet:
    """Versions are immutable, so their id is a safe key for the per-process compile cache."""
    return compiled_for(version.pk, version.rules, version.default)


@functools.lru_cache(maxsize=256)
def compiled_rules_for_version_id(version_id: str) -> CompiledRuleSet:
    """The data plane knows only version ids; versions are immutable, so cache per process."""
    version = RuleSetVersion.objects.only("id", "rules", "default").get(pk=version_id)
    return compiled_rules_for(version)


def deployment_list() -> QuerySet[Deployment]:
    return Deployment.objects.select_related(
        "ruleset", "version", "baseline__version", "created_by"
    )


def deployment_get(*, deployment_id: Any) -> Deployment:
    return _get_or_404(deployment_list(), deployment_id, "deployment")


def deployment_active_for(*, ruleset_id: Any) -> Deployment | None:
    return (
        Deployment.objects.select_related("version")
        .filter(ruleset_id=ruleset_id, status=DeploymentStatus.ACTIVE)
        .first()
    )


def deployment_canaries_by_baseline(*, baseline_ids: Iterable[Any]) -> dict[Any, Deployment]:
    """The running canary built on each of these deployments (as its v1), by baseline id.

    One query for a whole page of deployments: an active deployment serving as v1
    does not serve 100%, and the console must not say it does.
    """
    ids = list(baseline_ids)
    if not ids:
        return {}
    canaries = Deployment.objects.filter(
        status=DeploymentStatus.CANARY, baseline_id__in=ids
    ).select_related("version")
    return {canary.baseline_id: canary for canary in canaries}


def deployment_event_list(*, deployment: Deployment) -> QuerySet[DeploymentEvent]:
    return DeploymentEvent.objects.filter(deployment=deployment).order_by("created_at", "id")


def deployment_pending_approvers(*, deployment: Deployment) -> list[str]:
    """Who has approved a promotion that still waits for more approvals, oldest first."""
    return list(
        PromotionApproval.objects.filter(deployment=deployment)
        .order_by("created_at", "id")
        .values_list("approver", flat=True)
    )


def deployment_plan_get(*, deployment: Deployment) -> dict[str, Any]:
    """``GET /deployments/{id}/plan`` (SPEC 10.1): the steps, where the plan stands, its history."""
    steps = list(deployment.canary_config.get("steps") or [])
    plan = DeploymentPlan.objects.filter(deployment=deployment).first()
    state = plan.state if plan is not None else PlanState.NONE
    current = plan.current_step if plan is not None else 0
    promoted = deployment.status in (DeploymentStatus.ACTIVE, DeploymentStatus.DEPRECATED)
    if steps and promoted and state != PlanState.DONE:
        state, current = PlanState.DONE, len(steps)  # a person promoted ahead of the plan
    started = plan.step_started_at if plan is not None else None
    next_step_at = None
    if (
        state == PlanState.RUNNING
        and started is not None
        and current < len(steps)
        and "pause_minutes" in steps[current]
    ):
        next_step_at = started + timedelta(minutes=int(steps[current]["pause_minutes"]))
    return {
        "deployment_id": str(deployment.pk),
        "deployment_status": deployment.status,
        "state": state,
        "steps": steps,
        "current_step": current,
        "step_started_at": started,
        "next_step_at": next_step_at,
        "paused_from": (plan.paused_from or None) if plan is not None else None,
        "waiting_for": (plan.waiting_for or None) if plan is not None else None,
        "history": list(plan.history) if plan is not None else [],
    }


def _get_or_404(queryset: QuerySet, pk: Any, label: str) -> Any:
    try:
        found = queryset.filter(pk=pk).first()
    except (ValueError, TypeError, ValidationError):
        found = None
    if found is None:
        raise NotFound(f"No {label} with id '{pk}'.")
    return found


@dataclass(frozen=True)
class BakeWindow:
    """The bake after a promotion (SPEC 10.3): the previous deployment keeps running in
    shadow from ``started_at`` (the promotion) until ``ends_at``."""

    previous_id: Any
    started_at: datetime
    ends_at: datetime

    def running(self, now: datetime) -> bool:
        return self.started_at <= now < self.ends_at


def deployment_bake_window(*, deployment: Deployment) -> BakeWindow | None:
    """The bake of an active deployment promoted from a canary with ``bake_minutes``;
    None for any other (an initial release has no previous version to judge it against)."""
    minutes = int((deployment.canary_config or {}).get("bake_minutes") or 0)
    if (
        minutes <= 0
        or deployment.status != DeploymentStatus.ACTIVE
        or deployment.promoted_at is None
        or deployment.baseline_id is None
    ):
        return None
    return BakeWindow(
        deployment.baseline_id,
        deployment.promoted_at,
        deployment.promoted_at + timedelta(minutes=minutes),
    )
