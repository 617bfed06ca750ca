"""The data plane: decide which version serves a request, remember it, run it.

``dataplane_resolve`` and ``dataplane_execute`` share one routing path, so what
the front end's resolve says is exactly what execute serves.

With Redis (production), a request costs one round-trip (``assignments.sticky``):
routing state comes from process memory (``assignments.routing``), sticky
decisions live in Redis and reach PostgreSQL through the assignment stream
(``assignments.buffer``). Without Redis, or while it is unreachable, the same
decisions are made from PostgreSQL alone.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from assignments import router, sticky
from assignments.hooks import ExecutionRecord, ShadowOutcome, hooks
from assignments.models import Assignment
from assignments.routing import RoutingState, canonical_ruleset_id, routing_state_for
from canary.errors import Conflict, DomainError, NotFound
from canary.redis import redis_client, redis_enabled
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from deployments.rule_language import CompiledRuleSet, eval_limits

logger = logging.getLogger(__name__)


class NothingDeployed(Conflict):
    code = "nothing_deployed"


class TokenNotCached(Exception):
    """The fast path cannot vouch for this token; authenticate it the full way."""


class RedisUnavailable(Exception):
    """The fast path needs Redis; the full path can do without."""


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


def dataplane_resolve(
    *,
    ruleset_id: Any,
    context: router.RoutingContext,
    now: datetime | None = None,
    will_execute: bool = False,
    client_check: ClientCheck | None = None,
) -> Resolution:
    """Route one request; persists a new sticky decision exactly as execute would.

    Only an execution may take the breaker's single HALF_OPEN trial
    (``will_execute``); a plain resolve then answers v1, which is what an
    execute without the trial would serve.

    ``client_check`` (the fast path): the token and the rate are checked in the
    same round-trip, before anything is stored; raises ``TokenNotCached``,
    ``RateLimited`` or ``RedisUnavailable`` for the caller to fall back on.
    """
    now = now or timezone.now()
    rid = _canonical(ruleset_id)
    state = routing_state_for(ruleset_id=rid)
    if state is None:
        raise NotFound(f"No rule set with id '{ruleset_id}'.")
    if not redis_enabled():
        return _route_from_database(state, context, now, will_execute=will_execute)
    for _ in range(3):
        try:
            answer = _ask_redis(state, context, now, client_check)
            if answer is None:  # no canary and nothing to check: Redis was not asked
                return _route_active(state)
            if answer.outcome != "stale":
                return _resolution_from(state, context, now, answer, will_execute=will_execute)
        except (TokenNotCached, RateLimited, DomainError):
            raise
        except Exception as exc:
            if client_check is not None:
                raise RedisUnavailable(str(exc)) from exc
            logger.warning("Redis unavailable (%s); routing from the database", exc)
            return _route_from_database(state, context, now, will_execute=will_execute)
        refreshed = routing_state_for(ruleset_id=rid, at_least=answer.generation)
        if refreshed is None:
            raise NotFound(f"No rule set with id '{ruleset_id}'.")
        state = refreshed
    logger.warning("routing generation of %s keeps moving; routing from the database", rid)
    return _route_from_database(state, context, now, will_execute=will_execute)


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
) -> sticky.RouteAnswer | None:
    canary = state.canary is not None and state.active is not None
    if not canary and client_check is None:
        return None
    present = context.present_tiers() if canary else []
    answer = sticky.route(
        redis_client(),
        ruleset_id=state.ruleset_id,
        generation=state.generation,
        token_digest=client_check.token_digest if client_check else None,
        auth_generation=client_check.auth_generation if client_check else 0,
        throttle=client_check.throttle if client_check else None,
        deployment_id=state.canary.deployment_id if canary and state.canary else None,
        present=present,
        candidate=(candidate or _candidate(state, context)) if canary else "",
        session_ttl=settings.CANARY_SESSION_TTL,
        ignore_breaker=ignore_breaker,
        assignment_record=_assignment_record(state, context, now) if present else b"",
        stream_maxlen=settings.CANARY_STREAM_MAXLEN,
        now=now.timestamp(),
        execution=execution if canary else None,
    )
    if answer.outcome == "token":
        raise TokenNotCached()
    if answer.outcome == "throttled":
        raise RateLimited(answer.retry_after)
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
) -> Resolution:
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
    served = answer.version or router.V1
    if not present:
        priority = router.RANDOM
    else:
        priority = present[answer.found - 1][0] if answer.found else present[0][0]
    if served == router.V2 and trial_only:
        claimed = will_execute and hooks.breaker_claim_trial(state.canary.deployment_id, config)
        if not claimed:
            served = router.V1  # HALF_OPEN and another request holds the trial
    return _resolution(state, served, priority, gate_state, clean=clean)


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
    )


# --- without Redis: PostgreSQL (or SQLite) alone ---------------------------------


def _route_from_database(
    state: RoutingState, context: router.RoutingContext, now: datetime, *, will_execute: bool
) -> Resolution:
    if state.canary is None or state.active is None:
        return _route_active(state)
    config = state.canary_config or {}
    gate = hooks.breaker_gate(state.canary.deployment_id, config)
    assert state.policy is not None
    known = _known_assignments(state.canary.deployment_id, context)
    decision = router.decide(
        state.policy,
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
        served = router.V1
    return _resolution(state, served, decision.priority, gate.state, clean=False)


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
) -> str:
    """Persist a decision; when another request stored one first, its answer wins.

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
            return row["assigned_version"]
        Assignment.objects.filter(pk=row["pk"], expires_at=expiry).update(**fields)
    return decision.version


