"""Bad input on every write endpoint: a 400 naming the field, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, DeploymentEvent, RuleSet, RuleSetVersion

pytestmark = pytest.mark.django_db

NOT_A_UUID = "1234-not-a-uuid"


def snapshot() -> tuple[Any, ...]:
    return (
        RuleSet.objects.count(),
        RuleSetVersion.objects.count(),
        Deployment.objects.count(),
        DeploymentEvent.objects.count(),
        tuple(
            Deployment.objects.order_by("pk").values_list(
                "status", "traffic_percentage", "changelog"
            )
        ),
    )


@pytest.fixture
def unchanged(canary_v2: Deployment) -> Iterator[None]:
    before = snapshot()
    yield
    assert snapshot() == before, "a refused request wrote data"


def assert_400_naming(response: Any, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert field in body, body
    assert field in body["detail"]


RULESET_CASES = [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": 12}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "thermostat"}, "name"),  # duplicate
    ({"name": "ok", "description": ["list"]}, "description"),
    ({"name": "ok", "owner": "me"}, "owner"),
]


@pytest.mark.parametrize(("body", "field"), RULESET_CASES)
def test_create_ruleset(approver: APIClient, unchanged: None, body: dict, field: str) -> None:
    assert_400_naming(approver.post("/api/v1/rulesets", body, format="json"), field)


VERSION_CASES = [
    ({"rules": []}, "version"),
    ({"version": "two", "rules": []}, "version"),
    ({"version": 2, "rules": []}, "version"),
    ({"version": "v1.0.0", "rules": []}, "version"),  # duplicate
    ({"version": "v9.0.0"}, "rules"),
    ({"version": "v9.0.0", "rules": "x > 1"}, "rules"),
    (
        {"version": "v9.0.0", "rules": [{"name": "a", "condition": "input.x >", "output": 1}]},
        "rules",
    ),
    ({"version": "v9.0.0", "rules": [{"name": "a", "output": 1}]}, "rules"),
    ({"version": "v9.0.0", "rules": [], "changelog": "x" * 10_001}, "changelog"),
    ({"version": "v9.0.0", "rules": [], "owner": "me"}, "owner"),
]


@pytest.mark.parametrize(("body", "field"), VERSION_CASES)
def test_create_version(
    approver: APIClient, unchanged: None, ruleset: RuleSet, body: dict, field: str
) -> None:
    response = approver.post(f"/api/v1/rulesets/{ruleset.pk}/versions", body, format="json")
    assert_400_naming(response, field)


def test_syntax_error_names_the_rule_and_position(approver: APIClient, ruleset: RuleSet) -> None:
    rules = [
        {"name": "fine", "condition": "input.a == 1", "output": 1},
        {"name": "broken", "condition": "input.temperature >> 3", "output": 2},
    ]
    response = approver.post(
        f"/api/v1/rulesets/{ruleset.pk}/versions",
        {"version": "v9.0.0", "rules": rules},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert "condition" in body["rules"]["1"]
    assert "broken" in body["detail"]
    assert "1:" in body["detail"]  # line:col
    assert not RuleSetVersion.objects.filter(version="v9.0.0").exists()


TEST_CASES = [
    ({}, "input"),
    ({"input": [1, 2]}, "input"),
    ({"input": {}, "version": "v7.0.0"}, "version"),
    ({"input": {}, "extra": 1}, "extra"),
]


@pytest.mark.parametrize(("body", "field"), TEST_CASES)
def test_ruleset_test(approver: APIClient, ruleset: RuleSet, body: dict, field: str) -> None:
    assert_400_naming(
        approver.post(f"/api/v1/rulesets/{ruleset.pk}/test", body, format="json"), field
    )


def deployment_cases(ruleset_id: str) -> list[tuple[dict, str]]:
    ok = {"ruleset_id": ruleset_id, "version": "v2.0.0"}
    return [
        ({"version": "v2.0.0"}, "ruleset_id"),
        ({"ruleset_id": NOT_A_UUID, "version": "v2.0.0"}, "ruleset_id"),
        ({"ruleset_id": "5b6c1f5e-0000-4000-8000-000000000000", "version": "v2.0.0"}, "ruleset_id"),
        ({"ruleset_id": ruleset_id}, "version"),
        ({**ok, "version": "v8.0.0"}, "version"),
        ({**ok, "version": 2}, "version"),
        ({**ok, "changelog": "x" * 10_001}, "changelog"),
        ({**ok, "canary_config": {"error_threshold": 1.5}}, "canary_config"),
        ({**ok, "canary_config": {"initial_traffic_percentage": 0}}, "canary_config"),
        ({**ok, "canary_config": {"latency_multiplier": 1}}, "canary_config"),
        ({**ok, "canary_config": {"min_samples": "many"}}, "canary_config"),
        ({**ok, "canary_config": {"turbo": True}}, "canary_config"),
        ({**ok, "canary_config": [1]}, "canary_config"),
        ({**ok, "compensation_strategy": "pray"}, "compensation_strategy"),
        ({**ok, "status": "active"}, "status"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_create_deployment(
    approver: APIClient, unchanged: None, ruleset: RuleSet, case: int
) -> None:
    body, field = deployment_cases(str(ruleset.pk))[case]
    assert_400_naming(approver.post("/api/v1/deployments", body, format="json"), field)


def test_config_error_names_the_inner_field(approver: APIClient, ruleset: RuleSet) -> None:
    response = approver.post(
        "/api/v1/deployments",
        {
            "ruleset_id": str(ruleset.pk),
            "version": "v2.0.0",
            "canary_config": {"error_threshold": 2},
        },
        format="json",
    )
    assert response.json()["canary_config"] == {"error_threshold": ["Must be between 0 and 1."]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"canary_config": {"increment": 0}}, "canary_config"),
        ({"version": "v0.0.1"}, "version"),
        ({"compensation_strategy": None}, "compensation_strategy"),
        ({"status": "active"}, "status"),
        ({"traffic_percentage": 50}, "traffic_percentage"),
    ],
)
def test_update_draft(
    approver: APIClient, draft_v2_again: Deployment, unchanged: None, body: dict, field: str
) -> None:
    response = approver.patch(f"/api/v1/deployments/{draft_v2_again.pk}", body, format="json")
    assert_400_naming(response, field)


@pytest.fixture
def draft_v2_again(ruleset: RuleSet, canary_v2: Deployment) -> Deployment:
    return services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"canary_pct": -1}, "canary_pct"),
        ({"canary_pct": 101}, "canary_pct"),
        ({"canary_pct": "ten"}, "canary_pct"),
        ({"canary_target_filter": {"teams": ["a"]}}, "canary_target_filter"),
        ({"canary_target_filter": {"user_ids": "u1"}}, "canary_target_filter"),
        ({"canary_target_filter": {"user_ids": [1, 2]}}, "canary_target_filter"),
        ({"canary_target_filter": {"user_ids": ["x" * 201]}}, "canary_target_filter"),
        ({"canary_target_filter": "everyone"}, "canary_target_filter"),
        ({"percentage": 10}, "percentage"),
    ],
)
def test_start_canary(
    approver: APIClient, draft_v2_again: Deployment, unchanged: None, body: dict, field: str
) -> None:
    response = approver.post(
        f"/api/v1/deployments/{draft_v2_again.pk}/start-canary", body, format="json"
    )
    assert_400_naming(response, field)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"traffic_percentage": 101},
        {"traffic_percentage": -1},
        {"traffic_percentage": "x"},
        {"traffic_percentage": None},
        {"traffic_percentage": 10.5},
        {"traffic_percentage": True},
    ],
)
def test_traffic(approver: APIClient, unchanged: None, canary_v2: Deployment, body: dict) -> None:
    response = approver.put(f"/api/v1/deployments/{canary_v2.pk}/traffic", body, format="json")
    assert_400_naming(response, "traffic_percentage")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": None}, "reason"),
        ({"reason": "x" * 2001}, "reason"),
        ({"reason": "ok", "apply_compensation": "maybe"}, "apply_compensation"),
        ({"reason": "ok", "force": True}, "force"),
    ],
)
def test_rollback(
    approver: APIClient, unchanged: None, canary_v2: Deployment, body: dict, field: str
) -> None:
    response = approver.post(f"/api/v1/deployments/{canary_v2.pk}/rollback", body, format="json")
    assert_400_naming(response, field)


def test_malformed_json_is_400(approver: APIClient, unchanged: None) -> None:
    response = approver.generic(
        "POST", "/api/v1/deployments", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_body_that_is_not_an_object_is_400(approver: APIClient, unchanged: None) -> None:
    response = approver.post("/api/v1/deployments", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
