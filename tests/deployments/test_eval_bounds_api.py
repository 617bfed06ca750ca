"""Bounded evaluation at the API: costly versions and oversized inputs are 400s."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from deployments.models import RuleSet, RuleSetVersion

pytestmark = pytest.mark.django_db

ISSUE_HOSTILE = "input.l.all(a, " + " && ".join(["!(-1 in input.l)"] * 200) + ")"


def deep_list(levels: int) -> list[Any]:
    document: list[Any] = []
    for _ in range(levels - 2):
        document = [document]
    return document


def post_version(client: APIClient, ruleset: RuleSet, rules: list[dict[str, Any]]) -> Any:
    return client.post(
        f"/api/v1/rulesets/{ruleset.pk}/versions",
        {"version": "v9.0.0", "rules": rules, "default": None},
        format="json",
    )


def test_costly_version_is_refused_naming_the_rule(approver: APIClient, ruleset: RuleSet) -> None:
    rules = [
        {"name": "fine", "condition": "input.a == 1", "output": 1},
        {"name": "scan", "condition": ISSUE_HOSTILE, "output": 2},
    ]

    response = post_version(approver, ruleset, rules)

    assert response.status_code == 400, response.content
    body = response.json()
    assert "too costly" in body["rules"]["1"]["condition"][0]
    assert "scan" in body["detail"]
    assert "50 ms" in body["detail"]
    assert not RuleSetVersion.objects.filter(version="v9.0.0").exists()


def test_typed_quadratic_version_is_accepted(approver: APIClient, ruleset: RuleSet) -> None:
    condition = "input.items.exists(i, string(i) in input.blocked)"
    rules = [{"name": "blocked", "condition": condition, "output": "no"}]

    assert post_version(approver, ruleset, rules).status_code == 201


@pytest.mark.parametrize(
    "document",
    [{"items": list(range(1001))}, {"s": "x" * 8193}, {"a": deep_list(33)}],
)
def test_ruleset_test_refuses_input_over_the_caps(
    approver: APIClient, ruleset: RuleSet, document: dict[str, Any]
) -> None:
    response = approver.post(
        f"/api/v1/rulesets/{ruleset.pk}/test", {"input": document}, format="json"
    )

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert body["input"][0].startswith("input")
    assert "input" in body["detail"]


def test_a_stored_hostile_version_answers_an_error_instead_of_hanging(
    approver: APIClient, client_for: Any, ruleset: RuleSet
) -> None:
    # Stored before the cost check (written directly, as an old database would hold it).
    RuleSetVersion.objects.create(
        ruleset=ruleset,
        version="v9.0.0",
        rules=[{"name": "scan", "condition": ISSUE_HOSTILE, "output": "hit"}],
        default="none",
    )
    url = f"/api/v1/rulesets/{ruleset.pk}/test"
    body = {"input": {"l": list(range(1000))}, "version": "v9.0.0"}

    response = approver.post(url, body, format="json")

    assert response.status_code == 200, response.content
    result = response.json()
    assert result["passed"] is False
    assert result["error"]["rule"] == "scan"
    assert "could exceed the 50 ms evaluation budget" in result["error"]["message"]
