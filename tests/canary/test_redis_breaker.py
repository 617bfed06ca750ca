"""The Redis breaker's states with an injected clock (canary.redis.RedisBreaker)."""

from __future__ import annotations

import threading

import redis.exceptions

from canary.redis import RedisBackingOff, RedisBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def other_thread_allowed(breaker: RedisBreaker) -> bool:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(breaker.allows()))
    thread.start()
    thread.join()
    return result[0]


def test_closed_open_half_open_closed() -> None:
    clock = Clock()
    breaker = RedisBreaker(clock=clock, backoff=lambda: 5.0)
    assert breaker.state() == "closed" and breaker.allows()

    breaker.failed(redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert breaker.state() == "open"
    assert not breaker.allows()
    clock.now += 4.9
    assert not breaker.allows()

    clock.now += 0.2  # the interval is over: this thread is the one trial
    assert breaker.allows()
    assert breaker.state() == "half-open"
    assert breaker.allows()  # the trial's later commands too
    assert not other_thread_allowed(breaker)  # everyone else still backs off

    breaker.succeeded()
    assert breaker.state() == "closed"
    assert other_thread_allowed(breaker)


def test_a_failed_trial_opens_it_for_another_interval() -> None:
    clock = Clock()
    breaker = RedisBreaker(clock=clock, backoff=lambda: 5.0)
    breaker.failed(redis.exceptions.ConnectionError("Connection refused"))
    clock.now += 5.0
    assert breaker.allows()
    clock.now += 0.5
    breaker.failed(redis.exceptions.TimeoutError())
    assert breaker.state() == "open"
    assert not breaker.allows()
    clock.now += 4.9
    assert not breaker.allows()
    clock.now += 0.2
    assert breaker.allows()


def test_error_replies_and_its_own_refusals_do_not_open_it() -> None:
    clock = Clock()
    breaker = RedisBreaker(clock=clock, backoff=lambda: 5.0)
    breaker.failed(redis.exceptions.ResponseError("NOSCRIPT"))
    breaker.failed(redis.exceptions.ReadOnlyError("READONLY"))
    assert breaker.state() == "closed"
    breaker.failed(redis.exceptions.TimeoutError())
    until = breaker.open_until
    clock.now += 1.0
    breaker.failed(RedisBackingOff("backing off"))  # must not push the trial back
    assert breaker.open_until == until
