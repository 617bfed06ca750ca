"""Every lifecycle call takes an optional ``expected_status``: a compare-and-set over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, DeploymentEvent

pytestmark = pytest.mark.django_db

# action -> (method, path suffix, body without expected_status, the status it acts on)
CALLS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "start-canary": ("post", "start-canary", {"canary_pct": 10}, "draft"),
    "traffic": ("put", "traffic", {"traffic_percentage": 50}, "canary"),
    "promote": ("post", "promote", {}, "canary"),
    "rollback": ("post", "rollback", {"reason": "bad"}, "canary"),
    "deprecate": ("post", "deprecate", {}, "active"),
}


@pytest.fixture
def target(request: pytest.FixtureRequest, draft_v2: Deployment) -> Callable[[str], Deployment]:
    def make(status: str) -> Deployment:
        if status == "draft":
            return draft_v2
        canary = services.deployment_start_canary(
            deployment_id=draft_v2.pk, canary_pct=10, actor="t"
        )
        if status == "canary":
            return canary
        return services.deployment_promote(deployment_id=canary.pk, actor="t")

    return make


def call(client: APIClient, deployment: Deployment, action: str, body: dict[str, Any]) -> Any:
    method, suffix, _, _ = CALLS[action]
    return getattr(client, method)(
        f"/api/v1/deployments/{deployment.pk}/{suffix}", body, format="json"
    )


def state(deployment: Deployment) -> tuple[Any, ...]:
    fresh = Deployment.objects.get(pk=deployment.pk)
    return (
        fresh.status,
        fresh.traffic_percentage,
        DeploymentEvent.objects.filter(deployment__ruleset=fresh.ruleset).count(),
    )


@pytest.mark.parametrize("action", list(CALLS))
def test_a_matching_expected_status_acts(
    action: str, approver: APIClient, target: Callable[[str], Deployment]
) -> None:
    _, _, body, acts_on = CALLS[action]
    deployment = target(acts_on)
    response = call(approver, deployment, action, {**body, "expected_status": acts_on})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("action", list(CALLS))
def test_another_expected_status_is_409_and_changes_nothing(
    action: str, approver: APIClient, target: Callable[[str], Deployment]
) -> None:
    _, _, body, acts_on = CALLS[action]
    deployment = target(acts_on)
    before = state(deployment)
    other = "rolled_back" if acts_on != "rolled_back" else "draft"
    response = call(approver, deployment, action, {**body, "expected_status": other})
    assert response.status_code == 409, response.content
    assert response.json()["current_status"] == acts_on
    assert state(deployment) == before


@pytest.mark.parametrize("value", ["live", "", 3, None, ["canary"]])
@pytest.mark.parametrize("action", list(CALLS))
def test_an_invalid_expected_status_is_400_naming_it(
    action: str, value: Any, approver: APIClient, target: Callable[[str], Deployment]
) -> None:
    _, _, body, acts_on = CALLS[action]
    deployment = target(acts_on)
    before = state(deployment)
    response = call(approver, deployment, action, {**body, "expected_status": value})
    assert response.status_code == 400, response.content
    assert "expected_status" in response.json()
    assert state(deployment) == before


def test_a_rollback_aimed_at_a_canary_does_not_roll_back_its_promotion(
    approver: APIClient, canary_v2: Deployment, active_v1: Deployment
) -> None:
    """The race of the issue: approver A promotes while approver B rolls back the canary."""
    services.deployment_promote(deployment_id=canary_v2.pk, actor="approver-a")
    response = approver.post(
        f"/api/v1/deployments/{canary_v2.pk}/rollback",
        {"reason": "error rate 8%", "expected_status": "canary"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["current_status"] == "active"
    canary_v2.refresh_from_db()
    active_v1.refresh_from_db()
    assert (canary_v2.status, active_v1.status) == ("active", "deprecated")


def test_expected_status_is_in_the_schema(approver: APIClient) -> None:
    schema = approver.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = {path.rstrip("/"): operations for path, operations in schema["paths"].items()}
    for action in CALLS:
        method, suffix, _, _ = CALLS[action]
        operation = paths[f"/api/v1/deployments/{{id}}/{suffix}"][method]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert "expected_status" in component["properties"], action