def dataplane_execute(
    *,
    ruleset_id: Any,
    input: Mapping[str, Any],
    context: router.RoutingContext,
    now: datetime | None = None,
    client_check: ClientCheck | None = None,
) -> ExecutionResult:
    """Route, evaluate and record one execution.

    During a canary with Redis, both versions are evaluated first and the one
    round-trip that routes the request also appends the served version's record
    (``assignments.sticky``). Otherwise: route, evaluate, record.
    """
    now = now or timezone.now()
    if redis_enabled():
        done = _execute_in_one_trip(ruleset_id, input, context, now, client_check)
        if done is not None:
            return done
    resolution = dataplane_resolve(
        ruleset_id=ruleset_id,
        context=context,
        now=now,
        will_execute=True,
        client_check=client_check,
    )
    assert resolution.rules is not None
    outcome, shadow = _served_and_shadow(resolution, input)
    if resolution.canary_running:
        hooks.record_execution(
            _execution_record(resolution, outcome, input, context, now, shadow),
            resolution.canary_config or {},
        )
    return _result(resolution, outcome)


@dataclass(frozen=True)
class _Outcome:
    success: bool
    output: Any
    matched_rule: str | None
    error: dict[str, Any] | None
    latency_ms: float
    exhausted: bool = False

    def as_shadow(self, version_id: str) -> ShadowOutcome:
        return ShadowOutcome(
            version_id=version_id,
            success=self.success,
            output=self.output,
            rule=self.error["rule"] if self.error else self.matched_rule,
            error_message=self.error["message"] if self.error else "",
            latency_ms=self.latency_ms,
        )


def _evaluate(
    rules: CompiledRuleSet, input: Mapping[str, Any], budget_ms: float | None = None
) -> _Outcome:
    started = time.perf_counter()
    evaluation = rules.evaluate(input, budget_ms=budget_ms)
    latency_ms = (time.perf_counter() - started) * 1000
    error = (
        {"rule": evaluation.error.rule, "message": evaluation.error.message}
        if evaluation.error
        else None
    )
    return _Outcome(
        evaluation.success,
        evaluation.output,
        evaluation.matched_rule,
        error,
        latency_ms,
        evaluation.exhausted,
    )


