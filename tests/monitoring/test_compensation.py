"""Compensation: manual flags v2's executions; replay lists exactly the changed decisions."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from assignments import router
from assignments.services import dataplane_execute
from canary.celery import app as celery_app
from deployments import services as lifecycle
from deployments.models import Deployment
from monitoring.automation.compensation import compensation_replay
from monitoring.models import ExecutionLog
from tests.monitoring.test_breaker_integration import make_canary
from tests.samples import DEFAULT_OUTPUT
from tests.stored import stored


def manual_canary(name: str) -> Deployment:
    return make_canary(name, compensation_strategy="manual", failure_threshold=1000)


# v1: temperature > 25 raises; v2: > 27 raises, zone A/B watches. They disagree on
# 26 and 27 (v1 raises, v2 does not) and on zone A at a low temperature.
INPUTS = [
    ({"temperature": 30, "zone": "C"}, False),
    ({"temperature": 26, "zone": "C"}, True),
    ({"temperature": 27, "zone": "C"}, True),
    ({"temperature": 20, "zone": "A"}, True),
    ({"temperature": 20, "zone": "C"}, False),
    ({"temperature": 28, "zone": "B"}, False),
]
EXPECTED_DIFFERENCES = sum(differs for _, differs in INPUTS)


def serve_all(deployment: Deployment, copies: int = 1) -> None:
    for copy in range(copies):
        for n, (data, _) in enumerate(INPUTS):
            dataplane_execute(
                ruleset_id=deployment.ruleset_id,
                input=data,
                context=router.RoutingContext(user_id=f"u-{copy}-{n}"),
            )


@pytest.mark.django_db
def test_manual_rollback_flags_v2_and_replay_finds_k_differences(
    roles: None, approver: APIClient
) -> None:
    canary = manual_canary("compensation")
    serve_all(canary)
    assert stored(ExecutionLog).filter(deployment=canary, served_version="v2").count() == 6
    rolled = approver.post(
        f"/api/v1/deployments/{canary.pk}/rollback",
        {"reason": "bad thresholds", "apply_compensation": True},
        format="json",
    )
    assert rolled.status_code == 200
    assert Deployment.objects.get(pk=canary.pk).compensation_status == "pending"
    assert stored(ExecutionLog).filter(deployment=canary, needs_reprocess=True).count() == 6

    result = compensation_replay(deployment_id=canary.pk)
    assert result == {"processed": 6, "differing": EXPECTED_DIFFERENCES, "redacted": 0}
    body = approver.get(f"/api/v1/deployments/{canary.pk}/compensation", {"page_size": 2}).json()
    assert (body["flagged"], body["processed"], body["differing"]) == (6, 6, EXPECTED_DIFFERENCES)
    assert body["total_differences"] == EXPECTED_DIFFERENCES and len(body["differences"]) == 2
    first = body["differences"][0]
    assert first["input"] == {"temperature": 26, "zone": "C"}
    assert (first["v2_output"], first["v1_output"]) == (DEFAULT_OUTPUT, {"alert": "raise"})

    done = approver.post(f"/api/v1/deployments/{canary.pk}/compensation/complete")
    assert done.status_code == 200 and done.json()["status"] == "rolled_back"
    assert Deployment.objects.get(pk=canary.pk).compensation_status == "completed"
    again = approver.post(f"/api/v1/deployments/{canary.pk}/compensation/complete")
    assert again.status_code == 409


@pytest.mark.django_db
def test_without_compensation_nothing_is_flagged(roles: None) -> None:
    canary = manual_canary("no-compensation")
    serve_all(canary)
    lifecycle.deployment_rollback(
        deployment_id=canary.pk, reason="x", actor="t", apply_compensation=False
    )
    assert Deployment.objects.get(pk=canary.pk).compensation_status == "none"
    assert not stored(ExecutionLog).filter(needs_reprocess=True).exists()


@pytest.mark.django_db
def test_replay_interrupted_and_resumed_processes_each_once(roles: None) -> None:
    canary = manual_canary("resume")
    serve_all(canary, copies=5)  # 30 executions, 15 differing
    lifecycle.deployment_rollback(deployment_id=canary.pk, reason="x", actor="t")
    flagged = stored(ExecutionLog).filter(deployment=canary, needs_reprocess=True)

    class Killed(Exception):
        pass

    from monitoring.automation import compensation

    original = compensation.compiled_rules_for_version_id
    calls = {"n": 0}

    def dies_after_first_batch(version_id: str) -> Any:
        compiled = original(version_id)

        class Dying:
            def evaluate(self, data: Any) -> Any:
                calls["n"] += 1
                if calls["n"] > 12:
                    raise Killed
                return compiled.evaluate(data)

        return Dying()

    compensation.compiled_rules_for_version_id = dies_after_first_batch
    try:
        with pytest.raises(Killed):
            compensation_replay(deployment_id=canary.pk, batch_size=5)
    finally:
        compensation.compiled_rules_for_version_id = original
    assert flagged.filter(reprocessed_at__isnull=False).count() == 12
    resumed = compensation_replay(deployment_id=canary.pk, batch_size=5)
    assert resumed["processed"] == 18
    assert flagged.filter(reprocessed_at__isnull=False).count() == 30
    assert flagged.filter(replay_differs=True).count() == EXPECTED_DIFFERENCES * 5
    assert compensation_replay(deployment_id=canary.pk) == {
        "processed": 0,
        "differing": 0,
        "redacted": 0,
    }


@pytest.mark.django_db(transaction=True)
def test_two_replays_at_once_process_each_execution_once(roles: None) -> None:
    canary = manual_canary("parallel-replay")
    serve_all(canary, copies=10)
    lifecycle.deployment_rollback(deployment_id=canary.pk, reason="x", actor="t")
    results: list[dict] = []
    barrier = threading.Barrier(2)

    def replay() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(compensation_replay(deployment_id=canary.pk, batch_size=7))
        finally:
            connection.close()

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r["processed"] for r in results) == 60
    assert sum(r["differing"] for r in results) == EXPECTED_DIFFERENCES * 10


@pytest.mark.django_db
def test_replay_endpoint_queues_the_task(
    roles: None, approver: APIClient, viewer: APIClient
) -> None:
    canary = manual_canary("replay-endpoint")
    serve_all(canary)
    url = f"/api/v1/deployments/{canary.pk}/compensation/replay"
    assert approver.post(url).status_code == 409  # nothing flagged yet
    lifecycle.deployment_rollback(deployment_id=canary.pk, reason="x", actor="t")
    assert viewer.post(url).status_code == 403
    celery_app.conf.task_always_eager = True
    try:
        response = approver.post(url)
    finally:
        celery_app.conf.task_always_eager = False
    assert response.status_code == 202
    assert response.json()["replay"] == "queued"
    assert (
        stored(ExecutionLog).filter(deployment=canary, replay_differs=True).count()
        == EXPECTED_DIFFERENCES
    )
