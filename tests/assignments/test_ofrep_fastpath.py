"""OFREP on the data plane's fast path (the production server, a Redis of the test's own):
one Redis round trip per evaluation, and the same answers as the API gives."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import redis
import requests

from tests.accounts import create_user
from tests.assignments.test_fastpath import redis_port, server_redis  # noqa: F401 (fixture)
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import granian

pytestmark = pytest.mark.django_db(transaction=True)

FLAGS = "/ofrep/v1/evaluate/flags"


def post(base: str, path: str, token: str, body: Any = None, **headers: str) -> requests.Response:
    return requests.post(
        f"{base}{path}",
        json=body if body is not None else {},
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=10,
    )


def context(user: str) -> dict[str, Any]:
    return {"context": {"targetingKey": user}}


def test_an_evaluation_is_one_redis_round_trip(roles: None, redis_port: int) -> None:  # noqa: F811
    make_canary("one-trip-flag", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    seen: list[dict[str, Any]] = []
    with granian(workers=1, CANARY_DRAIN_IN_WEB="0", **server_redis(redis_port)) as server:
        for _ in range(3):  # authenticates in full, decides and stores the context
            assert post(server.base, f"{FLAGS}/one-trip-flag", token, context("a")).ok
            etag = post(server.base, FLAGS, token, context("a")).headers["ETag"]
        time.sleep(1.0)  # past every recheck period: the steady state
        with redis.Redis(port=redis_port, socket_timeout=0.5).monitor() as monitor:
            for _ in range(10):
                assert post(server.base, f"{FLAGS}/one-trip-flag", token, context("a")).ok
                unchanged = post(server.base, FLAGS, token, context("a"), **{"If-None-Match": etag})
                assert unchanged.status_code == 304
            with contextlib.suppress(redis.TimeoutError):
                while True:
                    seen.append(monitor.next_command())
    sent = [c["command"].split()[0].upper() for c in seen if c["client_type"] != "lua"]
    handshakes = [command for command in sent if command in ("HELLO", "CLIENT", "SELECT")]
    assert len(handshakes) <= 2 * 3, sent
    assert [command for command in sent if command not in handshakes] == ["EVALSHA"] * 20, sent


def test_the_fast_path_answers_as_the_api_does(roles: None, redis_port: int) -> None:  # noqa: F811
    canary = make_canary("both-flag-paths", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    env = server_redis(redis_port)
    users = [f"user-{n}" for n in range(8)]
    with granian(**env) as fast, granian(CANARY_FAST_PATH="0", **env) as api:
        post(api.base, FLAGS, token, context(users[0]))  # decides users[0]: its tag is stable
        etag = post(api.base, FLAGS, token, context(users[0])).headers["ETag"]
        probes: list[tuple[str, Any, dict[str, str]]] = [
            *[(f"{FLAGS}/both-flag-paths", context(user), {}) for user in users],
            (f"{FLAGS}/{canary.ruleset_id}", {"context": {"targetingKey": "u", "workflowId": "w"}},
             {}),
            (f"{FLAGS}/no-such-flag", context("u"), {}),
            (f"{FLAGS}/both-flag-paths", {"context": {"targetingKey": ["x"]}}, {}),
            (f"{FLAGS}/both-flag-paths", [], {}),
            (FLAGS, context(users[0]), {}),
            (FLAGS, context(users[0]), {"If-None-Match": etag}),
            (FLAGS, {"context": "nope"}, {}),
        ]  # fmt: skip
        for path, body, headers in probes:  # every new context decided and stored first
            post(fast.base, path, token, body, **headers)
        for path, body, headers in probes:
            answers = [post(server.base, path, token, body, **headers) for server in (fast, api)]
            first, second = answers
            assert first.status_code == second.status_code, (path, body, first.text, second.text)
            assert first.content == second.content or first.json() == second.json(), (path, body)
            assert first.headers.get("ETag") == second.headers.get("ETag"), (path, body)
            assert first.headers.get("Content-Type") == second.headers.get("Content-Type") or (
                first.status_code == 304
            )
        assert (
            post(fast.base, FLAGS, token, context(users[0]), **{"If-None-Match": etag}).status_code
            == 304
        )
        assert post(fast.base, FLAGS, "wrong-token", context("u")).status_code == 401
