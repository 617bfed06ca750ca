"""Two approvers at once: promote and rollback race on one canary, with real threads."""

from __future__ import annotations

import pytest

from canary.errors import InvalidTransition
from deployments import services
from deployments.models import Deployment, DeploymentEvent
from tests.concurrency import run_together
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES

ROUNDS = 50


@pytest.mark.django_db(transaction=True)
def test_promote_and_rollback_race_has_one_winner() -> None:
    ruleset = services.ruleset_create(name="race", actor="t")
    for number in range(ROUNDS + 1):
        services.ruleset_version_create(
            ruleset=ruleset,
            version=f"v1.{number}.0",
            rules=V2_RULES if number % 2 else V1_RULES,
            default=DEFAULT_OUTPUT,
            actor="t",
        )
    first = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    services.deployment_promote(deployment_id=first.pk, actor="t")

    outcomes = {"promote": 0, "rollback": 0}
    for number in range(1, ROUNDS + 1):
        draft = services.deployment_create(
            ruleset_id=ruleset.pk, version=f"v1.{number}.0", actor="t"
        )
        services.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="t")

        promote_result, rollback_result = run_together(
            # Each approver acts on the canary they are looking at.
            lambda d=draft: services.deployment_promote(
                deployment_id=d.pk, actor="approver-1", expected_status="canary"
            ),
            lambda d=draft: services.deployment_rollback(
                deployment_id=d.pk, reason="race", actor="approver-2", expected_status="canary"
            ),
        )
        results = [promote_result, rollback_result]
        winners = [r for r in results if isinstance(r, Deployment)]
        losers = [r for r in results if isinstance(r, InvalidTransition)]
        assert len(winners) == 1, results
        assert len(losers) == 1, results

        final = Deployment.objects.get(pk=draft.pk)
        transition_events = DeploymentEvent.objects.filter(
            deployment=draft, action__in=["promote", "rollback"]
        )
        assert transition_events.count() == 1
        if final.status == "active":
            outcomes["promote"] += 1
            assert losers[0].current_status == "active"
            assert transition_events.get().actor == "approver-1"
        else:
            assert final.status == "rolled_back"
            outcomes["rollback"] += 1
            assert losers[0].current_status == "rolled_back"
            assert transition_events.get().actor == "approver-2"
        # The rule set always ends with exactly one active deployment and no canary.
        assert Deployment.objects.filter(ruleset=ruleset, status="active").count() == 1
        assert not Deployment.objects.filter(ruleset=ruleset, status="canary").exists()

    assert sum(outcomes.values()) == ROUNDS


@pytest.mark.django_db(transaction=True)
def test_two_start_canaries_of_one_ruleset_leave_one_canary() -> None:
    ruleset = services.ruleset_create(name="race-start", actor="t")
    for version in ("v1.0.0", "v2.0.0", "v3.0.0"):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=V1_RULES, default=None, actor="t"
        )
    first = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    services.deployment_promote(deployment_id=first.pk, actor="t")
    for _ in range(10):
        a = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
        b = services.deployment_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="t")
        results = run_together(
            lambda a=a: services.deployment_start_canary(deployment_id=a.pk, actor="t"),
            lambda b=b: services.deployment_start_canary(deployment_id=b.pk, actor="t"),
        )
        assert sum(isinstance(r, Deployment) for r in results) == 1, results
        assert Deployment.objects.filter(ruleset=ruleset, status="canary").count() == 1
        running = Deployment.objects.get(ruleset=ruleset, status="canary")
        services.deployment_rollback(deployment_id=running.pk, reason="next round", actor="t")
