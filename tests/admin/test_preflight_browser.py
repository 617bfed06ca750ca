"""The draft's page in a real browser: preflight checks, the latest backtest, Run backtest."""

from __future__ import annotations

from typing import Any

import pytest

from deployments import services
from deployments.models import Deployment
from monitoring.automation.backtests import backtest_run
from monitoring.models import Backtest, CapturedInput
from tests.admin.conftest import make_staff
from tests.admin.test_browser import deployment_page, log_in, page, screenshot, success_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

__all__ = ["page"]


def test_the_draft_page_shows_preflight_and_runs_a_backtest(
    live_server: Any, page: Any, roles: None, draft_v2: Deployment, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    services.ruleset_case_create(
        ruleset=draft_v2.ruleset,
        name="hot raises",
        input={"temperature": 26, "zone": "C"},
        expected_output={"alert": "raise"},
        actor="t",
    )
    for n, temperature in enumerate([20, 26, 27, 30, 31, 19]):
        CapturedInput.objects.create(
            ruleset_id=draft_v2.ruleset_id,
            input={"temperature": temperature, "zone": "A" if n % 2 else "C"},
            created_at=draft_v2.created_at,
        )
    make_staff("alice", "approver")
    base = live_server.url
    log_in(page, base, "alice")
    page.goto(deployment_page(base, draft_v2))
    checks = page.locator("#canary-preflight-checks")
    assert checks.locator("tr[data-check=test_cases]").get_attribute("data-passed") == "false"
    assert "not ready" in page.inner_text("#canary-preflight h2")
    assert page.is_visible("#canary-no-backtest")

    page.fill("#canary-run-backtest input[name=expect_changes]", "input.temperature > 25")
    with page.expect_navigation():
        page.click("#canary-run-backtest input[type=submit]")
    assert "Backtest queued" in success_message(page)
    backtest_run(backtest_id=Backtest.objects.get(version=draft_v2.version).pk)
    page.reload()
    assert page.is_visible("#canary-backtest-changes")
    assert page.locator("#canary-backtest-changes tbody tr").count() >= 1
    assert page.is_visible("#canary-backtest-unexpected")
    assert "Unexpected differences" in page.inner_text("#canary-preflight")
    page.locator("#canary-preflight").scroll_into_view_if_needed()
    screenshot(page, "admin-draft-preflight.png")
