"""Seams through which the monitoring app plugs into the data plane.

Dependencies run one way (deployments <- assignments <- monitoring), so the data
plane cannot import the breaker or the execution log. ``monitoring`` replaces
these defaults in its ``AppConfig.ready()``; until then v2 is always allowed and
nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ShadowOutcome:
    """The other version evaluated on the same input (SPEC 9.1); never returned."""

    version_id: Any
    success: bool
    output: Any
    rule: str | None  # the matched rule, or the rule the evaluation failed in
    error_message: str
    latency_ms: float


@dataclass(frozen=True)
class ExecutionRecord:
    deployment_id: Any
    version_id: Any
    served_version: str
    success: bool
    latency_ms: float
    error_rule: str | None
    error_message: str
    user_id: str | None
    session_id: str | None
    workflow_id: str | None
    input: Any
    output: Any
    executed_at: datetime
    matched_rule: str | None = None
    shadow: ShadowOutcome | None = None
    # The breaker counted no failures when the request was routed: a v2 success
    # changes nothing, so it need not be written.
    breaker_clean: bool = False
    # The rule set's input paths never stored (``deployments.rules.redaction``).
    redacted_paths: tuple[str, ...] = ()
    # Served by an active deployment during its bake (SPEC 10.3): judged by the monitor
    # on the pairs, never fed to the breaker.
    baking: bool = False


@dataclass(frozen=True)
class BreakerGate:
    """What the breaker says about one request: may it reach v2?

    In HALF_OPEN ``allow_v2`` is True but ``trial_only`` too: a request routed to
    v2 must first win the single trial slot (``breaker_claim_trial``).
    """

    allow_v2: bool
    state: str = "CLOSED"
    trial_only: bool = False


def _always_closed(deployment_id: Any, canary_config: dict[str, Any]) -> BreakerGate:
    return BreakerGate(allow_v2=True)


def _no_trial(deployment_id: Any, canary_config: dict[str, Any]) -> bool:
    return True


def _record_nothing(record: ExecutionRecord, canary_config: dict[str, Any]) -> None:
    return None


def _observe_nothing(record: ExecutionRecord, canary_config: dict[str, Any]) -> None:
    return None


def _capture_nothing(document: bytes) -> None:
    return None


@dataclass
class DataPlaneHooks:
    # Asked before routing a canary request; OPEN (or a HALF_OPEN trial in use)
    # answers allow_v2=False and the request gets v1 with nothing stored.
    breaker_gate: Callable[[Any, dict[str, Any]], BreakerGate] = field(default=_always_closed)
    breaker_claim_trial: Callable[[Any, dict[str, Any]], bool] = field(default=_no_trial)
    # Called for every execute during a canary, before the response is sent, so
    # an answered request is never missing from the log.
    record_execution: Callable[[ExecutionRecord, dict[str, Any]], None] = field(
        default=_record_nothing
    )
    # Called instead when the record was already stored (appended to the execution
    # stream by the routing round-trip): count it and feed the breaker.
    observe_execution: Callable[[ExecutionRecord, dict[str, Any]], None] = field(
        default=_observe_nothing
    )
    # Called with a sampled execute's captured input (SPEC 10.2) when the routing
    # round-trip did not append it (Redis not asked, or unavailable).
    record_capture: Callable[[bytes], None] = field(default=_capture_nothing)


hooks = DataPlaneHooks()
