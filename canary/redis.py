"""Raw Redis clients for the data plane's scripts and streams.

The cache framework (``django.core.cache``) adds key prefixes, pickling and
swallowed errors; the data plane needs the opposite: exact keys shared with Lua
scripts, and errors it can see so it can fall back to the database. Each thread
keeps one connection of its own (no pool to check out from on every command),
re-created after a fork.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis.exceptions
from django.conf import settings
from redis.connection import Connection
from redis.sentinel import SentinelManagedConnection

from canary.redis_sentinel import SentinelTarget, parse_sentinel_url

_local = threading.local()
_generation = [0]

# NOTE: a request must not wait on a Redis that is down; it falls back at once.
SOCKET_TIMEOUT_SECONDS = 0.5


DEFAULT_BACKOFF_SECONDS = 5.0


def redis_enabled() -> bool:
    """Redis is configured (it may still be backing off: see ``redis_available``)."""
    return bool(settings.REDIS_URL)


class RedisBackingOff(redis.exceptions.ConnectionError):
    """Refused without asking Redis: the breaker is open."""


def _backoff_seconds() -> float:
    return float(getattr(settings, "CANARY_REDIS_BACKOFF_SECONDS", DEFAULT_BACKOFF_SECONDS))


class RedisBreaker:
    """A circuit breaker for Redis itself, per process.

    Closed: every command goes to Redis. A timeout or connection error opens it:
    for ``backoff`` seconds nothing asks Redis (``allows`` is False, commands raise
    ``RedisBackingOff`` at once) and callers fall back to PostgreSQL. After that,
    one thread's next command is the trial (half-open; every other thread is still
    refused): an answer closes the breaker, a failure opens it for another interval.

    NOTE: the closed state's check is one attribute read, no lock.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[], float] = _backoff_seconds,
    ) -> None:
        self.open_until = 0.0  # 0.0: closed
        self._trial: int | None = None  # the thread allowed through while half-open
        self._clock = clock
        self._backoff = backoff
        self._lock = threading.Lock()

    def state(self) -> str:
        if not self.open_until:
            return "closed"
        return "half-open" if self._trial is not None else "open"

    def allows(self) -> bool:
        until = self.open_until
        if not until:
            return True
        me = threading.get_ident()
        if self._trial == me or getattr(_local, "probing", False):
            return True
        now = self._clock()
        if now < until:
            return False
        with self._lock:
            if self.open_until != until:  # another thread moved it meanwhile
                return not self.open_until or self._trial == me
            self.open_until = now + self._backoff()
            self._trial = me
            return True

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, RedisBackingOff) or not is_unreachable(exc):
            return
        with self._lock:
            self.open_until = self._clock() + self._backoff()
            self._trial = None

    def succeeded(self) -> None:
        if self.open_until:
            with self._lock:
                self.open_until = 0.0
                self._trial = None

    def reset(self) -> None:
        with self._lock:
            self.open_until = 0.0
            self._trial = None


def is_unreachable(exc: BaseException) -> bool:
    """A timeout or a lost connection (an error reply means Redis is answering)."""
    return isinstance(
        exc, redis.exceptions.TimeoutError | redis.exceptions.ConnectionError | OSError
    )


breaker = RedisBreaker()


def redis_available() -> bool:
    """Redis is configured and not backing off: the data plane may ask it."""
    return bool(settings.REDIS_URL) and breaker.allows()


@contextmanager
def redis_probe() -> Iterator[None]:
    """Ask Redis even while backing off (the readiness check); an answer closes it."""
    _local.probing = True
    try:
        yield
    finally:
        _local.probing = False


def redis_failed(exc: BaseException) -> None:
    """Open the breaker if ``exc`` says Redis is unreachable (other errors do not)."""
    breaker.failed(exc)


class _BreakerMixin:
    """Every connection of the process goes through ``breaker`` (the data plane's
    clients, the cache, the breaker store): refused at once while it is open."""

    def connect(self) -> None:
        if breaker.open_until and not breaker.allows():
            raise RedisBackingOff("Redis unreachable recently; backing off")
        try:
            super().connect()  # type: ignore[misc]
        except Exception as exc:
            breaker.failed(exc)
            raise

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if breaker.open_until and not breaker.allows():
            raise RedisBackingOff("Redis unreachable recently; backing off")
        try:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        except Exception as exc:
            breaker.failed(exc)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            breaker.failed(exc)
            raise
        if breaker.open_until:
            breaker.succeeded()
        return response


class BreakerConnection(_BreakerMixin, Connection):
    pass


class BreakerSentinelConnection(_BreakerMixin, SentinelManagedConnection):
    pass


def redis_client() -> Any:
    """This thread's client (one connection, re-created after a fork)."""
    cached = getattr(_local, "client", None)
    if cached is not None and cached[0] == os.getpid() and cached[1] == _generation[0]:
        return cached[2]
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options = {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
    }
    target = parse_sentinel_url(settings.REDIS_URL)
    if target is None:
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            single_connection_client=True,
            connection_class=BreakerConnection,
            **options,
        )
    else:
        client = _sentinel_client(target, options)
    _local.client = (os.getpid(), _generation[0], client)
    return client


def _sentinel_client(target: SentinelTarget, options: dict[str, Any]) -> Any:
    """One connection to the master the Sentinels name now.

    NOTE: after a failover the old connection fails (closed, or READONLY from a
    demoted master): the caller falls back for that request and drops the
    connection, and the next connect asks the Sentinels again.
    """
    import redis
    from redis.sentinel import Sentinel, SentinelConnectionPool

    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        },
    )
    pool = SentinelConnectionPool(
        target.service_name,
        sentinel,
        db=target.db,
        password=target.password,
        connection_class=BreakerSentinelConnection,
        **options,
    )
    return redis.Redis(connection_pool=pool, single_connection_client=True)


def reset_redis_client() -> None:
    """Forget every thread's client (tests that point the process at another Redis)."""
    _generation[0] += 1
    breaker.reset()
