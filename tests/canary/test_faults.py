"""Faults with real processes: Redis stops, a worker dies mid-run, the web server restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import redis
import requests
from django.db import connection
from django.utils import timezone

from assignments.sticky import ASSIGNMENT_STREAM, EXECUTION_STREAM
from deployments.models import Deployment, DeploymentEvent
from monitoring.automation.monitor import monitor_lease, monitor_run
from monitoring.models import ExecutionLog
from tests.accounts import create_user
from tests.monitoring.logs import add_logs
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import (
    ROOT,
    CuttableProxy,
    database_url_of_test_db,
    free_port,
    granian,
    gunicorn,
    private_redis,
    server_env,
)
from tests.stored import stored


def wait_until_drained(client: redis.Redis, timeout: float = 10) -> None:
    """Until the web servers' drainers have emptied the write buffers."""
    deadline = time.monotonic() + timeout
    while any(client.xlen(stream) for stream in (ASSIGNMENT_STREAM, EXECUTION_STREAM)):
        assert time.monotonic() < deadline, "the write buffers were not drained"
        time.sleep(0.05)


def execute(base: str, ruleset_id: object, user: str, token: str) -> requests.Response:
    return requests.post(
        f"{base}/api/v1/rulesets/{ruleset_id}/execute",
        json={"input": {"temperature": 30}, "user_id": user},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


@pytest.mark.django_db(transaction=True)
def test_redis_outage_keeps_the_data_plane_answering(roles: None) -> None:
    canary = make_canary("redis-outage", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    users = [f"user-{n}" for n in range(20)]
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    with private_redis(port) as first_redis, gunicorn(workers=2, REDIS_URL=redis_url) as base:
        before = {
            u: execute(base, canary.ruleset_id, u, token).json()["canary_version"] for u in users
        }
        assert set(before.values()) == {"v1", "v2"}

        # What the servers drained is in PostgreSQL; a Redis crash loses only
        # what was still in its streams (docs/durability.md).
        wait_until_drained(redis.Redis(port=port))
        first_redis.terminate()
        first_redis.wait(timeout=10)
        during = {}
        for user in users:
            response = execute(base, canary.ruleset_id, user, token)
            assert response.status_code == 200, response.text
            during[user] = response.json()["canary_version"]
        resolved = requests.get(
            f"{base}/api/v1/rulesets/{canary.ruleset_id}/resolve",
            params={"user_id": "brand-new"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert resolved.status_code == 200
        not_ready = requests.get(f"{base}/readyz", timeout=10)
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["redis"].startswith("error")
        # Sticky assignments come from the database while Redis is away.
        assert during == before

        with private_redis(port):
            after = {
                u: execute(base, canary.ruleset_id, u, token).json()["canary_version"]
                for u in users
            }
            assert after == before
            assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
            wait_until_drained(redis.Redis(port=port))
    served = stored(ExecutionLog).filter(deployment=canary).count()
    assert served == 3 * len(users)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_loses_no_verdict(roles: None) -> None:
    canary = make_canary("killed-worker", traffic=10)
    # A monitor run that takes the lease and is then killed with SIGKILL.
    script = (
        "import django, time; django.setup()\n"
        "from django.utils import timezone\n"
        "from monitoring.automation.monitor import MONITOR_JOB, monitor_lease\n"
        "from monitoring.leases import lease_acquire\n"
        "now, lease = timezone.now(), monitor_lease()\n"
        "assert lease_acquire(MONITOR_JOB, holder='doomed', now=now, lease=lease)\n"
        "print('leased', flush=True)\n"
        "time.sleep(600)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=server_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "leased"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)

    assert monitor_run().skipped is True  # the dead run's lease still holds
    later = timezone.now() + monitor_lease() + timedelta(seconds=1)
    add_logs(canary, "v2", [1.0] * 100, errors=20, at=later - timedelta(minutes=1), paired=True)
    report = monitor_run(now=later)  # the next period
    assert report.rolled_back == [str(canary.pk)]
    assert DeploymentEvent.objects.filter(deployment=canary, action="rollback").count() == 1


@pytest.mark.django_db(transaction=True)
def test_web_server_restart_loses_no_assignment_or_log(roles: None) -> None:
    canary = make_canary("restart", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    answered: dict[str, str] = {}
    stop = threading.Event()

    def traffic(base: str) -> None:
        n = 0
        while not stop.is_set():
            user = f"user-{n % 40}"
            try:
                response = execute(base, canary.ruleset_id, user, token)
            except requests.RequestException:
                n += 1
                continue
            if response.status_code == 200:
                version = response.json()["canary_version"]
                assert answered.setdefault(user, version) == version
                answered[f"#{n}"] = version
            n += 1

    with gunicorn(workers=2, crash=True) as base:
        sender = threading.Thread(target=traffic, args=(base,))
        sender.start()
        time.sleep(3)
    # The server is gone mid-traffic; stop the sender once it has seen the refusals.
    stop.set()
    sender.join(timeout=30)
    answered_requests = sum(1 for key in answered if key.startswith("#"))
    assert answered_requests > 0
    # Every answered request is logged. A request the crash cut off after its log
    # was written (at most one per worker) is logged without an answer.
    logged = stored(ExecutionLog).filter(deployment=canary).count()
    assert answered_requests <= logged <= answered_requests + 2

    with gunicorn(workers=2) as base:
        for user, version in answered.items():
            if user.startswith("user-"):
                again = execute(base, canary.ruleset_id, user, token).json()["canary_version"]
                assert again == version, user
    assert Deployment.objects.get(pk=canary.pk).status == "canary"


@pytest.mark.django_db(transaction=True)
def test_postgresql_unreachable_is_a_503_with_retry_after(roles: None) -> None:
    """A fresh process that never loaded the rule set nor cached the token, PostgreSQL cut off:
    every API answer is a JSON 503 with ``Retry-After``, never a 500."""
    if connection.vendor != "postgresql":
        pytest.skip("cutting PostgreSQL off needs PostgreSQL (CI runs on it)")
    canary = make_canary("postgres-unreachable", traffic=50, auto_rollback=False)
    warm_token = create_user("engine", "viewer")
    cold_token = create_user("other-engine", "viewer")
    database = connection.settings_dict
    proxy = CuttableProxy((database.get("HOST") or "127.0.0.1", int(database.get("PORT") or 5432)))
    proxy.start()
    proxied = database_url_of_test_db().replace(
        f":{database.get('PORT') or 5432}/", f":{proxy.port}/"
    )
    port = free_port()
    env = {"DATABASE_URL": proxied, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    execute_url = f"/api/v1/rulesets/{canary.ruleset_id}/execute"
    resolve_url = f"/api/v1/rulesets/{canary.ruleset_id}/resolve?user_id=u1"
    with private_redis(port):
        with granian(workers=1, **env) as server:  # caches warm_token in Redis
            assert execute(server.base, canary.ruleset_id, "u0", warm_token).ok
        proxy.cut()
        with granian(workers=1, **env) as server:
            cases = [
                ("POST", execute_url, warm_token, {}),  # token cached, rule set not loaded
                ("POST", execute_url, cold_token, {}),
                ("POST", execute_url, warm_token, {"Origin": "https://app.example"}),
                ("GET", resolve_url, warm_token, {}),
                ("GET", resolve_url, cold_token, {}),
                ("GET", resolve_url, cold_token, {"Origin": "https://app.example"}),
                ("GET", "/api/v1/deployments", warm_token, {}),
                ("GET", f"/api/v1/deployments/{canary.pk}/metrics", cold_token, {}),
            ]
            for method, path, token, headers in cases:
                response = requests.request(
                    method,
                    f"{server.base}{path}",
                    json={"input": {"temperature": 30}, "user_id": "u1"}
                    if method == "POST"
                    else None,
                    headers={"Authorization": f"Bearer {token}", **headers},
                    timeout=10,
                )
                case = (method, path, headers)
                assert response.status_code == 503, (case, response.status_code, response.text)
                assert response.headers["Content-Type"] == "application/json", case
                assert response.json()["code"] == "unavailable", case
                assert response.json()["detail"], case
                assert 1 <= int(response.headers["Retry-After"]) <= 60, case
        proxy.start()
