"""Test cases of a rule set (SPEC 10.2): kept, run, and run on every new version."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from deployments import services
from deployments.models import RuleSet, RuleSetVersion
from tests.samples import DEFAULT_OUTPUT, V2_RULES

pytestmark = pytest.mark.django_db

HOT = {
    "name": "hot raises",
    "input": {"temperature": 26, "zone": "C"},
    "expected_output": {"alert": "raise"},
}
COLD = {
    "name": "cold is quiet",
    "input": {"temperature": 20, "zone": "C"},
    "expected_output": {"alert": "none"},
}


def url(ruleset: RuleSet, tail: str = "") -> str:
    return f"/api/v1/rulesets/{ruleset.pk}/test-cases{tail}"


def test_cases_are_created_listed_run_and_deleted(
    ruleset: RuleSet, approver: APIClient, viewer: APIClient
) -> None:
    created = approver.post(url(ruleset), HOT, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "name", "input", "expected_output", "created_by", "created_at"}
    assert body["created_by"] == "approver-user"
    assert approver.post(url(ruleset), COLD, format="json").status_code == 201

    listed = viewer.get(url(ruleset)).json()["results"]
    assert [case["name"] for case in listed] == ["cold is quiet", "hot raises"]

    # v1: hot above 25 (both pass); v2: hot above 27 (26 is no longer hot).
    v1 = approver.post(url(ruleset, "/run"), {"version": "v1.0.0"}, format="json").json()
    assert (v1["version"], v1["passed"], v1["total"], v1["failed"]) == ("v1.0.0", True, 2, 0)
    v2 = approver.post(url(ruleset, "/run"), {"version": "v2.0.0"}, format="json").json()
    assert (v2["passed"], v2["failed"]) == (False, 1)
    failing = next(result for result in v2["results"] if not result["passed"])
    assert failing == {
        "case_id": body["id"],
        "name": "hot raises",
        "passed": False,
        "output": {"alert": "none"},
        "expected_output": {"alert": "raise"},
        "matched_rule": None,
        "error": None,
    }

    assert approver.delete(url(ruleset, f"/{body['id']}")).status_code == 204
    assert approver.delete(url(ruleset, f"/{body['id']}")).status_code == 404
    assert [case["name"] for case in viewer.get(url(ruleset)).json()["results"]] == [
        "cold is quiet"
    ]


def test_names_are_unique_and_inputs_have_execute_limits(
    ruleset: RuleSet, approver: APIClient, settings: object
) -> None:
    assert approver.post(url(ruleset), HOT, format="json").status_code == 201
    duplicate = approver.post(url(ruleset), HOT, format="json")
    assert duplicate.status_code == 400
    assert "name" in duplicate.json()
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    too_deep = approver.post(url(ruleset), {**COLD, "name": "deep", "input": deep}, format="json")
    assert too_deep.status_code == 400
    assert "input" in too_deep.json()
    unknown = approver.post(url(ruleset, "/run"), {"version": "v9.9.9"}, format="json")
    assert unknown.status_code == 400
    assert "version" in unknown.json()


def test_viewers_read_and_approvers_keep_them(
    ruleset: RuleSet, approver: APIClient, viewer: APIClient
) -> None:
    assert viewer.post(url(ruleset), HOT, format="json").status_code == 403
    case = approver.post(url(ruleset), HOT, format="json").json()
    assert viewer.delete(url(ruleset, f"/{case['id']}")).status_code == 403
    assert (
        viewer.post(url(ruleset, "/run"), {"version": "v1.0.0"}, format="json").status_code == 403
    )
    assert viewer.get(url(ruleset)).status_code == 200


def test_a_new_version_runs_the_cases_and_keeps_the_report(ruleset: RuleSet) -> None:
    services.ruleset_case_create(ruleset=ruleset, actor="tests", **HOT)
    services.ruleset_version_create(
        ruleset=ruleset, version="v3.0.0", rules=V2_RULES, default=DEFAULT_OUTPUT, actor="tests"
    )
    report = RuleSetVersion.objects.get(ruleset=ruleset, version="v3.0.0").test_report
    assert report["version"] == "v3.0.0"
    assert (report["passed"], report["total"], report["failed"]) == (False, 1, 1)
