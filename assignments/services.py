"""The data plane: decide which version serves a request, remember it, run it.

``dataplane_resolve`` and ``dataplane_execute`` share one routing path, so what
the front end's resolve says is exactly what execute serves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db.models import Q
from django.utils import timezone

from assignments import router
from assignments.hooks import ExecutionRecord, hooks
from assignments.models import Assignment
from assignments.selectors import (
    ASSIGNMENT_CACHE_TIMEOUT,
    RoutingState,
    assignment_cache_key,
    routing_state_for,
)
from canary.errors import Conflict, NotFound
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from deployments.selectors import compiled_rules_for_version_id


class NothingDeployed(Conflict):
    code = "nothing_deployed"


@dataclass(frozen=True)
class Resolution:
    ruleset_id: str
    deployment_id: str
    version_id: str
    version: str
    canary_version: str  # "v1" or "v2"
    assignment_priority: str | None
    canary_running: bool
    canary_config: dict[str, Any] | None = None
    breaker_state: str | None = None


@dataclass(frozen=True)
class ExecutionResult:
    resolution: Resolution
    success: bool
    output: Any
    matched_rule: str | None
    error: dict[str, Any] | None
    latency_ms: float


def _session_ttl() -> timedelta:
    return timedelta(seconds=settings.CANARY_SESSION_TTL)


def dataplane_resolve(
    *,
    ruleset_id: Any,
    context: router.RoutingContext,
    now: datetime | None = None,
    will_execute: bool = False,
) -> Resolution:
    """Route one request; persists a new sticky decision exactly as execute would.

    Only an execution may take the breaker's single HALF_OPEN trial
    (``will_execute``); a plain resolve then answers v1, which is what an
    execute without the trial would serve.
    """
    now = now or timezone.now()
    state = routing_state_for(ruleset_id=ruleset_id)
    if state is None:
        raise NotFound(f"No rule set with id '{ruleset_id}'.")
    if state.canary is None:
        if state.active is None:
            raise NothingDeployed(
                "Nothing is deployed for this rule set: create a deployment and promote "
                "it (the first release) before executing."
            )
        return Resolution(
            ruleset_id=state.ruleset_id,
            deployment_id=state.active.deployment_id,
            version_id=state.active.version_id,
            version=state.active.version,
            canary_version=router.V1,
            assignment_priority=None,
            canary_running=False,
        )
    return _route_canary(state, context, now, will_execute=will_execute)


def _route_canary(
    state: RoutingState, context: router.RoutingContext, now: datetime, *, will_execute: bool
) -> Resolution:
    assert state.canary is not None and state.active is not None
    config = state.canary_config or {}
    gate = hooks.breaker_gate(state.canary.deployment_id, config)
    policy = router.CanaryPolicy(
        deployment_id=state.canary.deployment_id,
        traffic_percentage=state.traffic_percentage,
        target_user_ids=state.target_user_ids,
        target_workflow_ids=state.target_workflow_ids,
    )
    known = _known_assignments(state.canary.deployment_id, context)
    decision = router.decide(
        policy,
        context,
        lambda tier, identifier: known.get((tier, identifier)),
        now=now.timestamp(),
        breaker_open=not gate.allow_v2,
    )
    served = decision.version
    if decision.store_at is not None:
        served = _store(state, decision, context, now)
    trial_lost = (
        served == router.V2
        and gate.trial_only
        and not (will_execute and hooks.breaker_claim_trial(state.canary.deployment_id, config))
    )
    if trial_lost:
        # HALF_OPEN and another request holds the trial: v1 this time.
        served = router.V1
    ref = state.canary if served == router.V2 else state.active
    return Resolution(
        ruleset_id=state.ruleset_id,
        deployment_id=state.canary.deployment_id,
        version_id=ref.version_id,
        version=ref.version,
        canary_version=served,
        assignment_priority=decision.priority,
        canary_running=True,
        canary_config=config,
        breaker_state=gate.state,
    )


def _known_assignments(
    deployment_id: str, context: router.RoutingContext
) -> dict[tuple[str, str], router.StoredAssignment]:
    """Every stored assignment for the request's ids: Redis first, one query for the rest."""
    present = context.present_tiers()
    if not present:
        return {}
    cache = caches["routing"]
    keys = {assignment_cache_key(deployment_id, t, i): (t, i) for t, i in present}
    cached = cache.get_many(list(keys))
    known = {keys[key]: router.StoredAssignment(*value) for key, value in cached.items()}
    missing = [pair for pair in present if pair not in known]
    if missing:
        query = Q()
        for tier, identifier in missing:
            query |= Q(tier=tier, identifier=identifier)
        rows = Assignment.objects.filter(query, deployment_id=deployment_id).values_list(
            "tier", "identifier", "assigned_version", "expires_at"
        )
        for tier, identifier, version, expires_at in rows:
            stored = router.StoredAssignment(
                tier, identifier, version, expires_at.timestamp() if expires_at else None
            )
            known[(tier, identifier)] = stored
            _cache_assignment(deployment_id, stored)
    return known


