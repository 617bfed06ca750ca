"""Rollout plans over the API (SPEC 10.1): validation, start, pause/resume, the step guard."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from deployments import services
from deployments.canary_config import GUIDE_STEPS
from deployments.models import Deployment, DeploymentEvent, RuleSet
from tests.concurrency import run_together

pytestmark = pytest.mark.django_db

PLAN = [{"traffic": 10}, {"pause": "approval"}, {"traffic": 50}, {"promote": True}]


def create(client: APIClient, ruleset: RuleSet, config: Any) -> Any:
    return client.post(
        "/api/v1/deployments",
        {"ruleset_id": str(ruleset.pk), "version": "v2.0.0", "canary_config": config},
        format="json",
    )


def started(ruleset: RuleSet, steps: Any = PLAN, **config: Any) -> Deployment:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        canary_config={"steps": steps, **config},
        actor="tests",
    )
    return services.deployment_start_canary(deployment_id=draft.pk, actor="tests")


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([], "steps"),
        ([{"traffic": 10}] * 21, "steps"),
        ("fast", "steps"),
        ({"traffic": 10}, "steps"),
        ([{"traffic": 10}, {"traffic": 101}], "steps[1]"),
        ([{"traffic": -1}], "steps[0]"),
        ([{"traffic": "10"}], "steps[0]"),
        ([{"traffic": True}], "steps[0]"),
        ([{"traffic": 10}, {"pause_minutes": 0}], "steps[1]"),
        ([{"traffic": 10}, {"pause_minutes": 10_081}], "steps[1]"),
        ([{"traffic": 10}, {"pause": "forever"}], "steps[1]"),
        ([{"traffic": 10}, {"promote": False}], "steps[1]"),
        ([{"promote": True}, {"traffic": 10}], "steps[0]"),
        ([{"traffic": 10, "pause_minutes": 5}], "steps[0]"),
        ([{}], "steps[0]"),
        ([{"rollout": 10}], "steps[0]"),
        (["traffic"], "steps[0]"),
    ],
)
def test_every_bad_step_is_a_400_naming_it(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment, steps: Any, field: str
) -> None:
    response = create(approver, ruleset, {"steps": steps})
    assert response.status_code == 400, response.content
    assert list(response.json()["canary_config"]) == [field]
    assert field in response.json()["detail"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"max_traffic_jump": 0}, "max_traffic_jump"),
        ({"max_traffic_jump": 101}, "max_traffic_jump"),
        ({"max_traffic_jump": 2.5}, "max_traffic_jump"),
        ({"metric_checks": {"name": "x"}}, "metric_checks"),
        ({"metric_checks": [{"name": "x", "query": "up"}] * 11}, "metric_checks"),
        ({"metric_checks": [{"name": "x", "query": "up"}]}, "metric_checks[0]"),
        ({"metric_checks": [{"name": "", "query": "up", "max": 1}]}, "metric_checks[0]"),
        ({"metric_checks": [{"name": "x", "query": "", "max": 1}]}, "metric_checks[0]"),
        ({"metric_checks": [{"name": "x", "query": "up", "max": "1"}]}, "metric_checks[0]"),
        ({"metric_checks": [{"name": "x", "query": "up", "min": 2, "max": 1}]}, "metric_checks[0]"),
        (
            {"metric_checks": [{"name": "x", "query": "up", "max": 1, "op": "<"}]},
            "metric_checks[0]",
        ),
        (
            {"metric_checks": [{"name": "x", "query": "up", "max": 1}] * 2},
            "metric_checks[1]",
        ),
    ],
)
@override_settings(CANARY_PROMETHEUS_URL="http://127.0.0.1:9")
def test_bad_guard_and_metric_checks_are_a_400_naming_the_field(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment, config: Any, field: str
) -> None:
    response = create(approver, ruleset, config)
    assert response.status_code == 400, response.content
    assert list(response.json()["canary_config"]) == [field]


@override_settings(CANARY_PROMETHEUS_URL="")
def test_metric_checks_without_prometheus_are_a_400(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    checks = [{"name": "orders", "query": "sum(orders)", "min": 1}]
    response = create(approver, ruleset, {"metric_checks": checks})
    assert response.status_code == 400, response.content
    assert list(response.json()["canary_config"]) == ["metric_checks"]
    assert "CANARY_PROMETHEUS_URL" in response.json()["detail"]


@override_settings(CANARY_PROMETHEUS_URL="http://127.0.0.1:9")
def test_metric_checks_are_stored(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    checks = [{"name": "orders", "query": 'orders{deployment="{deployment_id}"}', "min": 1}]
    response = create(approver, ruleset, {"metric_checks": checks})
    assert response.status_code == 201, response.content
    assert response.json()["canary_config"]["metric_checks"] == checks


def test_the_guide_is_stored_expanded(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    response = create(approver, ruleset, {"steps": "guide"})
    assert response.status_code == 201, response.content
    assert response.json()["canary_config"]["steps"] == [dict(s) for s in GUIDE_STEPS]
    assert response.json()["canary_config"]["max_traffic_jump"] == 50


def test_start_canary_begins_the_plan_with_consecutive_traffic_steps_at_once(
    approver: APIClient, viewer: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    steps = [{"traffic": 5}, {"traffic": 10}, {"pause_minutes": 30}, {"promote": True}]
    draft = services.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", canary_config={"steps": steps}, actor="tests"
    )
    response = approver.post(f"/api/v1/deployments/{draft.pk}/start-canary", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["traffic_percentage"] == 10
    plan = viewer.get(f"/api/v1/deployments/{draft.pk}/plan").json()
    assert plan["state"] == "running"
    assert plan["current_step"] == 2
    assert plan["steps"] == steps
    assert plan["next_step_at"] is not None
    assert [entry["step"] for entry in plan["history"]] == [0, 1, 2]
    event = DeploymentEvent.objects.get(deployment=draft, action="start_canary")
    assert event.payload["plan"] == {"applied_steps": [0, 1], "current_step": 2}


def test_a_canary_pct_other_than_the_first_traffic_step_is_a_400(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", canary_config={"steps": PLAN}, actor="tests"
    )
    url = f"/api/v1/deployments/{draft.pk}/start-canary"
    response = approver.post(url, {"canary_pct": 20}, format="json")
    assert response.status_code == 400, response.content
    assert "canary_pct" in response.json()
    assert approver.post(url, {"canary_pct": 10}, format="json").status_code == 200


def test_without_steps_the_plan_is_none(
    viewer: APIClient, approver: APIClient, canary_v2: Deployment
) -> None:
    plan = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/plan").json()
    assert plan["state"] == "none"
    assert plan["steps"] == []
    # Pausing a canary without a plan stops auto_progress; resuming lets it run again.
    url = f"/api/v1/deployments/{canary_v2.pk}"
    assert approver.post(f"{url}/pause", {"reason": "night"}, format="json").status_code == 200
    assert viewer.get(f"{url}/plan").json()["state"] == "paused"
    assert approver.post(f"{url}/resume", {}, format="json").status_code == 200
    assert viewer.get(f"{url}/plan").json()["state"] == "none"


def test_pause_and_resume_with_their_events_and_actors(
    approver: APIClient, viewer: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = started(ruleset)
    url = f"/api/v1/deployments/{canary.pk}"
    paused = approver.post(f"{url}/pause", {"reason": "incident review"}, format="json")
    assert paused.status_code == 200, paused.content
    assert paused.json()["state"] == "paused"
    # Wrong state: paused twice, resumed twice.
    again = approver.post(f"{url}/pause", {}, format="json")
    assert again.status_code == 409
    assert again.json()["plan_state"] == "paused"
    resumed = approver.post(f"{url}/resume", {}, format="json")
    assert resumed.status_code == 200, resumed.content
    assert resumed.json()["state"] == "running"
    assert approver.post(f"{url}/resume", {}, format="json").status_code == 409
    events = DeploymentEvent.objects.filter(deployment=canary, action__in=["pause", "resume"])
    assert [(e.action, e.actor) for e in events] == [
        ("pause", "approver-user"),
        ("resume", "approver-user"),
    ]
    assert events[0].payload["reason"] == "incident review"
    # Viewers may read the plan, not change it.
    assert viewer.get(f"{url}/plan").status_code == 200
    assert viewer.post(f"{url}/pause", {}, format="json").status_code == 403


def test_pause_and_resume_of_an_ended_deployment_are_a_409(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = started(ruleset)
    services.deployment_rollback(deployment_id=canary.pk, reason="bad", actor="tests")
    url = f"/api/v1/deployments/{canary.pk}"
    assert approver.post(f"{url}/pause", {}, format="json").status_code == 409
    assert approver.post(f"{url}/resume", {}, format="json").status_code == 409


def test_expected_status_on_pause_and_resume(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = started(ruleset)
    url = f"/api/v1/deployments/{canary.pk}"
    stale = approver.post(f"{url}/pause", {"expected_status": "active"}, format="json")
    assert stale.status_code == 409
    assert stale.json()["current_status"] == "canary"
    assert approver.post(f"{url}/pause", {"expected_status": "canary"}, format="json").status_code
    stale = approver.post(f"{url}/resume", {"expected_status": "draft"}, format="json")
    assert stale.status_code == 409
    ok = approver.post(f"{url}/resume", {"expected_status": "canary"}, format="json")
    assert ok.status_code == 200, ok.content
    bad = approver.post(f"{url}/resume", {"expected_status": "nonsense"}, format="json")
    assert bad.status_code == 400
    assert "expected_status" in bad.json()


def test_resume_completes_an_approval_step_recording_the_approver(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = started(ruleset)
    assert services.plan_wait_for_approval(deployment_id=canary.pk, step=1, actor="m", now=_now())
    url = f"/api/v1/deployments/{canary.pk}"
    response = approver.post(f"{url}/resume", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "running"
    assert response.json()["current_step"] == 2
    event = DeploymentEvent.objects.get(deployment=canary, action="resume")
    assert event.payload["approval"] is True
    assert event.payload["approved_by"] == "approver-user"


@pytest.mark.django_db(transaction=True)
def test_two_approvers_resuming_at_once_advance_one_step(
    client_for: Any, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = started(ruleset)
    assert services.plan_wait_for_approval(deployment_id=canary.pk, step=1, actor="m", now=_now())
    first, second = client_for("approver"), client_for("admin")
    url = f"/api/v1/deployments/{canary.pk}/resume"
    answers = run_together(
        lambda: first.post(url, {}, format="json"), lambda: second.post(url, {}, format="json")
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 409], [a.content for a in answers]
    plan = first.get(f"/api/v1/deployments/{canary.pk}/plan").json()
    assert plan["current_step"] == 2
    assert plan["state"] == "running"
    assert DeploymentEvent.objects.filter(deployment=canary, action="resume").count() == 1


def test_a_manual_jump_beyond_max_traffic_jump_needs_a_reason(
    approver: APIClient, canary_v2: Deployment
) -> None:
    url = f"/api/v1/deployments/{canary_v2.pk}/traffic"
    refused = approver.put(url, {"traffic_percentage": 100}, format="json")
    assert refused.status_code == 409, refused.content
    assert refused.json()["code"] == "traffic_jump"
    blank = approver.put(url, {"traffic_percentage": 100, "reason": "  "}, format="json")
    assert blank.status_code == 409
    assert approver.put(url, {"traffic_percentage": 60}, format="json").status_code == 200
    canary_v2.refresh_from_db()
    assert canary_v2.traffic_percentage == 60
    reasoned = approver.put(
        url, {"traffic_percentage": 100, "reason": "hotfix verified"}, format="json"
    )
    assert reasoned.status_code == 200, reasoned.content
    event = DeploymentEvent.objects.filter(deployment=canary_v2, action="set_traffic").last()
    assert event is not None
    assert event.payload["reason"] == "hotfix verified"


def _now() -> Any:
    from django.utils import timezone

    return timezone.now()


def test_pause_resume_and_plan_are_in_the_schema(approver: APIClient) -> None:
    schema = approver.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = {path.rstrip("/"): operations for path, operations in schema["paths"].items()}
    for suffix in ("pause", "resume"):
        operation = paths[f"/api/v1/deployments/{{id}}/{suffix}"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert "expected_status" in component["properties"], suffix
    assert "get" in paths["/api/v1/deployments/{id}/plan"]
