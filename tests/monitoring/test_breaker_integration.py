"""The breaker fed by real executions: it opens, routes to v1 and rolls the canary back once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection

from assignments import router
from assignments.models import Assignment
from assignments.services import dataplane_execute, dataplane_resolve
from deployments import services as lifecycle
from deployments.models import Deployment, DeploymentEvent
from monitoring.breaker import state as breaker
from monitoring.breaker.store import breaker_store
from monitoring.recording import breaker as services
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.servers import ROOT, server_env
from tests.stored import stored

# v1 answers (20 is not above 25); v2 reaches its zone rule, which has no zone to read.
FAILING_INPUT = {"temperature": 20}
# No temperature: the first rule of both versions fails to evaluate on it.
FAILING_IN_BOTH = {"zone": "A"}


def make_canary(
    name: str,
    *,
    traffic: int = 100,
    auto_rollback: bool = True,
    compensation_strategy: str = "rollback_only",
    failure_threshold: int = 5,
) -> Deployment:
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
        canary_config={
            "auto_rollback": auto_rollback,
            "breaker_cooldown_seconds": 60,
            "failure_threshold": failure_threshold,
        },
        compensation_strategy=compensation_strategy,
        actor="t",
    )
    return lifecycle.deployment_start_canary(deployment_id=draft.pk, canary_pct=traffic, actor="t")


def run(deployment: Deployment, user: str, data: dict) -> str:
    return dataplane_execute(
        ruleset_id=deployment.ruleset_id, input=data, context=router.RoutingContext(user_id=user)
    ).resolution.canary_version


@pytest.mark.django_db
def test_inputs_failing_in_both_versions_never_open_the_breaker(roles: None) -> None:
    """SPEC 9.6: a v2 failure counts only when v1, on the same input, succeeded."""
    canary = make_canary("breaker-both")
    for n in range(40):
        assert run(canary, f"u{n}", FAILING_IN_BOTH) == "v2"
    assert Deployment.objects.get(pk=canary.pk).status == "canary"
    assert breaker_store().read(canary.pk).consecutive_failures == 0
    # v2's own failures still count, even with shared failures between them.
    for n in range(5):
        run(canary, f"w{n}", FAILING_INPUT)
        run(canary, f"x{n}", FAILING_IN_BOTH)
    assert Deployment.objects.get(pk=canary.pk).status == "canary"  # reset by each shared one
    for n in range(5):
        run(canary, f"y{n}", FAILING_INPUT)
    assert Deployment.objects.get(pk=canary.pk).status == "rolled_back"


@pytest.mark.django_db
def test_five_consecutive_failures_roll_the_canary_back(roles: None) -> None:
    canary = make_canary("breaker-seq")
    for n in range(4):
        assert run(canary, f"u{n}", FAILING_INPUT) == "v2"
    assert Deployment.objects.get(pk=canary.pk).status == "canary"
    run(canary, "u4", FAILING_INPUT)
    rolled = Deployment.objects.get(pk=canary.pk)
    assert rolled.status == "rolled_back"
    assert "Circuit breaker opened after 5 consecutive v2 failures" in rolled.rollback_reason
    event = DeploymentEvent.objects.get(deployment=canary, action="rollback")
    assert event.actor == "system:breaker"
    assert breaker_store().read(canary.pk).state == breaker.OPEN
    # v1 serves everyone afterwards.
    assert run(canary, "u0", {"temperature": 30}) == "v1"


@pytest.mark.django_db
def test_a_success_between_failures_keeps_it_closed(roles: None) -> None:
    canary = make_canary("breaker-reset")
    for n in range(8):
        run(canary, f"u{n}", FAILING_INPUT if n != 4 else {"temperature": 30})
    assert Deployment.objects.get(pk=canary.pk).status == "canary"
    assert breaker_store().read(canary.pk).consecutive_failures == 3


@pytest.mark.django_db
def test_open_breaker_without_auto_rollback_routes_to_v1_and_stores_nothing(roles: None) -> None:
    canary = make_canary("breaker-open", auto_rollback=False)
    for n in range(5):
        run(canary, f"u{n}", FAILING_INPUT)
    assert Deployment.objects.get(pk=canary.pk).status == "canary"
    before = stored(Assignment).count()
    resolution = dataplane_resolve(
        ruleset_id=canary.ruleset_id, context=router.RoutingContext(user_id="fresh")
    )
    assert (resolution.canary_version, resolution.assignment_priority) == ("v1", None)
    assert resolution.breaker_state == "OPEN"
    assert stored(Assignment).count() == before


@pytest.mark.django_db
def test_an_opening_without_auto_rollback_is_recorded_once_as_an_event(roles: None) -> None:
    canary = make_canary("breaker-event", auto_rollback=False)
    for n in range(7):  # the fifth failure opens it; the next two are served by v1
        run(canary, f"u{n}", FAILING_INPUT)
    event = DeploymentEvent.objects.get(deployment=canary, action="breaker_open")
    assert event.actor == "system:breaker"
    assert (event.from_status, event.to_status) == ("canary", "canary")
    assert event.payload == {"consecutive_failures": 5, "cooldown_seconds": 60.0}
    # With auto-rollback the rollback event is the record: no second event.
    rolled = make_canary("breaker-event-rollback")
    for n in range(5):
        run(rolled, f"u{n}", FAILING_INPUT)
    assert not DeploymentEvent.objects.filter(deployment=rolled, action="breaker_open").exists()


@pytest.mark.django_db
def test_manual_rollback_leaves_the_breaker_open(
    roles: None, django_capture_on_commit_callbacks: object
) -> None:
    canary = make_canary("breaker-manual")
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        lifecycle.deployment_rollback(deployment_id=canary.pk, reason="manual", actor="t")
    state = breaker_store().read(canary.pk)
    assert state.state == breaker.OPEN
    assert breaker.current(state, now=time.time() + 59, cooldown=60).state == breaker.OPEN


@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_roll_back_exactly_once(roles: None) -> None:
    canary = make_canary("breaker-race")
    threads_count = 24
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def fail(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            run(canary, f"user-{n}", FAILING_INPUT)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fail, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert Deployment.objects.get(pk=canary.pk).status == "rolled_back"
    assert DeploymentEvent.objects.filter(deployment=canary, action="rollback").count() == 1


@pytest.mark.django_db(transaction=True)
def test_state_is_shared_across_processes(roles: None) -> None:
    canary = make_canary("breaker-processes", auto_rollback=False)
    script = (
        "import json, sys, django; django.setup()\n"
        "from monitoring.recording import breaker as services\n"
        "deployment_id, config = sys.argv[1], json.loads(sys.argv[2])\n"
        "for _ in range(5):\n"
        "    services.breaker_record(\n"
        "        deployment_id=deployment_id, canary_config=config, success=False)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(canary.pk), json.dumps(canary.canary_config)],
        cwd=ROOT,
        env=server_env(),
        check=True,
        timeout=60,
    )
    gate = services.breaker_gate(canary.pk, canary.canary_config)
    assert (gate.allow_v2, gate.state) == (False, "OPEN")


@pytest.mark.django_db
def test_half_open_admits_one_trial_execution_and_resolve_never_takes_it(roles: None) -> None:
    canary = make_canary("breaker-half-open", traffic=100, auto_rollback=False)
    opened_long_ago = breaker.BreakerState(breaker.OPEN, 5, opened_at=time.time() - 3_600)
    breaker_store().update(canary.pk, lambda state: (None, opened_long_ago))

    resolved = dataplane_resolve(
        ruleset_id=canary.ruleset_id, context=router.RoutingContext(user_id="a")
    )
    assert (resolved.canary_version, resolved.breaker_state) == ("v1", "HALF_OPEN")
    assert breaker_store().read(canary.pk).trial_started_at is None

    assert run(canary, "a", {"temperature": 30}) == "v2"  # the trial, and it succeeds
    assert breaker_store().read(canary.pk).state == breaker.CLOSED
    assert run(canary, "b", {"temperature": 30}) == "v2"


@pytest.mark.django_db
def test_only_one_trial_while_it_is_in_flight(roles: None) -> None:
    canary = make_canary("breaker-one-trial", traffic=100, auto_rollback=False)
    opened_long_ago = breaker.BreakerState(breaker.OPEN, 5, opened_at=time.time() - 3_600)
    breaker_store().update(canary.pk, lambda state: (None, opened_long_ago))
    claimed = services.breaker_claim_trial(canary.pk, canary.canary_config)
    assert claimed is True
    # Another request while the trial is running: v1.
    assert run(canary, "b", {"temperature": 30}) == "v1"
