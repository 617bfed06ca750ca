"""The console's test cases, backtests and the draft's preflight panel (SPEC 10.2)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from deployments import services
from deployments.models import Deployment, RuleSet, RuleSetTestCase, RuleSetVersion
from monitoring.automation.backtests import backtest_run
from monitoring.models import Backtest, CapturedInput
from tests.samples import DEFAULT_OUTPUT, V2_RULES

pytestmark = pytest.mark.django_db


def test_approvers_keep_test_cases_and_versions_show_their_report(
    ruleset: RuleSet, console: Callable[[str], Client]
) -> None:
    approver = console("approver")
    page = reverse("admin:deployments_ruleset_change", args=[ruleset.pk])
    assert "canary-add-test-case" in approver.get(page).content.decode()
    assert "canary-add-test-case" not in console("viewer").get(page).content.decode()
    add = reverse("admin:deployments_ruleset_add_test_case", args=[ruleset.pk])
    approver.post(
        add,
        {
            "name": "hot",
            "input": '{"temperature": 26, "zone": "C"}',
            "expected_output": '{"alert": "raise"}',
        },
    )
    case = RuleSetTestCase.objects.get(ruleset=ruleset, name="hot")
    assert console("viewer").post(add, {"name": "x", "input": "{}"}).status_code == 403
    assert "hot" in approver.get(page).content.decode()

    services.ruleset_version_create(
        ruleset=ruleset, version="v3.0.0", rules=V2_RULES, default=DEFAULT_OUTPUT, actor="t"
    )
    version = RuleSetVersion.objects.get(ruleset=ruleset, version="v3.0.0")
    body = approver.get(
        reverse("admin:deployments_rulesetversion_change", args=[version.pk])
    ).content.decode()
    assert "0 of 1 passed" in body

    delete = reverse("admin:deployments_ruleset_delete_test_case", args=[ruleset.pk, case.pk])
    approver.post(delete)
    assert not RuleSetTestCase.objects.filter(pk=case.pk).exists()


def test_the_draft_page_shows_preflight_and_runs_a_backtest(
    draft_v2: Deployment, console: Callable[[str], Client]
) -> None:
    CapturedInput.objects.create(
        ruleset_id=draft_v2.ruleset_id,
        input={"temperature": 26, "zone": "C"},
        created_at=draft_v2.created_at,
    )
    approver = console("approver")
    page = reverse("admin:deployments_deployment_change", args=[draft_v2.pk])
    body = approver.get(page).content.decode()
    assert 'id="canary-preflight"' in body
    assert 'id="canary-run-backtest"' in body
    assert 'id="canary-no-backtest"' in body
    viewer_body = console("viewer").get(page).content.decode()
    assert 'id="canary-preflight"' in viewer_body
    assert 'id="canary-run-backtest"' not in viewer_body

    run = reverse("admin:monitoring_backtest_run_for", args=[draft_v2.pk])
    assert console("viewer").post(run, {"limit": 10}).status_code == 403
    response = approver.post(run, {"limit": 10, "expect_changes": "input.temperature > 30"})
    assert response.status_code == 302
    backtest = Backtest.objects.get(version=draft_v2.version)
    backtest_run(backtest_id=backtest.pk)
    body = approver.get(page).content.decode()
    assert 'id="canary-backtest-changes"' in body
    assert 'id="canary-backtest-unexpected"' in body
    report = approver.get(reverse("admin:monitoring_backtest_change", args=[backtest.pk]))
    assert "Unexpected differences: 1" in report.content.decode()


def test_a_backtest_is_created_from_its_own_admin_page(
    draft_v2: Deployment, console: Callable[[str], Client]
) -> None:
    approver = console("approver")
    add = reverse("admin:monitoring_backtest_add")
    assert approver.get(add).status_code == 200
    refused = approver.post(
        add,
        {"ruleset": draft_v2.ruleset_id, "version": "v2.0.0", "limit": 5, "expect_changes": "("},
    )
    assert refused.status_code == 200 and not Backtest.objects.exists()
    created = approver.post(add, {"ruleset": draft_v2.ruleset_id, "version": "v2.0.0", "limit": 5})
    assert created.status_code == 302
    assert Backtest.objects.get().limit == 5
    assert console("viewer").get(add).status_code == 403
