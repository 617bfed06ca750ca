"""The rollout plan in the console without a browser: the home rows and the metric checks."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from deployments import services
from deployments.models import Deployment, RuleSet
from monitoring.models import MetricCheckRecord

pytestmark = pytest.mark.django_db


@override_settings(CANARY_PROMETHEUS_URL="http://127.0.0.1:9")
def test_home_rows_and_canary_page_show_the_plan_and_metric_checks(
    console: Callable[[str], Client], ruleset: RuleSet, active_v1: Deployment
) -> None:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        canary_config={
            "steps": "guide",
            "metric_checks": [{"name": "orders", "query": "sum(orders)", "min": 10}],
        },
        actor="tests",
    )
    canary = services.deployment_start_canary(deployment_id=draft.pk, actor="tests")
    MetricCheckRecord.objects.create(
        deployment=canary,
        checked_at=timezone.now(),
        results=[
            {
                "name": "orders",
                "query": "sum(orders)",
                "outcome": "pass",
                "value": 42.0,
                "detail": "42 is within bounds",
                "max": None,
                "min": 10,
            }
        ],
    )
    home = console("viewer").get("/admin/").content.decode()
    assert "plan step 2 of 7 (pause 30 min), running" in home
    page = console("viewer").get(f"/admin/deployments/deployment/{canary.pk}/change/")
    body = page.content.decode()
    assert 'id="canary-plan"' in body
    assert body.count('class="canary-plan-step canary-plan-') == 7
    assert re.search(r"(29 min \d+ s|30 min) left", body)
    assert "42.0" in body and "≥ 10" in body
    assert 'data-action="pause"' not in body  # a viewer
    approver_page = console("approver").get(f"/admin/deployments/deployment/{canary.pk}/change/")
    assert 'data-action="pause"' in approver_page.content.decode()
