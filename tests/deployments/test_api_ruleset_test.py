"""``POST /rulesets/{id}/test``: Approver and up, with execute's input size limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from deployments.models import RuleSet

pytestmark = pytest.mark.django_db

LIMIT = 2048


@pytest.fixture(autouse=True)
def small_limit(settings: Any) -> None:
    settings.CANARY_MAX_INPUT_BYTES = LIMIT


def url(ruleset: RuleSet) -> str:
    return f"/api/v1/rulesets/{ruleset.pk}/test"


@pytest.mark.parametrize(("role", "expected"), [("viewer", 403), ("approver", 200), ("admin", 200)])
def test_approver_and_up_may_test(
    role: str, expected: int, ruleset: RuleSet, client_for: Callable[[str | None], APIClient]
) -> None:
    response = client_for(role).post(
        url(ruleset), {"input": {"temperature": 30}, "version": "v1.0.0"}, format="json"
    )
    assert response.status_code == expected, response.content
    if expected == 200:
        assert response.json()["matched_rule"] == "hot"
    else:
        assert response.json()["code"] == "permission_denied"


def test_a_body_over_the_limit_is_a_400_naming_input(ruleset: RuleSet, approver: APIClient) -> None:
    body = {"input": {"items": ["x" * 100] * (LIMIT // 100)}, "version": "v1.0.0"}
    assert len(json.dumps(body)) > LIMIT
    response = approver.post(url(ruleset), body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "input" in response.json()


def test_the_declared_length_is_refused_before_the_body_is_read(
    ruleset: RuleSet, approver: APIClient
) -> None:
    # The body is tiny but claims to be large: reading it would fail, so a 400
    # proves the length was checked first.
    response = approver.generic(
        "POST",
        url(ruleset),
        json.dumps({"input": {}}),
        content_type="application/json",
        CONTENT_LENGTH=str(LIMIT + 1),
    )
    assert response.status_code == 400
    assert "input" in response.json()


def test_a_body_within_the_limit_is_evaluated(ruleset: RuleSet, approver: APIClient) -> None:
    response = approver.post(
        url(ruleset),
        {"input": {"temperature": 20, "pad": "x" * 1000}, "version": "v1.0.0"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["output"] == {"alert": "none"}


def test_an_integer_outside_64_bits_is_a_400_naming_its_path(
    ruleset: RuleSet, approver: APIClient
) -> None:
    response = approver.post(
        url(ruleset), {"input": {"temperature": 2**64}, "version": "v1.0.0"}, format="json"
    )
    assert response.status_code == 400, response.content
    message = (
        "input.temperature: integer 18446744073709551616 is outside the 64-bit range "
        "CEL evaluates exactly"
    )
    assert response.json() == {"input": [message], "detail": f"input: {message}", "code": "invalid"}