def _cache_assignment(deployment_id: str, stored: router.StoredAssignment) -> None:
    timeout = ASSIGNMENT_CACHE_TIMEOUT
    if stored.expires_at is not None:
        timeout = max(1, int(stored.expires_at - time.time()))
    caches["routing"].set(
        assignment_cache_key(deployment_id, stored.tier, stored.identifier),
        (stored.tier, stored.identifier, stored.version, stored.expires_at),
        timeout,
    )


def _store(
    state: RoutingState,
    decision: router.Decision,
    context: router.RoutingContext,
    now: datetime,
) -> str:
    """Persist a decision; when another request stored one first, its answer wins.

    The unique (deployment, tier, identifier) constraint makes concurrent first
    requests converge on one row: each inserts-or-ignores, then reads the row.
    An expired session row is replaced with a compare-and-set on its expiry.
    """
    assert state.canary is not None and state.active is not None and decision.store_at
    tier, identifier = decision.store_at
    deployment_id = state.canary.deployment_id
    expires_at = now + _session_ttl() if tier == router.SESSION else None
    version_ref = state.canary if decision.version == router.V2 else state.active
    fields = {
        "assigned_version": decision.version,
        "version_id": version_ref.version_id,
        "user_id": context.user_id or "",
        "session_id": context.session_id or "",
        "workflow_id": context.workflow_id or "",
        "assigned_at": now,
        "expires_at": expires_at,
    }
    Assignment.objects.bulk_create(
        [Assignment(deployment_id=deployment_id, tier=tier, identifier=identifier, **fields)],
        ignore_conflicts=True,
    )
    # NOTE: a rollback that committed while this request was routing has already
    # cleared the canary's assignments; this one must not survive it. The insert
    # waits on the rollback's row lock, so checking afterwards closes the race.
    if not Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.CANARY).exists():
        Assignment.objects.filter(
            deployment_id=deployment_id, tier=tier, identifier=identifier
        ).delete()
        return decision.version
    for _ in range(3):
        row = (
            Assignment.objects.filter(deployment_id=deployment_id, tier=tier, identifier=identifier)
            .values("pk", "assigned_version", "expires_at")
            .first()
        )
        if row is None:  # removed by a concurrent rollback; serve the decision, store nothing
            return decision.version
        expiry = row["expires_at"]
        if expiry is None or expiry > now:
            stored = router.StoredAssignment(
                tier, identifier, row["assigned_version"], expiry.timestamp() if expiry else None
            )
            _cache_assignment(deployment_id, stored)
            return stored.version
        Assignment.objects.filter(pk=row["pk"], expires_at=expiry).update(**fields)
    return decision.version


def dataplane_execute(
    *,
    ruleset_id: Any,
    input: Mapping[str, Any],
    context: router.RoutingContext,
    now: datetime | None = None,
) -> ExecutionResult:
    now = now or timezone.now()
    resolution = dataplane_resolve(
        ruleset_id=ruleset_id, context=context, now=now, will_execute=True
    )
    compiled = compiled_rules_for_version_id(resolution.version_id)
    started = time.perf_counter()
    evaluation = compiled.evaluate(input)
    latency_ms = (time.perf_counter() - started) * 1000
    error = (
        {"rule": evaluation.error.rule, "message": evaluation.error.message}
        if evaluation.error
        else None
    )
    if resolution.canary_running:
        hooks.record_execution(
            ExecutionRecord(
                deployment_id=resolution.deployment_id,
                version_id=resolution.version_id,
                served_version=resolution.canary_version,
                success=evaluation.success,
                latency_ms=latency_ms,
                error_rule=error["rule"] if error else None,
                error_message=error["message"] if error else "",
                user_id=context.user_id,
                session_id=context.session_id,
                workflow_id=context.workflow_id,
                input=dict(input),
                output=evaluation.output,
                executed_at=now,
            ),
            resolution.canary_config or {},
        )
    return ExecutionResult(
        resolution=resolution,
        success=evaluation.success,
        output=evaluation.output,
        matched_rule=evaluation.matched_rule,
        error=error,
        latency_ms=round(latency_ms, 3),
    )


def assignments_clear(*, deployment_id: Any) -> int:
    """Forget a canary's sticky decisions (its rollback)."""
    deleted, _ = Assignment.objects.filter(deployment_id=deployment_id).delete()
    return deleted
