"""The bake after a promotion (SPEC 10.3) through the real execute path and the monitor."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from assignments import router
from assignments.services import dataplane_execute
from deployments import services as lifecycle
from deployments.models import Deployment, DeploymentEvent
from monitoring.automation.monitor import monitor_run
from monitoring.models import ExecutionLog
from tests.monitoring.test_scheduler_e2e import celery_processes
from tests.monitoring.webhook import slack_stub
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.stored import stored

# v1 answers (20 is not above 25); v2 reaches its zone rule, which has no zone to read.
FAILING_IN_V2 = {"temperature": 20}
# No temperature: the first rule of both versions fails on it.
FAILING_IN_BOTH = {"zone": "A"}
GOOD = {"temperature": 30, "zone": "C"}


def promoted_with_bake(name: str, **config: Any) -> Deployment:
    """v1 active, v2 through a canary and promoted with a bake of ``bake_minutes``."""
    ruleset = lifecycle.ruleset_create(name=name, actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        lifecycle.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        canary_config={"bake_minutes": 60, **config},
        actor="t",
    )
    lifecycle.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="t")
    return lifecycle.deployment_promote(deployment_id=draft.pk, actor="t")


def execute(deployment: Deployment, data: dict, user: str, now: Any = None) -> Any:
    return dataplane_execute(
        ruleset_id=deployment.ruleset_id,
        input=data,
        context=router.RoutingContext(user_id=user),
        now=now,
    )


def run_mix(deployment: Deployment, failing: dict, count: int = 100, fail_every: int = 4) -> None:
    for n in range(count):
        execute(deployment, failing if n % fail_every == 0 else GOOD, f"u{n}")


@pytest.mark.django_db
def test_bake_minutes_is_validated(approver: APIClient, ruleset: Any) -> None:
    for bad in (-1, 10_081, "a day", 1.5, True):
        response = approver.post(
            "/api/v1/deployments",
            {
                "ruleset_id": str(ruleset.pk),
                "version": "v2.0.0",
                "canary_config": {"bake_minutes": bad},
            },
            format="json",
        )
        assert response.status_code == 400, bad
        assert list(response.json()["canary_config"]) == ["bake_minutes"], bad
    response = approver.post(
        "/api/v1/deployments",
        {
            "ruleset_id": str(ruleset.pk),
            "version": "v2.0.0",
            "canary_config": {"bake_minutes": 1440},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["canary_config"]["bake_minutes"] == 1440


@pytest.mark.django_db
def test_a_baking_execute_answers_the_active_version_and_records_the_pair(
    roles: None, viewer: APIClient
) -> None:
    promoted = promoted_with_bake("bake-pairs")
    previous = promoted.baseline
    result = execute(promoted, FAILING_IN_V2, "u1")
    # The answer is the active version's, as without a bake.
    assert result.resolution.version == "v2.0.0"
    assert result.resolution.canary_version == "v1"
    assert result.success is False
    [log] = stored(ExecutionLog).filter(deployment=promoted)
    assert log.served_version == "v2"
    assert log.version_id == promoted.version_id
    assert log.success is False
    assert log.shadow_success is True  # the previous version answered on the same input
    assert log.shadow_output == DEFAULT_OUTPUT
    assert log.agreed is False
    assert not ExecutionLog.objects.filter(deployment=previous).exists()
    shadow = viewer.get(f"/api/v1/deployments/{promoted.pk}/shadow").json()
    assert shadow["evaluated"] == 1
    assert shadow["outcomes"]["only_v2_failed"] == 1


@pytest.mark.django_db
def test_health_says_baking_until_the_end(roles: None, viewer: APIClient) -> None:
    ruleset = lifecycle.ruleset_create(name="bake-health", actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        lifecycle.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", canary_config={"bake_minutes": 90}, actor="t"
    )
    canary = lifecycle.deployment_start_canary(deployment_id=draft.pk, actor="t")
    health = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
    assert health["baking"] is False
    assert health["bake_ends_at"] is None
    promoted = lifecycle.deployment_promote(deployment_id=draft.pk, actor="t")
    health = viewer.get(f"/api/v1/deployments/{promoted.pk}/health").json()
    assert health["baking"] is True
    ends = promoted.promoted_at + timedelta(minutes=90)
    assert health["bake_ends_at"] == ends.isoformat()
    # An initial release has nothing to bake against.
    first_health = viewer.get(f"/api/v1/deployments/{first.pk}/health").json()
    assert first_health["baking"] is False
    Deployment.objects.filter(pk=promoted.pk).update(
        promoted_at=timezone.now() - timedelta(minutes=91)
    )
    health = viewer.get(f"/api/v1/deployments/{promoted.pk}/health").json()
    assert health["baking"] is False
    assert health["bake_ends_at"] is None


@pytest.mark.django_db
def test_a_promoted_version_failing_where_the_previous_succeeds_is_rolled_back(
    roles: None, viewer: APIClient
) -> None:
    promoted = promoted_with_bake("bake-worse")
    previous = promoted.baseline
    run_mix(promoted, FAILING_IN_V2)
    # Every surface says so before the monitor acts: one decision.
    health = viewer.get(f"/api/v1/deployments/{promoted.pk}/health").json()
    assert (health["baking"], health["health_status"]) == (True, "unhealthy")
    assert health["recommendation"] == "rollback"
    assert health["circuit_breaker_state"] == "CLOSED"
    comparison = viewer.get(f"/api/v1/deployments/{promoted.pk}/comparison").json()
    assert comparison["comparison"]["recommendation"] == "rollback"
    shadow = viewer.get(f"/api/v1/deployments/{promoted.pk}/shadow").json()
    assert shadow["outcomes"]["only_v2_failed"] == 25
    assert shadow["mcnemar"]["worse"] == "v2"
    report = monitor_run()
    assert report.rolled_back == [str(promoted.pk)]
    rolled = Deployment.objects.get(pk=promoted.pk)
    assert rolled.status == "rolled_back"
    assert rolled.rollback_reason.startswith("Bake after promotion: automatic rollback")
    assert "always-valid sequential test" in rolled.rollback_reason
    event = DeploymentEvent.objects.get(deployment=promoted, action="rollback")
    assert event.actor == "system:monitor"
    assert (event.from_status, event.to_status) == ("active", "rolled_back")
    restored = Deployment.objects.get(pk=previous.pk)
    assert restored.status == "active"
    restore = DeploymentEvent.objects.get(deployment=previous, action="restore")
    assert restore.actor == "system:monitor"
    # The previous version serves again, with nothing shadowed.
    result = execute(promoted, FAILING_IN_V2, "after")
    assert result.resolution.version == "v1.0.0"
    assert result.success is True
    assert stored(ExecutionLog).filter(deployment=promoted).count() == 100


@pytest.mark.django_db
def test_a_bake_breach_without_automatic_rollback_holds(
    roles: None, viewer: APIClient, approver: APIClient
) -> None:
    promoted = promoted_with_bake("bake-held", auto_rollback=False)
    run_mix(promoted, FAILING_IN_V2)
    assert monitor_run().rolled_back == []
    monitor_run()  # a second run holds; it does not hold again
    assert Deployment.objects.get(pk=promoted.pk).status == "active"
    [detected] = DeploymentEvent.objects.filter(deployment=promoted, action="regression_detected")
    assert detected.actor == "system:monitor"
    assert "error_rate" in detected.payload["rules"]
    health = viewer.get(f"/api/v1/deployments/{promoted.pk}/health").json()
    assert (health["baking"], health["health_status"]) == (True, "unhealthy")
    assert health["recommendation"] == "rollback"
    assert health["warnings"][0].startswith("regression_held:")
    dismissed = approver.post(
        f"/api/v1/deployments/{promoted.pk}/dismiss-regression",
        {"reason": "the failing inputs are a test client's"},
        format="json",
    )
    assert dismissed.status_code == 200, dismissed.content
    assert DeploymentEvent.objects.filter(
        deployment=promoted, action="regression_dismissed"
    ).exists()


@pytest.mark.django_db
def test_failures_the_previous_version_shares_never_roll_the_bake_back(
    roles: None, viewer: APIClient
) -> None:
    """SPEC 9.6 in the bake: inputs failing in both versions are not the promotion's fault."""
    promoted = promoted_with_bake("bake-shared")
    run_mix(promoted, FAILING_IN_BOTH)
    health = viewer.get(f"/api/v1/deployments/{promoted.pk}/health").json()
    assert health["baking"] is True
    assert health["recommendation"] != "rollback"
    for _ in range(2):
        report = monitor_run()
        assert report.rolled_back == []
    assert Deployment.objects.get(pk=promoted.pk).status == "active"
    pairs = stored(ExecutionLog).filter(deployment=promoted)
    assert pairs.filter(success=False, shadow_success=False).count() == 25


