"""The preflight checklist (SPEC 10.2) and its enforcement at start-canary."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, DeploymentEvent
from monitoring.models import Backtest

pytestmark = pytest.mark.django_db

HOT = {"name": "hot raises", "input": {"temperature": 26, "zone": "C"}}


def checks(client: APIClient, deployment: Deployment) -> dict[str, dict[str, Any]]:
    body = client.get(f"/api/v1/deployments/{deployment.pk}/preflight").json()
    return {check["name"]: check for check in body["checks"]} | {"ready": body["ready"]}


def enforce(deployment: Deployment, **extra: Any) -> None:
    services.deployment_update(
        deployment_id=deployment.pk,
        canary_config={"enforce_preflight": True, **extra},
        actor="tests",
    )


def done_backtest(deployment: Deployment, against: Deployment, **fields: Any) -> Backtest:
    return Backtest.objects.create(
        ruleset_id=deployment.ruleset_id,
        version_id=deployment.version_id,
        against_id=against.version_id,
        status="done",
        finished_at=timezone.now(),
        evaluated=10,
        state={"agreed": 8, "unexpected": 0},
        **fields,
    )


def test_the_checks_say_what_they_observed(
    draft_v2: Deployment, active_v1: Deployment, viewer: APIClient, settings: Any
) -> None:
    settings.SLACK_WEBHOOK_URL = ""
    settings.CANARY_NOTIFY_EMAIL = False
    found = checks(viewer, draft_v2)
    assert found["ready"] is True
    assert set(found) - {"ready"} == {"test_cases", "backtest", "notifications", "rule_cost"}
    for check in ("test_cases", "backtest", "notifications", "rule_cost"):
        assert set(found[check]) == {"name", "passed", "required", "observed", "detail"}
    assert found["test_cases"]["required"] is False  # no cases yet
    assert (found["backtest"]["passed"], found["backtest"]["required"]) == (False, False)
    assert found["notifications"]["passed"] is False
    assert found["rule_cost"]["passed"] is True
    assert found["rule_cost"]["observed"]["worst_case_units"] > 0

    # v2 gives "none" for 26: a case expecting "raise" fails it, and is now required.
    services.ruleset_case_create(
        ruleset=draft_v2.ruleset, expected_output={"alert": "raise"}, actor="t", **HOT
    )
    settings.SLACK_WEBHOOK_URL = "https://hooks.example.com/x"
    found = checks(viewer, draft_v2)
    assert found["ready"] is False
    assert (found["test_cases"]["passed"], found["test_cases"]["required"]) == (False, True)
    assert found["test_cases"]["observed"]["failing"] == ["hot raises"]
    assert found["notifications"]["passed"] is True


def test_require_backtest_wants_a_recent_one_without_unexpected_changes(
    draft_v2: Deployment, active_v1: Deployment, viewer: APIClient
) -> None:
    services.deployment_update(
        deployment_id=draft_v2.pk, canary_config={"require_backtest": True}, actor="t"
    )
    assert checks(viewer, draft_v2)["ready"] is False
    old = done_backtest(draft_v2, active_v1)
    Backtest.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(hours=25))
    assert checks(viewer, draft_v2)["backtest"]["passed"] is False
    surprising = done_backtest(draft_v2, active_v1, expect_changes="input.temperature > 25")
    Backtest.objects.filter(pk=surprising.pk).update(state={"agreed": 8, "unexpected": 2})
    found = checks(viewer, draft_v2)
    assert found["backtest"]["passed"] is False
    assert found["backtest"]["observed"]["unexpected"] == 2
    done_backtest(draft_v2, active_v1, expect_changes="input.temperature > 25")
    found = checks(viewer, draft_v2)
    assert (found["backtest"]["passed"], found["ready"]) == (True, True)


def test_enforced_preflight_refuses_to_start_unless_overridden(
    draft_v2: Deployment, active_v1: Deployment, approver: APIClient
) -> None:
    services.ruleset_case_create(
        ruleset=draft_v2.ruleset, expected_output={"alert": "raise"}, actor="t", **HOT
    )
    url = f"/api/v1/deployments/{draft_v2.pk}/start-canary"
    # Not enforced: the failing checklist does not stop the start.
    services.deployment_create(ruleset_id=draft_v2.ruleset_id, version="v2.0.0", actor="t")
    enforce(draft_v2)
    refused = approver.post(url, {"canary_pct": 10}, format="json")
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "not_ready"
    assert {check["name"] for check in body["checks"]} >= {"test_cases", "backtest"}
    assert Deployment.objects.get(pk=draft_v2.pk).status == "draft"
    blank = approver.post(url, {"canary_pct": 10, "override_reason": "  "}, format="json")
    assert blank.status_code == 400
    assert "override_reason" in blank.json()

    started = approver.post(
        url, {"canary_pct": 10, "override_reason": "hotfix, tested by hand"}, format="json"
    )
    assert started.status_code == 200, started.content
    event = DeploymentEvent.objects.get(deployment=draft_v2, action="start_canary")
    assert event.payload["override_reason"] == "hotfix, tested by hand"
    assert event.payload["preflight_ready"] is False
    assert [check["name"] for check in event.payload["failed_checks"]] == ["test_cases"]


def test_a_ready_draft_starts_under_enforcement(
    draft_v2: Deployment, active_v1: Deployment, approver: APIClient
) -> None:
    services.ruleset_case_create(
        ruleset=draft_v2.ruleset, expected_output={"alert": "none"}, actor="t", **HOT
    )
    enforce(draft_v2, require_backtest=True)
    done_backtest(draft_v2, active_v1)
    started = approver.post(
        f"/api/v1/deployments/{draft_v2.pk}/start-canary", {"canary_pct": 10}, format="json"
    )
    assert started.status_code == 200, started.content
    event = DeploymentEvent.objects.get(deployment=draft_v2, action="start_canary")
    assert event.payload["preflight_ready"] is True


def test_unknown_config_values_are_refused(draft_v2: Deployment, approver: APIClient) -> None:
    response = approver.patch(
        f"/api/v1/deployments/{draft_v2.pk}",
        {"canary_config": {"enforce_preflight": "yes"}},
        format="json",
    )
    assert response.status_code == 400
    assert "enforce_preflight" in str(response.json())


def test_a_webhook_hearing_of_the_rule_set_counts_as_a_notification_channel(
    viewer: APIClient, draft_v2: Deployment, settings: Any
) -> None:
    from monitoring.models import Webhook
    from monitoring.notifications.webhooks import webhook_create

    settings.SLACK_WEBHOOK_URL = ""
    settings.CANARY_NOTIFY_EMAIL = False
    webhook_create(name="elsewhere", url="http://127.0.0.1:9/a", events=["*"], ruleset_ids=[])
    Webhook.objects.update(ruleset_ids=["00000000-0000-0000-0000-000000000000"])
    assert checks(viewer, draft_v2)["notifications"]["passed"] is False

    webhook_create(name="ours", url="http://127.0.0.1:9/b", events=["deployment.rolled_back"])
    found = checks(viewer, draft_v2)["notifications"]
    assert (found["passed"], found["observed"]["webhooks"]) == (True, 1)
