"""Writes of the measurement side: execution log, breaker, Prometheus counters."""

from __future__ import annotations

import logging
import time
from typing import Any

from assignments.hooks import BreakerGate, ExecutionRecord
from canary.errors import DomainError
from monitoring import breaker, prometheus
from monitoring.breaker_store import breaker_store
from monitoring.models import ExecutionLog

logger = logging.getLogger(__name__)

SYSTEM_BREAKER = "system:breaker"


def _cooldown(config: dict[str, Any]) -> float:
    return float(config.get("breaker_cooldown_seconds", 60))


def execution_record(record: ExecutionRecord, canary_config: dict[str, Any]) -> ExecutionLog:
    """Store one canary execution synchronously, before its response is sent.

    A 200 is only returned after this insert commits, so no answered request is
    missing from the metrics. v2 outcomes also feed the breaker.
    """
    log = ExecutionLog.objects.create(
        deployment_id=record.deployment_id,
        served_version=record.served_version,
        version_id=record.version_id,
        success=record.success,
        latency_ms=record.latency_ms,
        error_rule=(record.error_rule or "")[:100],
        error_message=record.error_message,
        user_id=record.user_id or "",
        session_id=record.session_id or "",
        workflow_id=record.workflow_id or "",
        input=record.input,
        output=record.output,
        created_at=record.executed_at,
    )
    prometheus.observe_execution(
        str(record.deployment_id),
        record.served_version,
        success=record.success,
        latency_ms=record.latency_ms,
    )
    if record.served_version == "v2":
        breaker_record(
            deployment_id=record.deployment_id,
            canary_config=canary_config,
            success=record.success,
            error_message=record.error_message,
        )
    return log


def breaker_gate(deployment_id: Any, canary_config: dict[str, Any]) -> BreakerGate:
    try:
        state = breaker_store().read(deployment_id)
    except Exception:
        # An unreachable store must not fail the request: routing continues from
        # the database (sticky assignments honoured) and the monitor still judges
        # the canary from its execution logs.
        logger.exception("breaker state unreadable for %s; routing without it", deployment_id)
        return BreakerGate(allow_v2=True, state="UNKNOWN")
    state = breaker.current(state, now=time.time(), cooldown=_cooldown(canary_config))
    if state.state == breaker.OPEN:
        return BreakerGate(allow_v2=False, state=breaker.OPEN)
    return BreakerGate(
        allow_v2=True, state=state.state, trial_only=state.state == breaker.HALF_OPEN
    )


def breaker_claim_trial(deployment_id: Any, canary_config: dict[str, Any]) -> bool:
    now, cooldown = time.time(), _cooldown(canary_config)
    try:
        allowed, _, _ = breaker_store().update(
            deployment_id, lambda state: breaker.claim_trial(state, now=now, cooldown=cooldown)
        )
    except Exception:
        logger.exception("breaker trial claim failed for %s; serving v1", deployment_id)
        return False
    return allowed


def breaker_record(
    *, deployment_id: Any, canary_config: dict[str, Any], success: bool, error_message: str = ""
) -> breaker.BreakerState:
    """Feed one v2 outcome; the request that opens the breaker rolls the canary back."""
    now, cooldown = time.time(), _cooldown(canary_config)
    threshold = int(canary_config.get("failure_threshold", 5))

    def change(state: breaker.BreakerState) -> tuple[None, breaker.BreakerState]:
        return None, breaker.record(
            state, success=success, now=now, cooldown=cooldown, failure_threshold=threshold
        )

    try:
        _, before, after = breaker_store().update(deployment_id, change)
    except Exception:
        # The request was served; one lost count is better than a failed answer.
        logger.exception("breaker update failed for %s", deployment_id)
        return breaker.BreakerState(state="UNKNOWN")
    if breaker.just_opened(before, after):
        logger.warning("circuit breaker opened for deployment %s", deployment_id)
        if canary_config.get("auto_rollback", True):
            # The rollback's own notification says the breaker caused it.
            _rollback_for_breaker(deployment_id, after, error_message)
        else:
            _notify_breaker_open(deployment_id, after)
    return after


def _notify_breaker_open(deployment_id: Any, state: breaker.BreakerState) -> None:
    from deployments.models import Deployment
    from monitoring.notifications import notify

    deployment = Deployment.objects.filter(pk=deployment_id).first()
    if deployment is not None:
        notify(
            deployment=deployment,
            headline="Circuit breaker opened",
            reason=(
                f"{state.consecutive_failures} consecutive v2 failures; v1 serves every request "
                "until the cooldown ends. Automatic rollback is off for this deployment."
            ),
        )


def _rollback_for_breaker(
    deployment_id: Any, state: breaker.BreakerState, error_message: str
) -> None:
    from deployments.services import deployment_rollback

    reason = (
        f"Circuit breaker opened after {state.consecutive_failures} consecutive v2 failures"
        + (f" (last error: {error_message[:200]})" if error_message else "")
        + "; rolled back automatically."
    )
    try:
        deployment_rollback(
            deployment_id=deployment_id,
            reason=reason,
            actor=SYSTEM_BREAKER,
            expected_status="canary",
        )
    except DomainError as exc:
        # Already rolled back or promoted by someone else: nothing left to do.
        logger.info("breaker rollback of %s skipped: %s", deployment_id, exc.detail)


def breaker_force_open(*, deployment_id: Any) -> None:
    now = time.time()
    breaker_store().update(deployment_id, lambda state: (None, breaker.force_open(state, now=now)))


def breaker_state_for(*, deployment_id: Any, canary_config: dict[str, Any]) -> str:
    state = breaker_store().read(deployment_id)
    return breaker.current(state, now=time.time(), cooldown=_cooldown(canary_config)).state