def _served_and_shadow(
    resolution: Resolution, input: Mapping[str, Any]
) -> tuple[_Outcome, ShadowOutcome | None]:
    """The served outcome and, when shadowed, the other version's on the same input.

    When both versions are cheap they run in random order, as in the one-trip path:
    whichever runs first pays for caches the request's own processing left cold, and
    the paired latency ratio must not credit that to the version always run second.
    """
    assert resolution.rules is not None
    other = resolution.shadow_rules
    version_id = resolution.shadow_version_id
    both_cheap = other is not None and resolution.rules.is_cheap() and other.is_cheap()
    if other is None or version_id is None or not both_cheap:
        outcome = _evaluate(resolution.rules, input)
        return outcome, _shadow_after(resolution, outcome, input)
    if random.random() < 0.5:
        shadow = _evaluate(other, input)
        outcome = _evaluate(resolution.rules, input)
    else:
        outcome = _evaluate(resolution.rules, input)
        shadow = _evaluate(other, input)
    return outcome, None if shadow.exhausted else shadow.as_shadow(version_id)


def _shadow_after(
    resolution: Resolution, served: _Outcome, input: Mapping[str, Any]
) -> ShadowOutcome | None:
    """The other version on the same input, within what the served evaluation left of
    the budget; one that runs out is not recorded (it says nothing about the rules)."""
    if resolution.shadow_rules is None or resolution.shadow_version_id is None:
        return None
    remaining = eval_limits().budget_ms - served.latency_ms
    if remaining <= 0:
        return None
    shadow = _evaluate(resolution.shadow_rules, input, budget_ms=remaining)
    if shadow.exhausted:
        return None
    return shadow.as_shadow(resolution.shadow_version_id)


def _execute_in_one_trip(
    ruleset_id: Any,
    input: Mapping[str, Any],
    context: router.RoutingContext,
    now: datetime,
    client_check: ClientCheck | None,
) -> ExecutionResult | None:
    """The canary execute in one Redis round-trip; None: take the general path.

    The version the context will most likely be served (its bucket's) is
    evaluated first, both versions when the request is shadowed, so the routing
    call can append the record; a context pinned to a version not evaluated yet
    is evaluated after routing and recorded separately.
    """
    rid = _canonical(ruleset_id)
    for _ in range(3):
        state = routing_state_for(ruleset_id=rid)
        if state is None:
            raise NotFound(f"No rule set with id '{ruleset_id}'.")
        if state.canary is None or state.active is None:
            return None
        guess = _candidate(state, context)
        other = router.V1 if guess == router.V2 else router.V2
        shadow = _shadow_wanted(state)
        before = _evaluate_before_routing(state, input, guess, other if shadow else None)
        entry = None
        if before:
            guessed = before[guess]
            guessed_as_served = _resolution(state, guess, None, "CLOSED", clean=False, shadow=False)
            entry = sticky.ExecutionEntry.of(
                _execution_record(
                    guessed_as_served,
                    guessed,
                    input,
                    context,
                    now,
                    before[other].as_shadow(_version_ref(state, other).version_id)
                    if other in before
                    else None,
                )
            )
        try:
            answer = _ask_redis(state, context, now, client_check, execution=entry, candidate=guess)
        except (TokenNotCached, RateLimited):
            raise
        except Exception as exc:
            if client_check is not None:
                raise RedisUnavailable(str(exc)) from exc
            logger.warning("Redis unavailable (%s); executing from the database", exc)
            return None
        assert answer is not None
        if answer.outcome == "stale":
            routing_state_for(ruleset_id=rid, at_least=answer.generation)
            continue
        if answer.outcome == "breaker":
            return None  # the breaker's full logic, and a separate record
        resolution = _resolution_from(state, context, now, answer, will_execute=True)
        config = resolution.canary_config or {}
        served = resolution.canary_version
        unserved = router.V1 if served == router.V2 else router.V2
        unserved_ref = _version_ref(state, unserved)
        # The shadow decision was drawn before routing; keep it.
        resolution = dataclasses.replace(
            resolution,
            shadow_version_id=unserved_ref.version_id if shadow else None,
            shadow_rules=unserved_ref.rules if shadow else None,
        )
        if answer.logged and served in before:
            outcome = before[served]
            record_shadow = (
                before[unserved].as_shadow(unserved_ref.version_id) if unserved in before else None
            )
            # Stored by the routing call already: count it and feed the breaker.
            hooks.observe_execution(
                _execution_record(resolution, outcome, input, context, now, record_shadow),
                config,
            )
        else:
            assert resolution.rules is not None
            outcome = _evaluate(resolution.rules, input)
            if shadow and unserved in before:  # the wrong guess is the shadow
                record_shadow = before[unserved].as_shadow(unserved_ref.version_id)
            else:
                record_shadow = _shadow_after(resolution, outcome, input)
            hooks.record_execution(
                _execution_record(resolution, outcome, input, context, now, record_shadow),
                config,
            )
        return _result(resolution, outcome)
    return None


