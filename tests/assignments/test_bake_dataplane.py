"""The bake after a promotion on the production server: still one Redis round trip."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import redis

from deployments import services as lifecycle
from monitoring.models import ExecutionLog
from tests.accounts import create_user
from tests.assignments.test_fastpath import execute, redis_port, server_redis  # noqa: F401
from tests.monitoring.test_bake import FAILING_IN_V2, promoted_with_bake
from tests.servers import granian
from tests.stored import stored

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_baking_execute_is_one_redis_round_trip(roles: None, redis_port: int) -> None:  # noqa: F811
    """The record of a shadowed request travels in the call that checks the token, the
    rate and the generation, as a canary's does (MONITOR: commands a script runs are
    marked ``lua``)."""
    promoted = promoted_with_bake("bake-one-trip")
    token = create_user("engine", "viewer")
    seen: list[dict[str, Any]] = []
    with granian(workers=1, CANARY_DRAIN_IN_WEB="0", **server_redis(redis_port)) as server:
        for _ in range(3):  # authenticates in full, then on the fast path
            assert execute(server.base, promoted.ruleset_id, token, user_id="a").ok
        time.sleep(1.0)  # past every recheck period: the steady state
        with redis.Redis(port=redis_port, socket_timeout=0.5).monitor() as monitor:
            for n in range(10):
                answer = execute(
                    server.base, promoted.ruleset_id, token, user_id=f"u{n}", input=FAILING_IN_V2
                )
                assert answer.ok
                assert answer.headers["X-Canary-Version"] == "v1"
                assert answer.json()["version"] == "v2.0.0"
            with contextlib.suppress(redis.TimeoutError):
                while True:
                    seen.append(monitor.next_command())
    sent = [
        command["command"].split()[0].upper() for command in seen if command["client_type"] != "lua"
    ]
    handshakes = [command for command in sent if command in ("HELLO", "CLIENT", "SELECT")]
    assert len(handshakes) <= 2 * 3, sent
    assert [command for command in sent if command not in handshakes] == ["EVALSHA"] * 10, sent
    appended = [c for c in seen if c["client_type"] == "lua" and c["command"].startswith("XADD")]
    assert len(appended) == 10
    logs = stored(ExecutionLog).filter(deployment=promoted, user_id__startswith="u")
    assert logs.count() == 10
    assert set(logs.values_list("served_version", "success", "shadow_success")) == {
        ("v2", False, True)
    }


def test_without_a_canary_or_a_bake_the_fast_path_serves_in_one_trip(
    roles: None,
    redis_port: int,  # noqa: F811
) -> None:
    """The routing script's answer without a canary has every field ``route`` reads, so
    the fast path serves such a request itself (one call: token, rate, generation)."""
    promoted = promoted_with_bake("no-bake", bake_minutes=0)
    # Capture samples 1% of such executes by default (an XADD inside the script): off,
    # so that any XADD seen below is an execution record.
    lifecycle.ruleset_update(ruleset_id=promoted.ruleset_id, capture_percentage=0, actor="t")
    token = create_user("engine", "viewer")
    seen: list[dict[str, Any]] = []
    with granian(workers=1, CANARY_DRAIN_IN_WEB="0", **server_redis(redis_port)) as server:
        for _ in range(3):
            assert execute(server.base, promoted.ruleset_id, token, user_id="a").ok
        time.sleep(1.0)
        with redis.Redis(port=redis_port, socket_timeout=0.5).monitor() as monitor:
            for n in range(10):
                assert execute(server.base, promoted.ruleset_id, token, user_id=f"u{n}").ok
            with contextlib.suppress(redis.TimeoutError):
                while True:
                    seen.append(monitor.next_command())
    sent = [
        command["command"].split()[0].upper() for command in seen if command["client_type"] != "lua"
    ]
    handshakes = [command for command in sent if command in ("HELLO", "CLIENT", "SELECT")]
    assert [command for command in sent if command not in handshakes] == ["EVALSHA"] * 10, sent
    assert not [c for c in seen if c["command"].startswith("XADD")]
    assert not stored(ExecutionLog).filter(deployment=promoted).exists()
