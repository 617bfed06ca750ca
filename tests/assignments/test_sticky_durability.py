"""Sticky decisions survive a Redis that restarts empty, and sticky state is bounded.

PostgreSQL is the authority for assignments (``assignments.refill``): a Redis
that lost a deployment's decisions is detected in the routing call itself (the
held count is missing), answered from PostgreSQL and re-filled in the background.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from django.test import override_settings
from rest_framework.test import APIClient

from assignments import refill, router, sticky
from assignments.buffer import drain_now
from assignments.client_tokens import client_token_create
from assignments.models import Assignment
from assignments.services import dataplane_resolve
from canary.redis import redis_client, reset_redis_client
from deployments import services as lifecycle
from deployments.models import Deployment
from monitoring.prometheus import render_metrics
from tests.accounts import create_user
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import free_port, granian, private_redis
from tests.stored import stored

INPUT = {"temperature": 30, "zone": "A"}


def execute(base: str, ruleset_id: Any, token: str, user: str) -> str:
    response = requests.post(
        f"{base}/api/v1/rulesets/{ruleset_id}/execute",
        json={"input": INPUT, "user_id": user},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["canary_version"]


def resolve(base: str, ruleset_id: Any, token: str, user: str) -> str:
    response = requests.get(
        f"{base}/api/v1/rulesets/{ruleset_id}/resolve",
        params={"user_id": user},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["canary_version"]


@contextlib.contextmanager
def load(base: str, ruleset_id: Any, token: str, users: list[str]) -> Iterator[dict[str, set]]:
    """Threads executing and resolving for ``users`` until the block ends; every
    version each user was served."""
    seen: dict[str, set[str]] = defaultdict(set)
    stop = threading.Event()
    failures: list[BaseException] = []

    def worker(offset: int) -> None:
        n = offset
        try:
            while not stop.is_set():
                user = users[n % len(users)]
                seen[user].add(execute(base, ruleset_id, token, user))
                seen[user].add(resolve(base, ruleset_id, token, user))
                fresh = f"fresh-{offset}-{n}"
                seen[fresh].add(resolve(base, ruleset_id, token, fresh))
                n += 7
        except BaseException as exc:  # reported when the block ends
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:3]


# The web processes' drainers read the streams on their own connections all along.
DRAINER_COMMANDS = {"XREADGROUP", "XAUTOCLAIM", "XACK", "XDEL", "XPENDING", "XGROUP"}


def redis_commands(port: int, during: Any) -> list[str]:
    """The commands (neither a script's own nor the drainers') Redis received while
    ``during()`` ran."""
    seen: list[str] = []
    marker = "end-of-requests"
    with redis.Redis(port=port, socket_timeout=5).monitor() as monitor:
        during()
        redis.Redis(port=port).echo(marker)
        while True:
            command = monitor.next_command()
            if command["client_type"] == "lua":
                continue
            if marker in command["command"]:
                break
            seen.append(command["command"].split()[0].upper())
    return [command for command in seen if command not in DRAINER_COMMANDS]


@pytest.mark.django_db(transaction=True)
def test_stickiness_survives_redis_restarted_empty_after_a_traffic_change(
    roles: None, settings: Any
) -> None:
    """The review's case: 400 users decided at 50%, traffic lowered to 10%, Redis
    restarted empty under load. Every answer before, during and after is the
    version each user was first served, and the normal path is one round trip again."""
    port = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    env = {"REDIS_URL": settings.REDIS_URL, "CANARY_REDIS_BACKOFF_SECONDS": "1"}
    users = [f"user-{n}" for n in range(400)]
    canary = make_canary("restart-empty", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    with contextlib.ExitStack() as stack:
        stack.callback(reset_redis_client)
        first_redis = stack.enter_context(private_redis(port))
        reset_redis_client()
        server = stack.enter_context(granian(workers=2, **env))
        before = {user: execute(server.base, canary.ruleset_id, token, user) for user in users}
        assert 100 < list(before.values()).count("v2") < 300
        # Decisions may still be in the assignment stream: the traffic change writes
        # them to PostgreSQL before it returns.
        lifecycle.deployment_set_traffic(deployment_id=canary.pk, traffic_percentage=10, actor="t")
        decided = dict(
            stored(Assignment)
            .filter(deployment=canary, tier="user", identifier__in=users)
            .values_list("identifier", "assigned_version")
        )
        assert decided == before
        moved = [
            user
            for user in users
            if before[user]
            != router.version_for_bucket(router.bucket_for(str(canary.pk), router.USER, user), 10)
        ]
        assert len(moved) > 50  # users that deciding again at 10% would flip
        with load(server.base, canary.ruleset_id, token, users) as seen:
            time.sleep(1)
            first_redis.terminate()
            first_redis.wait(timeout=10)
            stack.enter_context(private_redis(port))  # the same address, empty
            time.sleep(5)  # the breaker's interval, the refill, then Redis again
        flipped = {user: seen[user] for user in users if seen[user] - {before[user]}}
        assert flipped == {}, f"{len(flipped)} of {len(users)} users flipped"
        assert {user: resolve(server.base, canary.ruleset_id, token, user) for user in users} == (
            before
        )
        assert {user: execute(server.base, canary.ruleset_id, token, user) for user in users} == (
            before
        )
        # Redis holds PostgreSQL's decisions again, and answers from them alone.
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while not client.exists(sticky.held_key(str(canary.pk))):
            assert time.monotonic() < deadline, "Redis was not re-filled"
            time.sleep(0.1)
        for user in moved:
            key = sticky.sticky_key(str(canary.pk), router.USER, user)
            assert client.get(key) == before[user].encode(), user
        time.sleep(1.0)  # past every recheck period
        sent = redis_commands(
            port, lambda: [resolve(server.base, canary.ruleset_id, token, u) for u in moved[:10]]
        )
        handshakes = [c for c in sent if c in ("HELLO", "CLIENT", "SELECT")]
        assert [c for c in sent if c not in handshakes] == ["EVALSHA"] * 10, sent


# --- in one process, with the shared test Redis -----------------------------------------


@pytest.fixture
def own_redis(settings: Any) -> Iterator[int]:
    """A Redis of this test's own (empty, and nobody else's keys counted)."""
    port = free_port()
    with private_redis(port):
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        reset_redis_client()
        yield port
    reset_redis_client()


@pytest.fixture
def canary_at_half(roles: None, own_redis: int) -> Deployment:
    return make_canary("bounded", traffic=50, auto_rollback=False)


def served(deployment: Deployment, **ids: str) -> str:
    resolution = dataplane_resolve(
        ruleset_id=str(deployment.ruleset_id), context=router.RoutingContext(**ids)
    )
    return resolution.canary_version


def redis_keys(deployment: Deployment) -> list[bytes]:
    return list(redis_client().scan_iter(match=f"canary:a:{deployment.pk}:*", count=1000))


@pytest.mark.django_db
def test_redis_that_lost_a_deployment_is_answered_by_postgresql_and_refilled(
    canary_at_half: Deployment, settings: Any
) -> None:
    users = [f"p-{n}" for n in range(60)]
    before = {user: served(canary_at_half, user_id=user) for user in users}
    drain_now()
    lifecycle.deployment_set_traffic(
        deployment_id=canary_at_half.pk, traffic_percentage=0, actor="t"
    )
    # Redis forgets everything of the deployment (as a restart empty would).
    client = redis_client()
    client.delete(sticky.held_key(str(canary_at_half.pk)), *redis_keys(canary_at_half))
    # The first request is answered from PostgreSQL and re-fills Redis (in the
    # request itself under the test settings; a background thread in production).
    assert served(canary_at_half, user_id=users[0]) == before[users[0]]
    assert int(client.get(sticky.held_key(str(canary_at_half.pk)))) == len(users)
    assert len(redis_keys(canary_at_half)) == len(users)
    assert {user: served(canary_at_half, user_id=user) for user in users} == before


@pytest.mark.django_db
def test_decisions_past_the_ceiling_are_stored_in_postgresql(
    canary_at_half: Deployment, settings: Any
) -> None:
    settings.CANARY_STICKY_MAX_PER_DEPLOYMENT = 5
    users = [f"c-{n}" for n in range(15)]
    before = {user: served(canary_at_half, user_id=user) for user in users}
    held = redis_client().get(sticky.held_key(str(canary_at_half.pk)))
    assert int(held) == 5
    assert len(redis_keys(canary_at_half)) == 5
    drain_now()
    # Every decision is stored: 5 drained from Redis, 10 written by PostgreSQL directly.
    rows = Assignment.objects.filter(deployment=canary_at_half)
    assert dict(rows.values_list("identifier", "assigned_version")) == before
    # A traffic change moves none of them, from whichever store answers.
    lifecycle.deployment_set_traffic(
        deployment_id=canary_at_half.pk, traffic_percentage=100, actor="t"
    )
    assert {user: served(canary_at_half, user_id=user) for user in users} == before
    # A workflow first seen past the ceiling inherits its user's decision (held in Redis).
    in_redis = next(
        user
        for user in users
        if redis_client().exists(sticky.sticky_key(str(canary_at_half.pk), router.USER, user))
    )
    assert served(canary_at_half, workflow_id="wf-1", user_id=in_redis) == before[in_redis]
    assert (
        Assignment.objects.get(
            deployment=canary_at_half, tier="workflow", identifier="wf-1"
        ).assigned_version
        == before[in_redis]
    )
    assert len(redis_keys(canary_at_half)) == 5
    # The gauge says what Redis holds.
    metrics = render_metrics().decode()
    assert f'canary_sticky_assignments{{deployment_id="{canary_at_half.pk}"}} 5.0' in metrics


@pytest.mark.django_db
def test_a_client_token_past_its_quota_is_refused_with_a_429(
    canary_at_half: Deployment, settings: Any
) -> None:
    settings.CANARY_STICKY_MAX_PER_CLIENT = 3
    served(canary_at_half, user_id="warm")  # Redis holds the deployment's decisions
    _, token = client_token_create(
        name="storefront",
        ruleset_ids=[str(canary_at_half.ruleset_id)],
        allowed_origins=["https://app.example.com"],
        actor="t",
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = f"/api/v1/rulesets/{canary_at_half.ruleset_id}/resolve"
    answers = [api.get(url, {"user_id": f"q-{n}"}) for n in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    refused = api.get(url, {"user_id": "q-new"})
    assert refused.status_code == 429
    assert refused.json()["code"] == "sticky_quota_exceeded"
    assert 1 <= int(refused["Retry-After"]) <= settings.CANARY_STICKY_CLIENT_WINDOW_SECONDS
    # Nothing was decided for the refused context; assigned ones are still served.
    assert not redis_client().exists(
        sticky.sticky_key(str(canary_at_half.pk), router.USER, "q-new")
    )
    again = api.get(url, {"user_id": "q-1"})
    assert again.status_code == 200
    assert again.json()["canary_version"] == answers[1].json()["canary_version"]
    # Another address has its own quota.
    assert api.get(url, {"user_id": "q-other"}, REMOTE_ADDR="10.0.0.9").status_code == 200
    # An API token is bounded by the deployment's ceiling, not by this quota.
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {create_user('engine', 'viewer')}")
    with override_settings(CANARY_THROTTLE_RATES={"dataplane": "", "client_address": ""}):
        codes = {viewer.get(url, {"user_id": f"api-{n}"}).status_code for n in range(6)}
    assert codes == {200}


@pytest.mark.django_db
def test_a_process_that_decided_without_redis_has_it_refilled(
    canary_at_half: Deployment, settings: Any
) -> None:
    """Redis unreachable, then back with its data: the decisions PostgreSQL took alone
    are copied in before Redis decides for those contexts."""
    assert served(canary_at_half, user_id="warm") in ("v1", "v2")
    from canary import redis as canary_redis

    canary_redis.breaker.failed(redis.ConnectionError("gone"))
    try:
        outage = {f"o-{n}": served(canary_at_half, user_id=f"o-{n}") for n in range(40)}
    finally:
        canary_redis.breaker.reset()
    lifecycle.deployment_set_traffic(
        deployment_id=canary_at_half.pk, traffic_percentage=0, actor="t"
    )
    assert {user: served(canary_at_half, user_id=user) for user in outage} == outage
    assert not refill._decided_without_redis