def _version_ref(state: RoutingState, version: str) -> Any:
    assert state.canary is not None and state.active is not None
    return state.canary if version == router.V2 else state.active


def _evaluate_before_routing(
    state: RoutingState, input: Mapping[str, Any], guess: str, shadow: str | None
) -> dict[str, _Outcome]:
    """Outcomes evaluated before the routing call, by version (empty: evaluate after).

    NOTE: only versions whose worst case is a small part of the budget are
    evaluated on a guess, so a wrong guess never doubles an expensive evaluation.
    A shadowed request evaluates both, in random order, so neither version's
    latency systematically benefits from warm caches.
    """
    versions = [guess] if shadow is None else [guess, shadow]
    if not all(_version_ref(state, version).rules.is_cheap() for version in versions):
        return {}
    if len(versions) == 2 and random.random() < 0.5:
        versions.reverse()
    return {version: _evaluate(_version_ref(state, version).rules, input) for version in versions}


def _execution_record(
    resolution: Resolution,
    outcome: _Outcome,
    input: Mapping[str, Any],
    context: router.RoutingContext,
    now: datetime,
    shadow: ShadowOutcome | None = None,
) -> ExecutionRecord:
    return ExecutionRecord(
        deployment_id=resolution.deployment_id,
        version_id=resolution.version_id,
        served_version=resolution.canary_version,
        success=outcome.success,
        latency_ms=outcome.latency_ms,
        error_rule=outcome.error["rule"] if outcome.error else None,
        error_message=outcome.error["message"] if outcome.error else "",
        user_id=context.user_id,
        session_id=context.session_id,
        workflow_id=context.workflow_id,
        input=input,
        output=outcome.output,
        executed_at=now,
        matched_rule=outcome.matched_rule,
        shadow=shadow,
        breaker_clean=resolution.breaker_clean,
        redacted_paths=resolution.redacted_paths,
    )


def _result(resolution: Resolution, outcome: _Outcome) -> ExecutionResult:
    return ExecutionResult(
        resolution=resolution,
        success=outcome.success,
        output=outcome.output,
        matched_rule=outcome.matched_rule,
        error=outcome.error,
        latency_ms=round(outcome.latency_ms, 3),
    )


