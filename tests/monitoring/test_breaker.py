"""The breaker's pure state machine at every boundary."""

from monitoring.breaker import state as b

COOLDOWN = 60.0


def feed(state: b.BreakerState, outcomes: list[bool], now: float = 0.0) -> b.BreakerState:
    for success in outcomes:
        state = b.record(state, success=success, now=now, cooldown=COOLDOWN, failure_threshold=5)
    return state


def test_four_failures_stay_closed_five_open() -> None:
    four = feed(b.BreakerState(), [False] * 4)
    assert (four.state, four.consecutive_failures) == (b.CLOSED, 4)
    five = feed(four, [False], now=10.0)
    assert (five.state, five.opened_at) == (b.OPEN, 10.0)
    assert b.just_opened(four, five)
    assert not b.just_opened(five, feed(five, [False]))


def test_a_success_resets_the_count() -> None:
    state = feed(b.BreakerState(), [False] * 4 + [True] + [False] * 4)
    assert (state.state, state.consecutive_failures) == (b.CLOSED, 4)


def test_success_on_a_clean_breaker_changes_nothing() -> None:
    clean = b.BreakerState()
    assert feed(clean, [True]) is clean  # no write needed on the hot path


def test_cooldown_to_the_second() -> None:
    opened = b.BreakerState(b.OPEN, 5, opened_at=100.0)
    assert b.current(opened, now=159.999, cooldown=COOLDOWN).state == b.OPEN
    assert b.current(opened, now=160.0, cooldown=COOLDOWN).state == b.HALF_OPEN


def test_open_admits_nothing() -> None:
    allowed, _ = b.claim_trial(b.BreakerState(b.OPEN, 5, 100.0), now=120.0, cooldown=COOLDOWN)
    assert not allowed


def test_half_open_admits_one_trial_at_a_time() -> None:
    opened = b.BreakerState(b.OPEN, 5, opened_at=0.0)
    first, state = b.claim_trial(opened, now=60.0, cooldown=COOLDOWN)
    assert first and state.state == b.HALF_OPEN and state.trial_started_at == 60.0
    second, state = b.claim_trial(state, now=61.0, cooldown=COOLDOWN)
    assert not second
    # A trial that never reported stops blocking after one cooldown.
    third, state = b.claim_trial(state, now=120.0, cooldown=COOLDOWN)
    assert third and state.trial_started_at == 120.0


def test_trial_success_closes_failure_reopens() -> None:
    _, trial = b.claim_trial(b.BreakerState(b.OPEN, 5, 0.0), now=60.0, cooldown=COOLDOWN)
    closed = b.record(trial, success=True, now=61.0, cooldown=COOLDOWN, failure_threshold=5)
    assert closed == b.BreakerState(b.CLOSED)
    reopened = b.record(trial, success=False, now=61.0, cooldown=COOLDOWN, failure_threshold=5)
    assert (reopened.state, reopened.opened_at) == (b.OPEN, 61.0)
    assert b.just_opened(trial, reopened)


def test_late_results_while_open_change_nothing() -> None:
    opened = b.BreakerState(b.OPEN, 5, 0.0)
    assert b.record(opened, success=True, now=1.0, cooldown=COOLDOWN, failure_threshold=5) == opened


def test_closed_admits_everything() -> None:
    allowed, state = b.claim_trial(b.BreakerState(), now=0.0, cooldown=COOLDOWN)
    assert allowed and state == b.BreakerState()


def test_force_open() -> None:
    state = b.force_open(b.BreakerState(), now=5.0)
    assert (state.state, state.opened_at) == (b.OPEN, 5.0)
    assert b.current(state, now=65.0, cooldown=COOLDOWN).state == b.HALF_OPEN
