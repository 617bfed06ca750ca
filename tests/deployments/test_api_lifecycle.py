"""The guide's quick start, driven over HTTP exactly as a CI pipeline would."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, RuleSet
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES

pytestmark = pytest.mark.django_db


def create_ruleset(client: APIClient) -> str:
    response = client.post(
        "/api/v1/rulesets", {"name": "thermostat", "description": "Raise alerts"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "thermostat"
    return body["id"]


def create_version(client: APIClient, ruleset_id: str, version: str, rules: list) -> dict:
    response = client.post(
        f"/api/v1/rulesets/{ruleset_id}/versions",
        {"version": version, "rules": rules, "default": DEFAULT_OUTPUT, "changelog": version},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_quick_start_canary_to_promotion(approver: APIClient) -> None:
    ruleset_id = create_ruleset(approver)
    create_version(approver, ruleset_id, "v1.0.0", V1_RULES)
    v2 = create_version(approver, ruleset_id, "v2.0.0", V2_RULES)
    assert v2["rules"][1]["condition"] == 'input.zone in ["A", "B"]'

    # Initial release: promote v1 straight from draft.
    first = approver.post(
        "/api/v1/deployments", {"ruleset_id": ruleset_id, "version": "v1.0.0"}, format="json"
    ).json()
    assert first["status"] == "draft"
    released = approver.post(f"/api/v1/deployments/{first['deployment_id']}/promote")
    assert released.status_code == 200
    assert released.json()["status"] == "active"

    created = approver.post(
        "/api/v1/deployments",
        {
            "ruleset_id": ruleset_id,
            "version": "v2.0.0",
            "changelog": "threshold 25 -> 27",
            "canary_config": {
                "initial_traffic_percentage": 10,
                "increment": 10,
                "duration_minutes": 60,
            },
            "compensation_strategy": "rollback_only",
        },
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    deployment_id = body["deployment_id"]
    assert body["status"] == "draft"
    assert body["canary_config"]["error_threshold"] == 0.05
    assert body["created_by"] == "approver-user"

    started = approver.post(
        f"/api/v1/deployments/{deployment_id}/start-canary", {"canary_pct": 10}, format="json"
    )
    assert started.status_code == 200
    assert started.json()["status"] == "canary"
    assert started.json()["traffic_percentage"] == 10
    assert started.json()["baseline"] == first["deployment_id"]
    assert started.json()["baseline_version"] == "v1.0.0"

    raised = approver.put(
        f"/api/v1/deployments/{deployment_id}/traffic", {"traffic_percentage": 50}, format="json"
    )
    assert raised.status_code == 200
    assert raised.json()["traffic_percentage"] == 50

    promoted = approver.post(f"/api/v1/deployments/{deployment_id}/promote")
    assert promoted.status_code == 200
    assert promoted.json()["status"] == "active"
    assert promoted.json()["traffic_percentage"] == 100
    assert promoted.json()["promoted_at"] is not None

    old = approver.get(f"/api/v1/deployments/{first['deployment_id']}").json()
    assert old["status"] == "deprecated"

    history = approver.get(f"/api/v1/deployments/{deployment_id}/events").json()
    assert [e["action"] for e in history["results"]] == [
        "create",
        "start_canary",
        "set_traffic",
        "promote",
    ]
    assert history["results"][2]["payload"] == {"from_traffic": 10, "to_traffic": 50}
    assert all(e["actor"] == "approver-user" for e in history["results"])


def test_rollback_over_http(approver: APIClient, canary_v2: Deployment) -> None:
    response = approver.post(
        f"/api/v1/deployments/{canary_v2.pk}/rollback",
        {"reason": "Error Rate 8% (threshold 5%)", "apply_compensation": True},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "rolled_back"
    assert body["rollback_reason"] == "Error Rate 8% (threshold 5%)"
    assert body["allowed_actions"] == []


def test_invalid_transition_is_409_with_status_and_allowed_actions(
    approver: APIClient, active_v1: Deployment
) -> None:
    response = approver.put(
        f"/api/v1/deployments/{active_v1.pk}/traffic", {"traffic_percentage": 20}, format="json"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "invalid_transition"
    assert body["current_status"] == "active"
    assert body["allowed_actions"] == ["rollback", "deprecate"]
    assert "active" in body["detail"]


def test_start_canary_without_active_explains_initial_release(
    approver: APIClient, ruleset: RuleSet
) -> None:
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    response = approver.post(f"/api/v1/deployments/{draft.pk}/start-canary", {}, format="json")
    assert response.status_code == 409
    assert "promoted directly" in response.json()["detail"]


@pytest.mark.parametrize("path", ["", "/events", "/promote"])
def test_unknown_and_malformed_ids_are_json_404(approver: APIClient, path: str) -> None:
    for deployment_id in (uuid.uuid4(), "not-a-uuid"):
        url = f"/api/v1/deployments/{deployment_id}{path}"
        response = approver.post(url) if path == "/promote" else approver.get(url)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_trailing_slash_is_accepted(approver: APIClient, active_v1: Deployment) -> None:
    assert approver.get("/api/v1/deployments/").status_code == 200
    assert approver.get(f"/api/v1/deployments/{active_v1.pk}/").status_code == 200


def test_list_filters_and_pagination(
    approver: APIClient, ruleset: RuleSet, canary_v2: Deployment, active_v1: Deployment
) -> None:
    everything = approver.get("/api/v1/deployments").json()
    assert everything["count"] == 2
    assert [d["deployment_id"] for d in everything["results"]] == [
        str(canary_v2.pk),
        str(active_v1.pk),
    ]

    only_canary = approver.get("/api/v1/deployments", {"status": "canary"}).json()
    assert [d["deployment_id"] for d in only_canary["results"]] == [str(canary_v2.pk)]

    by_version = approver.get("/api/v1/deployments", {"version": "v1.0.0"}).json()
    assert [d["deployment_id"] for d in by_version["results"]] == [str(active_v1.pk)]

    by_ruleset = approver.get("/api/v1/deployments", {"ruleset_id": str(ruleset.pk)}).json()
    assert by_ruleset["count"] == 2
    other = approver.get("/api/v1/deployments", {"ruleset_id": str(uuid.uuid4())}).json()
    assert other["count"] == 0

    page = approver.get("/api/v1/deployments", {"page": 2, "page_size": 1}).json()
    assert page["count"] == 2
    assert [d["deployment_id"] for d in page["results"]] == [str(active_v1.pk)]


@pytest.mark.parametrize("query", [{"status": "bogus"}, {"ruleset_id": "not-a-uuid"}])
def test_bad_filters_are_400_naming_the_field(approver: APIClient, query: dict) -> None:
    response = approver.get("/api/v1/deployments", query)
    assert response.status_code == 400
    assert next(iter(query)) in response.json()


def test_list_query_count_stays_flat(approver: APIClient, ruleset: RuleSet) -> None:
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert approver.get("/api/v1/deployments").status_code == 200
        return len(queries)

    services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    few = count_queries()
    for _ in range(10):
        services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    assert count_queries() == few


def test_ruleset_endpoints(approver: APIClient, ruleset: RuleSet) -> None:
    listed = approver.get("/api/v1/rulesets").json()
    assert [r["name"] for r in listed["results"]] == ["thermostat"]
    one = approver.get(f"/api/v1/rulesets/{ruleset.pk}").json()
    assert one["id"] == str(ruleset.pk)
    versions = approver.get(f"/api/v1/rulesets/{ruleset.pk}/versions").json()
    assert [v["version"] for v in versions["results"]] == ["v2.0.0", "v1.0.0"]
    assert approver.get(f"/api/v1/rulesets/{uuid.uuid4()}").status_code == 404


def test_ruleset_test_endpoint(approver: APIClient, ruleset: RuleSet) -> None:
    url = f"/api/v1/rulesets/{ruleset.pk}/test"
    hot = approver.post(
        url, {"input": {"temperature": 28}, "expected_output": {"alert": "raise"}}, format="json"
    ).json()
    assert hot["passed"] is True
    assert hot["matched_rule"] == "hot"
    assert hot["output"] == {"alert": "raise"}
    assert hot["version"] == "v2.0.0"
    assert hot["latency_ms"] >= 0

    v1 = approver.post(
        url,
        {"input": {"temperature": 26}, "version": "v1.0.0", "expected_output": {"alert": "none"}},
        format="json",
    ).json()
    assert v1["passed"] is False
    assert v1["matched_rule"] == "hot"

    fallback = approver.post(url, {"input": {"temperature": 20, "zone": "C"}}, format="json").json()
    assert fallback["output"] == DEFAULT_OUTPUT
    assert fallback["matched_rule"] is None
    assert fallback["passed"] is True

    broken = approver.post(url, {"input": {"zone": "A"}}, format="json")
    assert broken.status_code == 200
    assert broken.json()["passed"] is False
    assert broken.json()["error"]["rule"] == "hot"


def test_schema_and_docs_are_served(client: object) -> None:
    schema = client.get("/api/schema/")  # type: ignore[attr-defined]
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in (
        "/api/v1/deployments/{id}/start-canary",
        "/api/v1/deployments/{id}/traffic",
        "/api/v1/deployments/{id}/rollback",
        "/api/v1/rulesets/{id}/versions",
    ):
        assert path in text
    docs = client.get("/api/docs/")  # type: ignore[attr-defined]
    assert docs.status_code == 200
