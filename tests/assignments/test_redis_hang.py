"""A hung Redis (accepting connections, never answering): the data plane backs off.

``kill -STOP`` of redis-server leaves its socket open, so every command waits out
the socket timeout. After the first one a process stops asking Redis for
``CANARY_REDIS_BACKOFF_SECONDS`` and serves from PostgreSQL (canary.redis).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from assignments.sticky import sticky_key
from canary.redis import reset_redis_client
from tests.accounts import create_user
from tests.assignments.test_fastpath import execute
from tests.canary.test_faults import wait_until_drained
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import free_port, granian, private_redis

pytestmark = pytest.mark.django_db(transaction=True)

BACKOFF_SECONDS = 2.0


@pytest.fixture
def redis_port(settings: Any) -> Iterator[int]:
    port = free_port()
    with private_redis(port):
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        reset_redis_client()
        yield port
    reset_redis_client()


def test_a_hung_redis_costs_one_timeout_per_process_per_interval(
    roles: None, redis_port: int
) -> None:
    canary = make_canary("redis-hang", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    users = [f"user-{n}" for n in range(15)]
    client = redis.Redis(port=redis_port)
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CANARY_REDIS_BACKOFF_SECONDS": str(BACKOFF_SECONDS),
    }
    with granian(workers=2, **env) as server:
        before = {}
        for user in users:
            answer = execute(server.base, canary.ruleset_id, token, user_id=user)
            assert answer.status_code == 200, answer.text
            before[user] = answer.json()["canary_version"]
        assert set(before.values()) == {"v1", "v2"}
        wait_until_drained(client)  # PostgreSQL holds every sticky assignment

        redis_pid = int(client.info("server")["process_id"])
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for user in users * 2:  # 30 sequential requests
                answer = execute(server.base, canary.ruleset_id, token, user_id=user)
                assert answer.status_code == 200, answer.text
                assert answer.json()["canary_version"] == before[user], user
            elapsed = time.monotonic() - started
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        # Without the back-off each request waited out several 0.5 s timeouts (~2 s
        # each); with it, each of the 2 processes waits out at most one timeout per
        # interval (plus, for one request, the half-open trial), the rest is PostgreSQL.
        print(f"30 requests during the hang: {elapsed:.2f} s")
        assert elapsed < 8.0, elapsed

        # After the interval, one request tries Redis again and closes the breaker:
        # a new user's assignment is written to Redis again.
        time.sleep(BACKOFF_SECONDS + 0.2)
        deadline = time.monotonic() + 10
        n = 0
        key = None
        while time.monotonic() < deadline:
            n += 1
            user = f"after-{n}"
            answer = execute(server.base, canary.ruleset_id, token, user_id=user)
            assert answer.status_code == 200, answer.text
            key = sticky_key(str(canary.pk), "user", user)
            if n >= 4 and client.exists(key):
                break
        assert key is not None and client.exists(key), "Redis was not used again"
        for user in users:
            answer = execute(server.base, canary.ruleset_id, token, user_id=user)
            assert answer.json()["canary_version"] == before[user], user
