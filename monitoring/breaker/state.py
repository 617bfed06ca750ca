"""The circuit breaker as a pure state machine; storage lives in ``breaker_store``.

CLOSED counts consecutive v2 failures and opens at ``failure_threshold``. OPEN
sends everything to v1; after ``cooldown`` seconds it reads as HALF_OPEN, which
admits one trial request at a time: its success closes the breaker, its failure
opens it again. A trial that never reports (its process died) stops blocking
others after ``cooldown`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CLOSED = "CLOSED"
OPEN = "OPEN"
HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class BreakerState:
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    trial_started_at: float | None = None


def current(breaker: BreakerState, *, now: float, cooldown: float) -> BreakerState:
    """The state as of ``now``: an OPEN breaker past its cooldown is HALF_OPEN."""
    if (
        breaker.state == OPEN
        and breaker.opened_at is not None
        and now >= breaker.opened_at + cooldown
    ):
        return replace(breaker, state=HALF_OPEN, trial_started_at=None)
    return breaker


def claim_trial(breaker: BreakerState, *, now: float, cooldown: float) -> tuple[bool, BreakerState]:
    """May one more request reach v2? In HALF_OPEN only one trial is in flight."""
    breaker = current(breaker, now=now, cooldown=cooldown)
    if breaker.state == CLOSED:
        return True, breaker
    if breaker.state == OPEN:
        return False, breaker
    trial_alive = breaker.trial_started_at is not None and now < breaker.trial_started_at + cooldown
    if trial_alive:
        return False, breaker
    return True, replace(breaker, trial_started_at=now)


def record(
    breaker: BreakerState,
    *,
    success: bool,
    now: float,
    cooldown: float,
    failure_threshold: int,
) -> BreakerState:
    """Feed one v2 outcome."""
    breaker = current(breaker, now=now, cooldown=cooldown)
    if breaker.state == OPEN:
        return breaker  # a late result from before the breaker opened changes nothing
    if breaker.state == HALF_OPEN:
        if success:
            return BreakerState(CLOSED)
        return BreakerState(OPEN, opened_at=now)
    if success:
        return breaker if breaker.consecutive_failures == 0 else BreakerState(CLOSED)
    failures = breaker.consecutive_failures + 1
    if failures >= failure_threshold:
        return BreakerState(OPEN, consecutive_failures=failures, opened_at=now)
    return replace(breaker, consecutive_failures=failures)


def force_open(breaker: BreakerState, *, now: float) -> BreakerState:
    """A manual rollback keeps v2 out for one cooldown."""
    return BreakerState(OPEN, consecutive_failures=breaker.consecutive_failures, opened_at=now)


def just_opened(before: BreakerState, after: BreakerState) -> bool:
    return after.state == OPEN and before.state != OPEN
