"""Promote behind the governance gates (SPEC 9.3): enforced readiness and four eyes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from canary.errors import AlreadyApproved, Conflict
from deployments import services
from deployments.models import Deployment, DeploymentEvent, PromotionApproval
from tests.accounts import create_user
from tests.concurrency import run_together
from tests.monitoring.logs import add_logs
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES


def make_canary(name: str, *, traffic: int = 10, **config: Any) -> Deployment:
    ruleset = services.ruleset_create(name=name, actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    services.deployment_promote(deployment_id=first.pk, actor="t")
    draft = services.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", canary_config=config, actor="t"
    )
    return services.deployment_start_canary(deployment_id=draft.pk, canary_pct=traffic, actor="t")


def make_ready(canary: Deployment, *, minutes_at_half: int = 61) -> None:
    """Back-date the canary so it has run ``minutes_at_half`` at 50%, with healthy evidence."""
    now = timezone.now()
    started = now - timedelta(minutes=minutes_at_half + 30)
    DeploymentEvent.objects.filter(deployment=canary, action="start_canary").update(
        created_at=started
    )
    Deployment.objects.filter(pk=canary.pk).update(started_at=started)
    services.deployment_set_traffic(
        deployment_id=canary.pk,
        traffic_percentage=50,
        actor="t",
        now=now - timedelta(minutes=minutes_at_half),
    )
    canary.refresh_from_db()
    add_healthy_pairs(canary, at=now - timedelta(minutes=5))


def add_healthy_pairs(canary: Deployment, *, at: Any, each: int = 600) -> None:
    """``each`` executions per version, shadowed, none failing: enough inputs to show v2
    within the 1-point non-inferiority margin of v1 (SPEC 9.6 needs about 1,000)."""
    add_logs(canary, "v1", [1.0] * each, at=at, paired=True)
    add_logs(canary, "v2", [1.0] * each, at=at, paired=True)


def client(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


@pytest.fixture
def approvers(roles: None) -> tuple[APIClient, APIClient]:
    return client(create_user("alice", "approver")), client(create_user("bob", "approver"))


def promote_url(deployment: Deployment) -> str:
    return f"/api/v1/deployments/{deployment.pk}/promote"


def events(deployment: Deployment, action: str) -> list[DeploymentEvent]:
    return list(DeploymentEvent.objects.filter(deployment=deployment, action=action))


# --- enforce_readiness ---------------------------------------------------------------------


@pytest.mark.django_db
def test_unready_canary_is_refused_with_the_checks(approver: APIClient) -> None:
    canary = make_canary("enforced", enforce_readiness=True)
    response = approver.post(promote_url(canary), {}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "not_ready"
    checks = {check["name"]: check for check in body["checks"]}
    assert checks["time_at_traffic"]["passed"] is False
    assert checks["time_at_traffic"]["required"] is True
    assert checks["shadow_agreement"]["required"] is False
    canary.refresh_from_db()
    assert canary.status == "canary"
    assert events(canary, "promote") == []


@pytest.mark.django_db
def test_override_reason_promotes_and_is_recorded_with_the_failed_checks(
    approver: APIClient,
) -> None:
    canary = make_canary("override", enforce_readiness=True)
    response = approver.post(
        promote_url(canary), {"override_reason": "hotfix for incident 42"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "active"
    [event] = events(canary, "promote")
    assert event.payload["override_reason"] == "hotfix for incident 42"
    assert event.payload["ready"] is False
    failed = {check["name"] for check in event.payload["failed_checks"]}
    assert {"time_at_traffic", "min_samples"} <= failed
    assert all(check["passed"] is False for check in event.payload["failed_checks"])


@pytest.mark.django_db
def test_blank_override_reason_is_a_400(approver: APIClient) -> None:
    canary = make_canary("blank-override", enforce_readiness=True)
    response = approver.post(promote_url(canary), {"override_reason": "  "}, format="json")
    assert response.status_code == 400
    assert "override_reason" in response.json()


@pytest.mark.django_db
def test_ready_canary_promotes_without_override(approver: APIClient) -> None:
    canary = make_canary("ready", enforce_readiness=True)
    make_ready(canary, minutes_at_half=61)
    readiness = approver.get(f"/api/v1/deployments/{canary.pk}/readiness").json()
    assert readiness["ready"] is True, readiness
    response = approver.post(promote_url(canary), {}, format="json")
    assert response.status_code == 200, response.json()
    [event] = events(canary, "promote")
    assert event.payload["ready"] is True and "override_reason" not in event.payload


@pytest.mark.django_db
def test_without_enforcement_an_unready_canary_promotes(approver: APIClient) -> None:
    canary = make_canary("not-enforced")
    assert approver.post(promote_url(canary), {}, format="json").status_code == 200


# --- four eyes -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_two_approvers_promote_and_the_same_one_twice_is_refused(
    approvers: tuple[APIClient, APIClient], viewer: APIClient
) -> None:
    alice, bob = approvers
    canary = make_canary("four-eyes", required_approvals=2)

    first = alice.post(promote_url(canary), {}, format="json")
    assert first.status_code == 202
    assert first.json() | {"detail": ""} == {
        "deployment_id": str(canary.pk),
        "status": "canary",
        "approvals": 1,
        "required_approvals": 2,
        "approved_by": ["alice"],
        "detail": "",
    }
    [approve] = events(canary, "approve")
    assert (approve.actor, approve.from_status, approve.to_status) == ("alice", "canary", "canary")
    assert approve.payload["approved_by"] == ["alice"]
    readiness = viewer.get(f"/api/v1/deployments/{canary.pk}/readiness").json()
    assert readiness["approved_by"] == ["alice"]
    assert readiness["required_approvals"] == 2

    again = alice.post(promote_url(canary), {}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "already_approved"
    assert again.json()["approved_by"] == ["alice"]
    assert len(events(canary, "approve")) == 1

    done = bob.post(promote_url(canary), {}, format="json")
    assert done.status_code == 200, done.json()
    assert done.json()["status"] == "active"
    [promote] = events(canary, "promote")
    assert promote.actor == "bob"
    assert promote.payload["approved_by"] == ["alice", "bob"]
    assert not PromotionApproval.objects.filter(deployment=canary).exists()


@pytest.mark.django_db
def test_a_traffic_change_clears_pending_approvals(
    approvers: tuple[APIClient, APIClient],
) -> None:
    alice, bob = approvers
    canary = make_canary("cleared-by-traffic", required_approvals=2)
    assert alice.post(promote_url(canary), {}, format="json").status_code == 202
    traffic = alice.put(
        f"/api/v1/deployments/{canary.pk}/traffic", {"traffic_percentage": 60}, format="json"
    )
    assert traffic.status_code == 200
    [change] = events(canary, "set_traffic")
    assert change.payload["approvals_cleared"] == ["alice"]
    # Bob's approval is now the first of two again; alice may approve the new state.
    after = bob.post(promote_url(canary), {}, format="json")
    assert after.status_code == 202
    assert after.json()["approved_by"] == ["bob"]
    assert alice.post(promote_url(canary), {}, format="json").status_code == 200


@pytest.mark.django_db
def test_a_rollback_clears_pending_approvals(approvers: tuple[APIClient, APIClient]) -> None:
    alice, _ = approvers
    canary = make_canary("cleared-by-rollback", required_approvals=2)
    assert alice.post(promote_url(canary), {}, format="json").status_code == 202
    rollback = alice.post(
        f"/api/v1/deployments/{canary.pk}/rollback", {"reason": "changed my mind"}, format="json"
    )
    assert rollback.status_code == 200
    assert not PromotionApproval.objects.filter(deployment=canary).exists()
    assert events(canary, "rollback")[0].payload["approvals_cleared"] == ["alice"]


@pytest.mark.django_db
def test_a_system_actor_cannot_approve() -> None:
    canary = make_canary("system-actor", required_approvals=2)
    with pytest.raises(Conflict, match="needs 2 approvals"):
        services.deployment_promote(deployment_id=canary.pk, actor="system:monitor")
    assert not PromotionApproval.objects.exists()


@pytest.mark.django_db
def test_initial_release_needs_no_approvals(ruleset: Any, approver: APIClient) -> None:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v1.0.0",
        canary_config={"required_approvals": 3, "enforce_readiness": True},
        actor="t",
    )
    assert approver.post(promote_url(draft), {}, format="json").status_code == 200


@pytest.mark.django_db
def test_three_approvals_take_three_people(roles: None) -> None:
    canary = make_canary("three", required_approvals=3)
    users = [get_user_model().objects.create(username=name) for name in ("a", "b", "c")]
    outcomes = [
        services.deployment_promote_or_approve(deployment_id=canary.pk, actor=user)
        for user in users
    ]
    assert [(o.promoted, o.approvals) for o in outcomes] == [(False, 1), (False, 2), (True, 0)]
    with pytest.raises(Exception):  # noqa: B017 - the canary is active now: any refusal will do
        services.deployment_promote_or_approve(deployment_id=canary.pk, actor=users[0])


# --- races ---------------------------------------------------------------------------------


ROUNDS = 8


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_give_exactly_one_promote() -> None:
    alice = get_user_model().objects.create(username="alice")
    bob = get_user_model().objects.create(username="bob")
    for number in range(ROUNDS):
        canary = make_canary(f"race-{number}", required_approvals=2)
        results = run_together(
            *(
                lambda user=user, pk=canary.pk: services.deployment_promote_or_approve(
                    deployment_id=pk, actor=user, expected_status="canary"
                )
                for user in (alice, bob)
            )
        )
        assert sorted(result.promoted for result in results) == [False, True], results
        assert len(events(canary, "promote")) == 1
        assert len(events(canary, "approve")) == 1
        canary.refresh_from_db()
        assert canary.status == "active"
        assert Deployment.objects.filter(pk=canary.baseline_id, status="deprecated").exists()


@pytest.mark.django_db(transaction=True)
def test_the_same_approver_twice_at_once_is_one_approval() -> None:
    alice = get_user_model().objects.create(username="alice")
    for number in range(ROUNDS):
        canary = make_canary(f"twice-{number}", required_approvals=2)
        results = run_together(
            *(
                lambda pk=canary.pk: services.deployment_promote_or_approve(
                    deployment_id=pk, actor=alice, expected_status="canary"
                )
                for _ in range(2)
            )
        )
        pending = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, AlreadyApproved)]
        assert (len(pending), len(refused)) == (1, 1), results
        assert pending[0].promoted is False
        assert PromotionApproval.objects.filter(deployment=canary).count() == 1
        assert events(canary, "promote") == []