@pytest.mark.django_db(transaction=True)
def test_when_the_bake_ends_nothing_more_is_shadowed(roles: None) -> None:
    """The data plane stops at the end on its own clock; ``bake_complete`` ends it for every
    process (its generation bump is announced on commit)."""
    promoted = promoted_with_bake("bake-ends", bake_minutes=30)
    ends = promoted.promoted_at + timedelta(minutes=30)
    execute(promoted, GOOD, "during", now=ends - timedelta(seconds=1))
    assert stored(ExecutionLog).filter(deployment=promoted).count() == 1
    # Past the end, the same process shadows nothing, before the monitor says anything.
    for n in range(20):
        result = execute(promoted, GOOD, f"after-{n}", now=ends + timedelta(seconds=n))
        assert result.resolution.version == "v2.0.0"
    assert stored(ExecutionLog).filter(deployment=promoted).count() == 1
    report = monitor_run(now=ends + timedelta(seconds=5))
    assert report.bakes_completed == [str(promoted.pk)]
    monitor_run(now=ends + timedelta(minutes=5))
    [event] = DeploymentEvent.objects.filter(deployment=promoted, action="bake_complete")
    assert event.actor == "system:monitor"
    assert event.payload["previous_deployment_id"] == str(promoted.baseline_id)
    execute(promoted, FAILING_IN_V2, "later")
    assert stored(ExecutionLog).filter(deployment=promoted).count() == 1
    assert Deployment.objects.get(pk=promoted.pk).status == "active"


