"""``canary_config`` numbers over the API: bounded, finite, never a 201 that breaks later.

Bodies are written as raw JSON so that numbers arrive exactly as an attacker
sends them: ``1`` followed by 400 zeros is a JSON integer that Python parses
without loss, and ``1e400`` is a JSON number that parses to infinity.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from django.apps import apps
from rest_framework.test import APIClient

from deployments import services
from deployments.canary_config import FIELDS
from deployments.models import Deployment, DeploymentEvent, RuleSet

pytestmark = pytest.mark.django_db

HUGE_INTEGER = "1" + "0" * 400
NUMERIC_FIELDS = [name for name, field in FIELDS.items() if not isinstance(field.default, bool)]


def raw_post(client: APIClient, url: str, body: str, method: str = "post") -> Any:
    return client.generic(method.upper(), url, body, content_type="application/json")


def deployment_body(ruleset: RuleSet, field: str, literal: str) -> str:
    prefix = json.dumps({"ruleset_id": str(ruleset.pk), "version": "v2.0.0"})[:-1]
    return f'{prefix}, "canary_config": {{"{field}": {literal}}}}}'


@pytest.mark.parametrize("literal", [HUGE_INTEGER, f"-{HUGE_INTEGER}", "1e400", "-1e400"])
@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_create_refuses_huge_numbers_naming_the_field(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment, field: str, literal: str
) -> None:
    before = Deployment.objects.count()
    response = raw_post(approver, "/api/v1/deployments", deployment_body(ruleset, field, literal))
    assert response.status_code == 400, response.content
    assert list(response.json()["canary_config"]) == [field]
    assert Deployment.objects.count() == before


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_update_refuses_huge_numbers_naming_the_field(
    approver: APIClient, draft_v2: Deployment, field: str
) -> None:
    body = f'{{"canary_config": {{"{field}": {HUGE_INTEGER}}}}}'
    response = raw_post(approver, f"/api/v1/deployments/{draft_v2.pk}", body, method="patch")
    assert response.status_code == 400, response.content
    assert list(response.json()["canary_config"]) == [field]
    draft_v2.refresh_from_db()
    assert draft_v2.canary_config[field] == FIELDS[field].default


def test_the_largest_accepted_config_runs_a_canary(
    approver: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    config = {
        "duration_minutes": 10_080,
        "latency_multiplier": 100,
        "min_samples": 1_000_000,
        "failure_threshold": 10_000,
        "breaker_cooldown_seconds": 86_400,
    }
    created = approver.post(
        "/api/v1/deployments",
        {"ruleset_id": str(ruleset.pk), "version": "v2.0.0", "canary_config": config},
        format="json",
    )
    assert created.status_code == 201, created.content
    deployment_id = created.json()["deployment_id"]
    started = approver.post(
        f"/api/v1/deployments/{deployment_id}/start-canary", {"canary_pct": 100}, format="json"
    )
    assert started.status_code == 200
    executed = approver.post(
        f"/api/v1/rulesets/{ruleset.pk}/execute",
        {"input": {"temperature": 30, "zone": "C"}, "user_id": "u1"},
        format="json",
    )
    assert executed.status_code == 200, executed.content
    assert executed.json()["canary_version"] == "v2"
    assert approver.get(f"/api/v1/deployments/{deployment_id}/health").status_code == 200


def test_stored_configs_out_of_bounds_are_repaired_by_the_migration(
    approver: APIClient, ruleset: RuleSet, draft_v2: Deployment
) -> None:
    """A config accepted before the bounds existed must not keep breaking requests."""
    canary = services.deployment_start_canary(
        deployment_id=draft_v2.pk, canary_pct=100, actor="tests"
    )
    stored = {
        **canary.canary_config,
        "breaker_cooldown_seconds": 10**400,
        "failure_threshold": 10**30,
        "latency_multiplier": 10**400,
        "duration_minutes": 525_600,
    }
    Deployment.objects.filter(pk=canary.pk).update(canary_config=stored)

    migration = importlib.import_module("deployments.migrations.0004_bound_canary_config_numbers")
    migration.bound_stored_configs(apps, None)

    canary.refresh_from_db()
    assert canary.canary_config == {
        **stored,
        "breaker_cooldown_seconds": 86_400,
        "failure_threshold": 10_000,
        "latency_multiplier": 100.0,
        "duration_minutes": 10_080,
    }
    event = DeploymentEvent.objects.filter(deployment=canary, actor="system:migration").get()
    assert event.payload["bounded"]["breaker_cooldown_seconds"] == 86_400
    executed = approver.post(
        f"/api/v1/rulesets/{ruleset.pk}/execute",
        {"input": {"temperature": 30, "zone": "C"}, "user_id": "u1"},
        format="json",
    )
    assert executed.status_code == 200, executed.content
    # Running it again finds nothing to repair.
    migration.bound_stored_configs(apps, None)
    assert DeploymentEvent.objects.filter(actor="system:migration").count() == 1
