"""The data plane's entry points, resolve and execute, with evaluation and the one-trip path."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from assignments import router, sticky
from assignments.hooks import ExecutionRecord, ShadowOutcome, hooks
from assignments.routing import RoutingState, routing_state_for
from assignments.services.resolve import (
    ClientCheck,
    ExecutionResult,
    RateLimited,
    RedisUnavailable,
    Resolution,
    TokenNotCached,
    _ask_redis,
    _candidate,
    _canonical,
    _resolution,
    _resolution_from,
    _route_active,
    _route_from_database,
    _shadow_wanted,
)
from canary.errors import DomainError, NotFound
from canary.redis import redis_available
from deployments.rules import (
    CompiledRuleSet,
    Evaluation,
    PreparedInput,
    eval_limits,
    prepare_input,
)
from deployments.rules.redaction import redact_input

logger = logging.getLogger(__name__)


def dataplane_resolve(
    *,
    ruleset_id: Any,
    context: router.RoutingContext,
    now: datetime | None = None,
    will_execute: bool = False,
    client_check: ClientCheck | None = None,
    capture: bytes = b"",
    quota_client: str | None = None,
) -> Resolution:
    """Route one request; persists a new sticky decision exactly as execute would.

    Only an execution may take the breaker's single HALF_OPEN trial
    (``will_execute``); a plain resolve then answers v1, which is what an
    execute without the trial would serve.

    ``client_check`` (the fast path): the token and the rate are checked in the
    same round-trip, before anything is stored; raises ``TokenNotCached``,
    ``RateLimited`` or ``RedisUnavailable`` for the caller to fall back on.

    ``capture`` (an execute sampled for capture, ``_capture_document``): with no
    canary it rides the routing call, or is handed to ``hooks.record_capture``
    when Redis is not asked.
    ``quota_client`` (a client token and address): its new decisions count against
    ``CANARY_STICKY_MAX_PER_CLIENT``; beyond it ``StickyQuotaExceeded`` (429).
    """
    now = now or timezone.now()
    rid = _canonical(ruleset_id)
    state = routing_state_for(ruleset_id=rid)
    if state is None:
        raise NotFound(f"No rule set with id '{ruleset_id}'.")
    if not redis_available():
        if capture and state.canary is None:
            hooks.record_capture(capture)
        return _route_from_database(state, context, now, will_execute=will_execute)
    for _ in range(3):
        try:
            answer = _ask_redis(
                state, context, now, client_check, capture=capture, quota_client=quota_client
            )
            if answer is None:  # no canary and nothing to check: Redis was not asked
                if capture:
                    hooks.record_capture(capture)
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
    # The bake's sample (SPEC 10.3) is drawn once, so a request handed from the one-trip
    # path to the general one is not drawn twice.
    bake_draw = random.random()
    if redis_available():
        done = _execute_in_one_trip(ruleset_id, input, context, now, client_check, bake_draw)
        if done is not None:
            return done
    resolution = dataplane_resolve(
        ruleset_id=ruleset_id,
        context=context,
        now=now,
        will_execute=True,
        client_check=client_check,
        capture=_capture_document(ruleset_id, input, now),
    )
    if not resolution.canary_running:
        resolution = _with_bake(resolution, now, bake_draw)
    assert resolution.rules is not None
    outcome, shadow = _served_and_shadow(resolution, input)
    if resolution.canary_running or resolution.baking:
        hooks.record_execution(
            _execution_record(resolution, outcome, input, context, now, shadow),
            resolution.canary_config or {},
        )
    return _result(resolution, outcome)


def _bake_shadowed(state: RoutingState, now: datetime, draw: float) -> bool:
    """Whether this request evaluates the previous version beside the active one."""
    if not state.baking(now.timestamp()):
        return False
    share = state.bake_shadow_percentage
    return share >= 100 or (share > 0 and draw * 100 < share)


def _baking(resolution: Resolution, state: RoutingState) -> Resolution:
    assert state.bake is not None
    return dataclasses.replace(
        resolution,
        baking=True,
        shadow_version_id=state.bake.version_id,
        shadow_rules=state.bake.rules,
        redacted_paths=state.redacted_paths,
    )


def _with_bake(resolution: Resolution, now: datetime, draw: float) -> Resolution:
    """The active deployment's answer, shadowed by the bake's previous version when sampled."""
    state = routing_state_for(ruleset_id=resolution.ruleset_id)
    if (
        state is None
        or state.active is None
        or state.active.deployment_id != resolution.deployment_id
        or not _bake_shadowed(state, now, draw)
    ):
        return resolution
    return _baking(resolution, state)


def _bake_in_one_trip(
    state: RoutingState,
    input: Mapping[str, Any],
    context: router.RoutingContext,
    now: datetime,
    client_check: ClientCheck | None,
) -> ExecutionResult | str | None:
    """A request of the bake: evaluate both versions, then one round trip checks the
    generation (and the token and rate) and appends the record. ``"stale"``: reload and
    retry; None: take the general path."""
    resolution = _baking(_route_active(state), state)
    outcome, shadow = _served_and_shadow(resolution, input)
    record = _execution_record(resolution, outcome, input, context, now, shadow)
    try:
        answer = _ask_redis(
            state,
            context,
            now,
            client_check,
            execution=sticky.ExecutionEntry.of(record),
            candidate=record.served_version,
        )
    except (TokenNotCached, RateLimited):
        raise
    except Exception as exc:
        if client_check is not None:
            raise RedisUnavailable(str(exc)) from exc
        logger.warning("Redis unavailable (%s); executing from the database", exc)
        return None
    assert answer is not None
    if answer.outcome == "stale":
        routing_state_for(ruleset_id=state.ruleset_id, at_least=answer.generation)
        return "stale"
    if answer.logged:
        hooks.observe_execution(record, {})
    else:
        hooks.record_execution(record, {})
    return _result(resolution, outcome)


def _capture_document(ruleset_id: Any, input: Mapping[str, Any], now: datetime) -> bytes:
    """The captured input of a sampled execute, redacted here; b"" when not sampled.

    SPEC 10.2: only executes served by the active version while no canary runs, only
    when inputs are stored at all; the draw is made in process, so an execute not
    sampled costs nothing more.
    """
    state = routing_state_for(ruleset_id=_canonical(ruleset_id))
    if (
        state is None
        or state.canary is not None
        or state.active is None
        or state.capture_percentage <= 0
        or not settings.CANARY_STORE_INPUTS
        or random.random() * 100 >= state.capture_percentage
    ):
        return b""
    stored, removed = redact_input(input, state.redacted_paths, store_inputs=True)
    return orjson.dumps(
        {
            "ruleset_id": state.ruleset_id,
            "version_id": state.active.version_id,
            "input": stored,
            "redacted": removed or None,
            "created_at": now.timestamp(),
        }
    )


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
    rules: CompiledRuleSet,
    input: Mapping[str, Any],
    budget_ms: float | None = None,
    prepared: PreparedInput | Evaluation | None = None,
) -> _Outcome:
    """``prepared``: the input prepared once for both versions of a shadowed request."""
    started = time.perf_counter()
    evaluation = rules.evaluate(input, budget_ms=budget_ms, prepared=prepared)
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
    prepared = prepare_input(input) if other is not None else None
    if other is None or version_id is None or not both_cheap:
        outcome = _evaluate(resolution.rules, input, prepared=prepared)
        return outcome, _shadow_after(resolution, outcome, input, prepared)
    if random.random() < 0.5:
        shadow = _evaluate(other, input, prepared=prepared)
        outcome = _evaluate(resolution.rules, input, prepared=prepared)
    else:
        outcome = _evaluate(resolution.rules, input, prepared=prepared)
        shadow = _evaluate(other, input, prepared=prepared)
    return outcome, None if shadow.exhausted else shadow.as_shadow(version_id)


def _shadow_after(
    resolution: Resolution,
    served: _Outcome,
    input: Mapping[str, Any],
    prepared: PreparedInput | Evaluation | None = None,
) -> ShadowOutcome | None:
    """The other version on the same input, within what the served evaluation left of
    the budget; one that runs out is not recorded (it says nothing about the rules)."""
    if resolution.shadow_rules is None or resolution.shadow_version_id is None:
        return None
    remaining = eval_limits().budget_ms - served.latency_ms
    if remaining <= 0:
        return None
    shadow = _evaluate(resolution.shadow_rules, input, budget_ms=remaining, prepared=prepared)
    if shadow.exhausted:
        return None
    return shadow.as_shadow(resolution.shadow_version_id)


def _execute_in_one_trip(
    ruleset_id: Any,
    input: Mapping[str, Any],
    context: router.RoutingContext,
    now: datetime,
    client_check: ClientCheck | None,
    bake_draw: float = 1.0,
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
            if state.active is None or not _bake_shadowed(state, now, bake_draw):
                return None
            baked = _bake_in_one_trip(state, input, context, now, client_check)
            if baked == "stale":
                continue
            return baked if isinstance(baked, ExecutionResult) else None
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
        except (TokenNotCached, RateLimited, DomainError):
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
        resolution = _resolution_from(state, context, now, answer, will_execute=True, shadow=shadow)
        config = resolution.canary_config or {}
        served = resolution.canary_version
        unserved = router.V1 if served == router.V2 else router.V2
        unserved_ref = _version_ref(state, unserved)
        # The shadow decision was drawn before routing; keep it (a path that routed
        # otherwise, past Redis or by the breaker, drew its own).
        if resolution.shadow_version_id != (unserved_ref.version_id if shadow else None):
            resolution = dataclasses.replace(
                resolution,
                shadow_version_id=unserved_ref.version_id if shadow else None,
                shadow_rules=unserved_ref.rules if shadow else None,
            )
        if served in before:
            outcome = before[served]
            record_shadow = (
                before[unserved].as_shadow(unserved_ref.version_id) if unserved in before else None
            )
            record = _execution_record(resolution, outcome, input, context, now, record_shadow)
            if answer.logged:
                # Stored by the routing call already: count it and feed the breaker.
                hooks.observe_execution(record, config)
            else:  # routed past Redis (PostgreSQL decided): store it now
                hooks.record_execution(record, config)
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

    NOTE: a guess is evaluated only when a wrong one costs little or stays within the
    budget: both versions cheap (``is_cheap``), or their worst cases together within
    ``CANARY_EVAL_BUDGET_MS`` (a shadowed request evaluates both anyway, so then
    nothing is wasted; an unshadowed one wastes the guess only when the context is
    pinned against its bucket). A shadowed request evaluates both, in random order,
    so neither version's latency systematically benefits from warm caches.
    """
    versions = [guess] if shadow is None else [guess, shadow]
    rules = {version: _version_ref(state, version).rules for version in (router.V1, router.V2)}
    cheap = all(rules[version].is_cheap() for version in versions)
    if not cheap and (
        rules[router.V1].worst_case() + rules[router.V2].worst_case()
        > eval_limits().rule_cost_limit
    ):
        return {}
    if len(versions) == 2 and random.random() < 0.5:
        versions.reverse()
    prepared = prepare_input(input) if len(versions) == 2 else None
    return {version: _evaluate(rules[version], input, prepared=prepared) for version in versions}


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
        # The bake judges the promoted (active) version as v2 against the previous one.
        served_version=router.V2 if resolution.baking else resolution.canary_version,
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
        baking=resolution.baking,
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
