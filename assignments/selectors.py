"""Reads for the data plane: the rule set's routing state and stored assignments.

Routing state is what every request needs (which deployment is active, which is
in canary, its traffic and filter). It is cached under ``caches["routing"]``
(Redis when ``REDIS_URL`` is set; a no-op cache otherwise, because a
per-process cache could not be invalidated by the worker or another process).
A lifecycle change drops the entry inside its transaction and rewrites it after
commit (``routing_state_refresh``);
a miss fills it with ``add``, which never overwrites, so a reader that loaded
the database just before a change cannot put stale state over the fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from assignments.models import Assignment
from deployments.choices import DeploymentStatus
from deployments.models import Deployment, RuleSet

ROUTING_CACHE_TIMEOUT = 300  # a safety net only: every lifecycle change rewrites the entry
ASSIGNMENT_CACHE_TIMEOUT = 7 * 24 * 60 * 60


@dataclass(frozen=True)
class ServingVersion:
    deployment_id: str
    version_id: str
    version: str


@dataclass(frozen=True)
class RoutingState:
    ruleset_id: str
    active: ServingVersion | None
    canary: ServingVersion | None
    traffic_percentage: int = 0
    target_user_ids: frozenset[str] | None = None
    target_workflow_ids: frozenset[str] | None = None
    canary_config: dict[str, Any] | None = None


def _routing_key(ruleset_id: Any) -> str:
    return f"routing:{ruleset_id}"


def _load_routing_state(ruleset_id: Any) -> RoutingState | None:
    try:
        serving = list(
            Deployment.objects.filter(
                ruleset_id=ruleset_id,
                status__in=[DeploymentStatus.ACTIVE, DeploymentStatus.CANARY],
            )
            .select_related("version")
            .only(
                "id",
                "status",
                "traffic_percentage",
                "canary_target_filter",
                "canary_config",
                "version__id",
                "version__version",
            )
        )
    except (ValueError, TypeError, ValidationError):
        return None
    if not serving and not RuleSet.objects.filter(pk=ruleset_id).exists():
        return None
    active = canary = None
    traffic, users, workflows, config = 0, None, None, None
    for deployment in serving:
        ref = ServingVersion(
            str(deployment.pk), str(deployment.version.pk), deployment.version.version
        )
        if deployment.status == DeploymentStatus.ACTIVE:
            active = ref
        else:
            canary = ref
            traffic = deployment.traffic_percentage
            config = deployment.canary_config
            target = deployment.canary_target_filter or {}
            if target.get("user_ids") is not None:
                users = frozenset(target["user_ids"])
            if target.get("workflow_ids") is not None:
                workflows = frozenset(target["workflow_ids"])
    return RoutingState(str(ruleset_id), active, canary, traffic, users, workflows, config)


def routing_state_for(*, ruleset_id: Any) -> RoutingState | None:
    """None when the rule set does not exist."""
    cache = caches["routing"]
    key = _routing_key(ruleset_id)
    state = cache.get(key)
    if state is None:
        state = _load_routing_state(ruleset_id)
        if state is not None:
            cache.add(key, state, ROUTING_CACHE_TIMEOUT)
    return state


def routing_state_forget(*, ruleset_id: Any) -> None:
    caches["routing"].delete(_routing_key(ruleset_id))


def routing_state_refresh(*, ruleset_id: Any) -> None:
    state = _load_routing_state(ruleset_id)
    cache = caches["routing"]
    if state is None:
        cache.delete(_routing_key(ruleset_id))
    else:
        cache.set(_routing_key(ruleset_id), state, ROUTING_CACHE_TIMEOUT)


def assignment_cache_key(deployment_id: Any, tier: str, identifier: str) -> str:
    return f"assignment:{deployment_id}:{tier}:{identifier}"


def assignment_list(
    *,
    deployment: Deployment,
    user_id: str | None = None,
    session_id: str | None = None,
    workflow_id: str | None = None,
) -> QuerySet[Assignment]:
    assignments = Assignment.objects.filter(deployment=deployment)
    if user_id:
        assignments = assignments.filter(user_id=user_id)
    if session_id:
        assignments = assignments.filter(session_id=session_id)
    if workflow_id:
        assignments = assignments.filter(workflow_id=workflow_id)
    return assignments.order_by("-assigned_at", "id")
