"""REDIS_URL naming a Sentinel set: parsing, and a real failover under a running server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from canary.redis_sentinel import SentinelTarget, parse_sentinel_url
from deployments.models import Deployment
from tests.accounts import create_user
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import ROOT, free_port, gunicorn, private_redis, server_env

SERVICE = "canary-lc"


def test_sentinel_urls_parse() -> None:
    target = parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,h2:26380/canary/3")
    assert target == SentinelTarget((("10.0.0.1", 26379), ("h2", 26380)), "canary", 3, "s@cret")
    assert target.celery_url() == (
        "sentinel://:s@cret@10.0.0.1:26379/3;sentinel://:s@cret@h2:26380/3"
    )
    assert target.cache_location() == "redis://:s@cret@canary/3"
    assert parse_sentinel_url("redis+sentinel://h:1/svc") == SentinelTarget((("h", 1),), "svc")
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    for bad in ("redis+sentinel://h/svc", "redis+sentinel://h:1/", "redis+sentinel://h:1/s/x"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


@contextmanager
def sentinel_set(tmp_path: Path) -> Iterator[dict[str, int]]:
    """A master, its replica and one Sentinel watching them (quorum 1), all real processes."""
    ports = {"master": free_port(), "replica": free_port(), "sentinel": free_port()}
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {ports['sentinel']}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {ports['master']} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
    )
    with ExitStack() as stack:
        # NOTE: a full resync writes an RDB file: into the test's directory, not the repo.
        files = ("--dir", str(tmp_path))
        stack.enter_context(private_redis(ports["master"], *files))
        stack.enter_context(
            private_redis(
                ports["replica"], *files, "--replicaof", "127.0.0.1", str(ports["master"])
            )
        )
        sentinel = subprocess.Popen(
            ["redis-server", str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(lambda: (sentinel.terminate(), sentinel.wait(timeout=10)))
        watcher = redis.Redis(port=ports["sentinel"], decode_responses=True)
        # The Sentinel learns the replica from the master's INFO (every 10 s at first).
        wait_for(lambda: watcher.sentinel_slaves(SERVICE), timeout=30)
        wait_for(
            lambda: (
                redis.Redis(port=ports["replica"]).info("replication")["master_link_status"] == "up"
            )
        )
        yield ports


def wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.ConnectionError, OSError):
            pass
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def master_port(sentinel_port: int) -> int:
    return int(redis.Redis(port=sentinel_port).sentinel_get_master_addr_by_name(SERVICE)[1])


def fail_over(ports: dict[str, int]) -> None:
    redis.Redis(port=ports["sentinel"]).execute_command("SENTINEL", "FAILOVER", SERVICE)
    wait_for(lambda: master_port(ports["sentinel"]) == ports["replica"])
    wait_for(lambda: redis.Redis(port=ports["replica"]).info("replication")["role"] == "master")


def send_task_through_broker(url: str) -> None:
    """A fresh process configured by REDIS_URL alone queues a task on the current master."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from canary.celery import app; "
            "app.send_task('monitoring.tasks.rollup_task')",
        ],
        cwd=ROOT,
        env=server_env(REDIS_URL=url, DJANGO_SETTINGS_MODULE="canary.settings"),
        check=True,
        timeout=60,
    )


def execute(base: str, deployment: Deployment, user: str, token: str) -> str:
    response = requests.post(
        f"{base}/api/v1/rulesets/{deployment.ruleset_id}/execute",
        json={"input": {"temperature": 20, "zone": "C"}, "user_id": user},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["canary_version"]


@pytest.mark.django_db(transaction=True)
def test_failover_loses_no_lifecycle_change(roles: None, tmp_path: Path) -> None:
    canary = make_canary("sentinel", traffic=50, auto_rollback=False)
    engine = create_user("engine", "viewer")
    approver = create_user("approver-sentinel", "approver")
    users = [f"user-{n}" for n in range(20)]
    with sentinel_set(tmp_path) as ports:
        url = f"redis+sentinel://127.0.0.1:{ports['sentinel']}/{SERVICE}/0"
        with gunicorn(workers=1, REDIS_URL=url) as base:
            before = {user: execute(base, canary, user, engine) for user in users}
            assert set(before.values()) == {"v1", "v2"}
            assert redis.Redis(port=ports["master"]).dbsize() > 0  # the servers use the master
            send_task_through_broker(url)
            assert redis.Redis(port=ports["master"]).llen("celery") == 1

            # The rollback commits, then Redis fails over at once: whatever of the
            # announcement the old master held may be gone; PostgreSQL is not.
            rolled = requests.post(
                f"{base}/api/v1/deployments/{canary.pk}/rollback",
                json={"reason": "failover drill"},
                headers={"Authorization": f"Bearer {approver}"},
                timeout=10,
            )
            assert rolled.status_code == 200, rolled.text
            fail_over(ports)

            after: dict[str, str] = {}
            deadline = time.monotonic() + 10
            while len(after) < len(users):
                assert time.monotonic() < deadline
                for user in users:
                    try:
                        after[user] = execute(base, canary, user, engine)
                    except AssertionError:
                        time.sleep(0.1)  # a request on a dropped connection: retried
            assert set(after.values()) == {"v1"}  # the rollback holds on the new master
            ready = requests.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text  # the cache follows the new master too
            assert Deployment.objects.get(pk=canary.pk).status == "rolled_back"

        send_task_through_broker(url)
        assert redis.Redis(port=ports["replica"]).llen("celery") >= 1  # the new master
