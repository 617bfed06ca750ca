"""The breaker's side of an execute: may v2 serve, claim a half-open trial, count an outcome.

The request that opens the breaker rolls the canary back (or records and notifies
the opening when automatic rollback is off); every step is best effort, so a store
that cannot be reached never fails a request that was already served.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from assignments.hooks import BreakerGate
from canary.errors import DomainError
from monitoring.breaker import state as breaker
from monitoring.breaker.store import breaker_cooldown, breaker_store

logger = logging.getLogger(__name__)

SYSTEM_BREAKER = "system:breaker"


def breaker_gate(deployment_id: Any, canary_config: dict[str, Any]) -> BreakerGate:
    try:
        state = breaker_store().read(deployment_id)
    except Exception:
        # An unreachable store must not fail the request: routing continues from
        # the database (sticky assignments honoured) and the monitor still judges
        # the canary from its execution logs.
        logger.warning("breaker state unreadable for %s; routing without it", deployment_id)
        return BreakerGate(allow_v2=True, state="UNKNOWN")
    state = breaker.current(state, now=time.time(), cooldown=breaker_cooldown(canary_config))
    if state.state == breaker.OPEN:
        return BreakerGate(allow_v2=False, state=breaker.OPEN)
    return BreakerGate(
        allow_v2=True, state=state.state, trial_only=state.state == breaker.HALF_OPEN
    )


def breaker_claim_trial(deployment_id: Any, canary_config: dict[str, Any]) -> bool:
    now, cooldown = time.time(), breaker_cooldown(canary_config)
    try:
        allowed, _, _ = breaker_store().update(
            deployment_id, lambda state: breaker.claim_trial(state, now=now, cooldown=cooldown)
        )
    except Exception:
        logger.warning("breaker trial claim failed for %s; serving v1", deployment_id)
        return False
    return allowed


def breaker_record(
    *, deployment_id: Any, canary_config: dict[str, Any], success: bool, error_message: str = ""
) -> breaker.BreakerState:
    """Feed one v2 outcome; the request that opens the breaker rolls the canary back."""
    now, cooldown = time.time(), breaker_cooldown(canary_config)
    threshold = int(canary_config.get("failure_threshold", 5))

    def change(state: breaker.BreakerState) -> tuple[None, breaker.BreakerState]:
        return None, breaker.record(
            state, success=success, now=now, cooldown=cooldown, failure_threshold=threshold
        )

    try:
        _, before, after = breaker_store().update(deployment_id, change)
    except Exception:
        # The request was served; one lost count is better than a failed answer.
        logger.warning("breaker update failed for %s", deployment_id, exc_info=True)
        return breaker.BreakerState(state="UNKNOWN")
    if breaker.just_opened(before, after):
        logger.warning("circuit breaker opened for deployment %s", deployment_id)
        if canary_config.get("auto_rollback", True):
            # The rollback's own notification and event say the breaker caused it.
            _rollback_for_breaker(deployment_id, after, error_message)
        else:
            _record_breaker_open(deployment_id, after, cooldown)
            _notify_breaker_open(deployment_id, after)
    return after


def _record_breaker_open(deployment_id: Any, state: breaker.BreakerState, cooldown: float) -> None:
    from deployments.services import deployment_breaker_opened

    try:
        deployment_breaker_opened(
            deployment_id=deployment_id,
            consecutive_failures=state.consecutive_failures,
            cooldown_seconds=cooldown,
            actor=SYSTEM_BREAKER,
        )
    except Exception:
        # NOTE: the request was served and v1 already takes over; a lost event must not
        # turn the answer into an error.
        logger.warning("breaker opening of %s not recorded", deployment_id, exc_info=True)


def _notify_breaker_open(deployment_id: Any, state: breaker.BreakerState) -> None:
    from deployments.models import Deployment
    from monitoring.notifications.dispatch import notify

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
    """After a committed rollback: best effort, as routing already sends everyone to v1."""
    now = time.time()
    try:
        breaker_store().update(
            deployment_id, lambda state: (None, breaker.force_open(state, now=now))
        )
    except Exception:
        logger.warning("breaker of %s not forced open (store unreachable)", deployment_id)