def assignments_write_batch(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """The assignment stream's sink: store decisions made in Redis, idempotently.

    Rows of a canary that has ended are not kept: its rollback cleared them, and
    a decision drained afterwards must not outlive it.
    """
    if connection.vendor == "postgresql":
        _assignments_write_batch_sql(entries)
        return
    records = []
    for _, fields in entries:
        record = orjson.loads(fields[b"r"])
        record["v"] = fields[b"v"].decode()
        records.append(record)
    deployment_ids = {record["d"] for record in records}
    live = {
        str(pk)
        for pk in Deployment.objects.filter(
            pk__in=deployment_ids, status=DeploymentStatus.CANARY
        ).values_list("pk", flat=True)
    }
    rows = []
    for record in records:
        if record["d"] not in live:
            continue
        expires = record.get("exp")
        rows.append(
            Assignment(
                deployment_id=record["d"],
                tier=record["t"],
                identifier=record["i"],
                assigned_version=record["v"],
                version_id=record["v2"] if record["v"] == router.V2 else record["v1"],
                user_id=record["u"],
                session_id=record["s"],
                workflow_id=record["w"],
                assigned_at=datetime.fromtimestamp(record["at"], tz=UTC),
                expires_at=datetime.fromtimestamp(expires, tz=UTC) if expires else None,
            )
        )
    if not rows:
        return
    Assignment.objects.bulk_create(rows, ignore_conflicts=True)
    for row in rows:
        if row.tier == router.SESSION:
            # A session that expired and was decided again replaces its old row.
            Assignment.objects.filter(
                deployment_id=row.deployment_id,
                tier=row.tier,
                identifier=row.identifier,
                expires_at__lte=row.assigned_at,
            ).update(
                assigned_version=row.assigned_version,
                version_id=row.version_id,
                user_id=row.user_id,
                session_id=row.session_id,
                workflow_id=row.workflow_id,
                assigned_at=row.assigned_at,
                expires_at=row.expires_at,
            )
    # NOTE: a rollback committing while this batch waited on its row lock has
    # already cleared the canary's assignments; check again after the insert.
    ended = Deployment.objects.filter(pk__in=live).exclude(status=DeploymentStatus.CANARY)
    Assignment.objects.filter(deployment__in=ended).delete()


_UPSERT_ASSIGNMENTS = """
INSERT INTO assignments_assignment (
    id, deployment_id, tier, identifier, assigned_version, version_id, user_id, session_id,
    workflow_id, assigned_at, expires_at
)
SELECT DISTINCT ON (d.id, e.t, e.i) gen_random_uuid(), d.id, e.t, e.i, e.v,
    CASE WHEN e.v = 'v2' THEN e.v2 ELSE e.v1 END, e.u, e.s, e.w, to_timestamp(e.at),
    to_timestamp(e.exp)
FROM jsonb_to_recordset(%s::jsonb) AS e(
    d uuid, t text, i text, v text, v1 uuid, v2 uuid, u text, s text, w text, at float8,
    exp float8
)
JOIN deployments_deployment d ON d.id = e.d AND d.status = 'canary'
ORDER BY d.id, e.t, e.i, e.at DESC
ON CONFLICT (deployment_id, tier, identifier) DO UPDATE SET
    assigned_version = EXCLUDED.assigned_version, version_id = EXCLUDED.version_id,
    user_id = EXCLUDED.user_id, session_id = EXCLUDED.session_id,
    workflow_id = EXCLUDED.workflow_id, assigned_at = EXCLUDED.assigned_at,
    expires_at = EXCLUDED.expires_at
WHERE assignments_assignment.expires_at IS NOT NULL
    AND assignments_assignment.expires_at <= EXCLUDED.assigned_at
"""
# NOTE: a rollback committing while the batch waited on its row lock has already
# cleared the canary's assignments; what the batch wrote for it goes too.
_DELETE_ENDED = """
DELETE FROM assignments_assignment a USING deployments_deployment d
WHERE a.deployment_id = d.id AND d.id = ANY(%s::uuid[]) AND d.status <> 'canary'
"""


def _assignments_write_batch_sql(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """One upsert per batch (an expired session's row is replaced), parsed by PostgreSQL."""
    documents = [b'{"v":"%s",%s' % (fields[b"v"], fields[b"r"][1:]) for _, fields in entries]
    deployment_ids = {orjson.loads(fields[b"r"])["d"] for _, fields in entries}
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_ASSIGNMENTS, [(b"[" + b",".join(documents) + b"]").decode()])
        cursor.execute(_DELETE_ENDED, [sorted(deployment_ids)])


def assignments_clear(*, deployment_id: Any) -> int:
    """Forget a canary's sticky decisions (its rollback)."""
    deleted, _ = Assignment.objects.filter(deployment_id=deployment_id).delete()
    return deleted
