"""Routing a request to a version (Redis ask, database fallback, stored decisions) and its types."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db.models import Q

from assignments import refill, router, sticky
from assignments.hooks import hooks
from assignments.models import Assignment
from assignments.routing import RoutingState, canonical_ruleset_id
from canary.errors import Conflict, DomainError, NotFound
from canary.redis import redis_client, redis_enabled
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from deployments.rules import CompiledRuleSet


class NothingDeployed(Conflict):
    code = "nothing_deployed"


class TokenNotCached(Exception):
    """The fast path cannot vouch for this token; authenticate it the full way."""


class RedisUnavailable(Exception):
    """The fast path needs Redis; the full path can do without."""


class StickyQuotaExceeded(DomainError):
    """A client token used up its quota of new sticky decisions (per address)."""

    status_code = 429
    code = "sticky_quota_exceeded"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "This client has made as many new assignments for this canary as it may in "
            "this window (CANARY_STICKY_MAX_PER_CLIENT); contexts already assigned are "
            "still served.",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ClientCheck:
    """Authentication and rate limit folded into the routing round-trip (the fast path).

    ``auth_generation``: the one this process knows; Redis vouches for a token only
    when its entry carries the same (``canary.api.authentication``).
    """

    token_digest: str
    auth_generation: int
    throttle: tuple[int, int, str, str] | None = None


def sticky_quota(client: str) -> tuple[str, int, int] | None:
    """The quota of new decisions for ``client`` (a client token and address), or None."""
    limit = settings.CANARY_STICKY_MAX_PER_CLIENT
    if limit <= 0:
        return None
    return client, limit, settings.CANARY_STICKY_CLIENT_WINDOW_SECONDS


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
    # No failures counted by the breaker: a v2 success need not update it.
    breaker_clean: bool = False
    rules: CompiledRuleSet | None = field(default=None, compare=False, repr=False)
    # Set when this request is shadowed (SPEC 9.1): the version not served.
    shadow_version_id: str | None = None
    shadow_rules: CompiledRuleSet | None = field(default=None, compare=False, repr=False)
    redacted_paths: tuple[str, ...] = ()
    # The active version served during its bake (SPEC 10.3), the previous one in shadow:
    # recorded as the bake's v2 beside v1, with no breaker.
    baking: bool = False
    # The version came from a stored assignment, not a decision made now (OFREP's reason).
    stored: bool = False


@dataclass(frozen=True)
class ExecutionResult:
    resolution: Resolution
    success: bool
    output: Any
    matched_rule: str | None
    error: dict[str, Any] | None
    latency_ms: float


def _canonical(ruleset_id: Any) -> str:
    if isinstance(ruleset_id, uuid.UUID):
        return str(ruleset_id)
    canonical = canonical_ruleset_id(ruleset_id)
    if canonical is None:
        raise NotFound(f"No rule set with id '{ruleset_id}'.")
    return canonical


def _route_active(state: RoutingState) -> Resolution:
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
        rules=state.active.rules,
    )


def _candidate(state: RoutingState, context: router.RoutingContext) -> str:
    """The decision for a context seen for the first time (its strongest tier).

    With no ids at all, a random draw that is not stored.
    """
    assert state.policy is not None
    present = context.present_tiers()
    if not present:
        bucket = int(random.random() * router.BUCKETS)
        return router.version_for_bucket(bucket, state.policy.traffic_percentage)
    if not state.policy.is_eligible(context):
        return router.V1
    tier, identifier = present[0]
    bucket = router.bucket_for(state.policy.deployment_id, tier, identifier)
    return router.version_for_bucket(bucket, state.policy.traffic_percentage)


def _assignment_record(state: RoutingState, context: router.RoutingContext, now: datetime) -> bytes:
    assert state.canary is not None and state.active is not None
    tier, identifier = context.present_tiers()[0]
    expires = (
        (now + timedelta(seconds=settings.CANARY_SESSION_TTL)).timestamp()
        if tier == router.SESSION
        else None
    )
    return orjson.dumps(
        {
            "d": state.canary.deployment_id,
            "t": tier,
            "i": identifier,
            "u": context.user_id or "",
            "s": context.session_id or "",
            "w": context.workflow_id or "",
            "at": now.timestamp(),
            "exp": expires,
            "v1": state.active.version_id,
            "v2": state.canary.version_id,
        }
    )


def _ask_redis(
    state: RoutingState,
    context: router.RoutingContext,
    now: datetime,
    client_check: ClientCheck | None,
    *,
    ignore_breaker: bool = False,
    execution: sticky.ExecutionEntry | None = None,
    candidate: str | None = None,
    capture: bytes = b"",
    quota_client: str | None = None,
) -> sticky.RouteAnswer | None:
    canary = state.canary is not None and state.active is not None
    if not canary and client_check is None and execution is None:
        return None
    present = context.present_tiers() if canary else []
    client = redis_client()
    refill.forget_held_if_needed(client)
    answer = sticky.route(
        client,
        ruleset_id=state.ruleset_id,
        generation=state.generation,
        token_digest=client_check.token_digest if client_check else None,
        auth_generation=client_check.auth_generation if client_check else 0,
        throttle=client_check.throttle if client_check else None,
        deployment_id=state.canary.deployment_id if canary and state.canary else None,
        present=present,
        candidate=(candidate or _candidate(state, context)) if canary else (candidate or ""),
        session_ttl=settings.CANARY_SESSION_TTL,
        ignore_breaker=ignore_breaker,
        assignment_record=_assignment_record(state, context, now) if present else b"",
        stream_maxlen=settings.CANARY_STREAM_MAXLEN,
        now=now.timestamp(),
        execution=execution,
        capture=b"" if canary else capture,
        max_held=settings.CANARY_STICKY_MAX_PER_DEPLOYMENT,
        quota=sticky_quota(quota_client) if quota_client else None,
    )
    if answer.outcome == "token":
        raise TokenNotCached()
    if answer.outcome == "throttled":
        raise RateLimited(answer.retry_after)
    if answer.outcome == "quota":
        raise StickyQuotaExceeded(answer.retry_after)
    return answer


def _breaker_clean(raw: bytes | None) -> bool:
    if raw is None:
        return True
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return decoded.get("state") == "CLOSED" and not decoded.get("consecutive_failures")


def _resolution_from(
    state: RoutingState,
    context: router.RoutingContext,
    now: datetime,
    answer: sticky.RouteAnswer,
    *,
    will_execute: bool,
    shadow: bool | None = None,
) -> Resolution:
    """``shadow``: whether the request is shadowed, when the caller drew it already."""
    if state.canary is None or state.active is None:
        return _route_active(state)
    config = state.canary_config or {}
    present = context.present_tiers()
    gate_state, trial_only, clean = "CLOSED", False, _breaker_clean(answer.breaker)
    if answer.outcome == "breaker":
        gate = hooks.breaker_gate(state.canary.deployment_id, config)
        if not gate.allow_v2:
            return _resolution(state, router.V1, None, gate.state, clean=False)
        gate_state, trial_only, clean = gate.state, gate.trial_only, False
        retried = _ask_redis(state, context, now, None, ignore_breaker=True)
        assert retried is not None
        answer = retried
    if answer.outcome in ("refill", "full"):
        return _route_past_redis(state, context, now, answer, will_execute=will_execute)
    served = answer.version or router.V1
    if not present:
        priority = router.RANDOM
    else:
        priority = present[answer.found - 1][0] if answer.found else present[0][0]
    if served == router.V2 and trial_only:
        claimed = will_execute and hooks.breaker_claim_trial(state.canary.deployment_id, config)
        if not claimed:
            served = router.V1  # HALF_OPEN and another request holds the trial
    return _resolution(
        state,
        served,
        priority,
        gate_state,
        clean=clean,
        shadow=shadow,
        stored=bool(present and answer.found),
    )


def _shadow_wanted(state: RoutingState) -> bool:
    """Sampled by ``shadow_percentage``; a dark launch (0% traffic) shadows every request."""
    if state.traffic_percentage == 0:
        return True
    share = (state.canary_config or {}).get("shadow_percentage", 100)
    return share >= 100 or (share > 0 and random.random() * 100 < share)


def _resolution(
    state: RoutingState,
    served: str,
    priority: str | None,
    breaker_state: str,
    *,
    clean: bool,
    shadow: bool | None = None,
    stored: bool = False,
) -> Resolution:
    assert state.canary is not None and state.active is not None
    ref = state.canary if served == router.V2 else state.active
    other = state.active if served == router.V2 else state.canary
    if shadow is None:
        shadow = _shadow_wanted(state)
    return Resolution(
        ruleset_id=state.ruleset_id,
        deployment_id=state.canary.deployment_id,
        version_id=ref.version_id,
        version=ref.version,
        canary_version=served,
        assignment_priority=priority,
        canary_running=True,
        canary_config=state.canary_config or {},
        breaker_state=breaker_state,
        breaker_clean=clean,
        rules=ref.rules,
        shadow_version_id=other.version_id if shadow else None,
        shadow_rules=other.rules if shadow else None,
        redacted_paths=state.redacted_paths,
        stored=stored,
    )


def _route_past_redis(
    state: RoutingState,
    context: router.RoutingContext,
    now: datetime,
    answer: sticky.RouteAnswer,
    *,
    will_execute: bool,
) -> Resolution:
    """Redis answered but PostgreSQL decides: it lost the deployment's decisions
    (``refill``: they are copied back in the background, and a new decision is
    written through), or the deployment is at its ceiling (``full``: what a weaker
    tier holds in Redis counts, behind PostgreSQL's rows)."""
    assert state.canary is not None
    deployment_id = state.canary.deployment_id
    if answer.outcome == "refill":
        resolution = _route_from_database(
            state, context, now, will_execute=will_execute, write_through=True
        )
        refill.refill_soon(deployment_id)
        return resolution
    present = context.present_tiers()
    in_redis: dict[tuple[str, str], router.StoredAssignment] = {}
    if answer.found and answer.version:
        tier, identifier = present[answer.found - 1]
        in_redis[(tier, identifier)] = router.StoredAssignment(tier, identifier, answer.version)
    return _route_from_database(
        state, context, now, will_execute=will_execute, also_known=in_redis, past_ceiling=True
    )


# --- without Redis: PostgreSQL (or SQLite) alone ---------------------------------


def _route_from_database(
    state: RoutingState,
    context: router.RoutingContext,
    now: datetime,
    *,
    will_execute: bool,
    write_through: bool = False,
    also_known: dict[tuple[str, str], router.StoredAssignment] | None = None,
    past_ceiling: bool = False,
) -> Resolution:
    """PostgreSQL's stored decision for the context, else a new one stored there.

    ``write_through``: Redis is being re-filled; put a new decision there too.
    ``past_ceiling``: Redis is fine but full; otherwise (Redis unreachable) this
    process remembers that Redis no longer holds every decision of the deployment.
    """
    if state.canary is None or state.active is None:
        return _route_active(state)
    config = state.canary_config or {}
    gate = hooks.breaker_gate(state.canary.deployment_id, config)
    assert state.policy is not None
    known = {**(also_known or {}), **_known_assignments(state.canary.deployment_id, context)}
    decision = router.decide(
        state.policy,
        context,
        lambda tier, identifier: known.get((tier, identifier)),
        now=now.timestamp(),
        breaker_open=not gate.allow_v2,
    )
    served = decision.version
    if decision.store_at is not None:
        served, expires_at = _store(state, decision, context, now)
        deployment_id = state.canary.deployment_id
        if write_through:
            refill.write_through(deployment_id, *decision.store_at, served, expires_at)
        elif not past_ceiling and redis_enabled():
            refill.note_decided_without_redis(deployment_id)
    trial_lost = (
        served == router.V2
        and gate.trial_only
        and not (will_execute and hooks.breaker_claim_trial(state.canary.deployment_id, config))
    )
    if trial_lost:
        served = router.V1
    return _resolution(
        state, served, decision.priority, gate.state, clean=False, stored=decision.existing
    )


def _known_assignments(
    deployment_id: str, context: router.RoutingContext
) -> dict[tuple[str, str], router.StoredAssignment]:
    """Every stored assignment for the request's ids, in one query."""
    present = context.present_tiers()
    if not present:
        return {}
    query = Q()
    for tier, identifier in present:
        query |= Q(tier=tier, identifier=identifier)
    rows = Assignment.objects.filter(query, deployment_id=deployment_id).values_list(
        "tier", "identifier", "assigned_version", "expires_at"
    )
    return {
        (tier, identifier): router.StoredAssignment(
            tier, identifier, version, expires_at.timestamp() if expires_at else None
        )
        for tier, identifier, version, expires_at in rows
    }


def _store(
    state: RoutingState,
    decision: router.Decision,
    context: router.RoutingContext,
    now: datetime,
) -> tuple[str, datetime | None]:
    """Persist a decision; when another request stored one first, its answer wins.

    Returns the version stored and its expiry (sessions).

    The unique (deployment, tier, identifier) constraint makes concurrent first
    requests converge on one row: each inserts-or-ignores, then reads the row.
    An expired session row is replaced with a compare-and-set on its expiry.
    """
    assert state.canary is not None and state.active is not None and decision.store_at
    tier, identifier = decision.store_at
    deployment_id = state.canary.deployment_id
    expires_at = (
        now + timedelta(seconds=settings.CANARY_SESSION_TTL) if tier == router.SESSION else None
    )
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
        return decision.version, expires_at
    for _ in range(3):
        row = (
            Assignment.objects.filter(deployment_id=deployment_id, tier=tier, identifier=identifier)
            .values("pk", "assigned_version", "expires_at")
            .first()
        )
        if row is None:  # removed by a concurrent rollback; serve the decision, store nothing
            return decision.version, expires_at
        expiry = row["expires_at"]
        if expiry is None or expiry > now:
            return row["assigned_version"], expiry
        Assignment.objects.filter(pk=row["pk"], expires_at=expiry).update(**fields)
    return decision.version, expires_at
