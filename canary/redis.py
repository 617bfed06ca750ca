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
from typing import Any

from django.conf import settings

from canary.redis_sentinel import SentinelTarget, parse_sentinel_url

_local = threading.local()
_generation = [0]

# NOTE: a request must not wait on a Redis that is down; it falls back at once.
SOCKET_TIMEOUT_SECONDS = 0.5


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


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
        client = redis.Redis.from_url(settings.REDIS_URL, single_connection_client=True, **options)
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
        target.service_name, sentinel, db=target.db, password=target.password, **options
    )
    return redis.Redis(connection_pool=pool, single_connection_client=True)


def reset_redis_client() -> None:
    """Forget every thread's client (tests that point the process at another Redis)."""
    _generation[0] += 1