@pytest.mark.django_db
def test_shadow_percentage_samples_the_bake(roles: None) -> None:
    promoted = promoted_with_bake("bake-sampled", shadow_percentage=0)
    for n in range(20):
        execute(promoted, GOOD, f"u{n}")
    assert not stored(ExecutionLog).filter(deployment=promoted).exists()


@pytest.mark.django_db
def test_a_canary_on_the_promoted_version_takes_over_from_its_bake(roles: None) -> None:
    promoted = promoted_with_bake("bake-then-canary")
    run_mix(promoted, FAILING_IN_V2)
    ruleset = promoted.ruleset
    lifecycle.ruleset_version_create(
        ruleset=ruleset, version="v3.0.0", rules=V1_RULES, default=DEFAULT_OUTPUT, actor="t"
    )
    draft = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="t")
    canary = lifecycle.deployment_start_canary(deployment_id=draft.pk, canary_pct=0, actor="t")
    execute(promoted, GOOD, "u1")
    logs = stored(ExecutionLog)
    assert logs.filter(deployment=promoted).count() == 100
    assert logs.filter(deployment=canary).count() == 1
    # The bake breached, but a release a canary builds on is not rolled back under it.
    assert monitor_run().rolled_back == []
    assert Deployment.objects.get(pk=promoted.pk).status == "active"


def monitor_runs_received(tmp_path: Path) -> int:
    log = (tmp_path / "worker.log").read_text()
    return sum(
        1
        for line in log.splitlines()
        if "Task monitoring.tasks.canary_monitor_task[" in line and "received" in line
    )


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_and_beat_roll_a_bad_promotion_back_within_two_runs(
    roles: None, tmp_path: Path
) -> None:
    promoted = promoted_with_bake("bake-scheduled")
    shared = promoted_with_bake("bake-scheduled-shared")
    run_mix(promoted, FAILING_IN_V2)
    run_mix(shared, FAILING_IN_BOTH)
    with slack_stub() as webhook, celery_processes(tmp_path, SLACK_WEBHOOK_URL=webhook.url):
        deadline = time.monotonic() + 60
        runs = None
        while time.monotonic() < deadline:
            if Deployment.objects.get(pk=promoted.pk).status == "rolled_back":
                runs = monitor_runs_received(tmp_path)
                break
            time.sleep(0.1)
        # A few more looks: the one failing only where the previous version fails stays.
        while time.monotonic() < deadline and monitor_runs_received(tmp_path) < 4:
            time.sleep(0.25)
        while time.monotonic() < deadline and not webhook.received:
            time.sleep(0.25)

    logs = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
    rolled = Deployment.objects.get(pk=promoted.pk)
    assert rolled.status == "rolled_back", logs
    assert runs is not None and 1 <= runs <= 2, logs
    assert rolled.rollback_reason.startswith("Bake after promotion")
    event = DeploymentEvent.objects.get(deployment=promoted, action="rollback")
    assert event.actor == "system:monitor"
    assert Deployment.objects.get(pk=promoted.baseline_id).status == "active"
    assert Deployment.objects.get(pk=shared.pk).status == "active"
    assert len(webhook.received) == 1, logs
    text = webhook.received[0]["text"]
    assert "Automatic rollback by system:monitor during the bake after promotion" in text
    assert "Bake after promotion" in text
