# ruff: noqa: F811 - each test takes the imported Chromium ``page`` fixture by name
"""The console an on-call approver can trust, in Chromium (issue 23's findings).

Each test drives Debian's Chromium through Playwright (fixtures in ``test_browser``)
and writes the screenshot docs/admin.md links under ``test-artifacts/``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from deployments import services
from deployments.models import Deployment
from monitoring.automation.monitor import monitor_run
from tests.admin.conftest import make_staff
from tests.admin.test_browser import (
    deployment_page,
    fits_the_window,
    log_in,
    page,  # noqa: F401 (the Chromium fixture)
    regressing,
    screenshot,
    screenshot_region,
)
from tests.monitoring.logs import add_logs
from tests.monitoring.test_breaker_integration import make_canary

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROW = "#canary-running tr.canary-running-row"


def regress(canary: Deployment, at: Any) -> None:
    """v2 fails 8% of inputs on which v1 succeeds: 80 against none, over 1,000 pairs."""
    add_logs(canary, "v2", [1.0] * 100, errors=80, at=at, paired=True)
    add_logs(canary, "v1", [1.0] * 900, at=at, paired=True)


def held_canary(name: str) -> Deployment:
    """Finding 1: a regression the monitor found 20 minutes ago, its traffic stopped since
    (every log older than the 5- and 10-minute windows), automatic rollback off."""
    canary = make_canary(name, traffic=10, auto_rollback=False)
    found_at = timezone.now() - timedelta(minutes=20)
    Deployment.objects.filter(pk=canary.pk).update(started_at=found_at - timedelta(minutes=30))
    regress(canary, found_at - timedelta(minutes=1))
    monitor_run(now=found_at)
    return Deployment.objects.select_related("baseline", "version").get(pk=canary.pk)


def test_a_regressing_canary_stays_red_after_its_traffic_stops(
    live_server: Any, page: Any, roles: None
):
    canary = held_canary("held-at-night")
    make_staff("nora", "approver")
    log_in(page, live_server.url, "nora")
    page.goto(deployment_page(live_server.url, canary))
    verdict = page.locator("#canary-verdict")
    assert verdict.get_attribute("data-tone") == "error"
    assert verdict.get_attribute("data-recommendation") == "rollback"
    text = verdict.inner_text()
    assert text.startswith("Roll back:")
    assert "held until someone rolls back or dismisses it" in text
    assert "last request 2" in text and "min ago" in text  # the age of the newest evidence
    # The verdict's action is the first button, red; promote is neither first nor green.
    first = page.locator("#canary-actions a.canary-button").first
    assert first.get_attribute("data-action") == "rollback"
    assert "canary-button-danger" in (first.get_attribute("class") or "")
    assert page.locator("a.canary-button-primary[data-action='promote']").count() == 0
    screenshot_region(page, "console-held-regression.png", "#header", "#canary-measurements")
    page.goto(f"{live_server.url}/admin/")
    assert page.locator(ROW).first.get_attribute("data-recommendation") == "rollback"
    assert "canary-row-error" in (page.locator(ROW).first.get_attribute("class") or "")


def test_home_lists_the_canaries_worst_first_each_with_its_action(
    live_server: Any, page: Any, roles: None
):
    make_canary("alpha-quiet", traffic=10)  # no request yet: collecting
    make_canary("bravo-dark", traffic=0)  # a dark launch: collecting
    regressing_one = make_canary("zulu-failing", traffic=10, auto_rollback=False)
    regressing(regressing_one)
    make_staff("omar", "approver")
    log_in(page, live_server.url, "omar")
    page.goto(f"{live_server.url}/admin/")
    rows = page.locator(ROW)
    assert rows.count() == 3
    order = [rows.nth(i).get_attribute("data-ruleset") for i in range(3)]
    assert order[0] == "zulu-failing"  # roll back first, although last alphabetically
    assert sorted(order[1:]) == ["alpha-quiet", "bravo-dark"]
    assert rows.first.locator("a.canary-row-action").inner_text() == "Roll back"
    assert "collecting" in rows.nth(1).inner_text()
    assert fits_the_window(page)
    # Nothing runs under the "Recent actions" column.
    table = page.locator("#canary-running table").bounding_box()
    assert table["x"] + table["width"] <= page.locator("#content-related").bounding_box()["x"]
    screenshot(page, "console-home-by-severity.png")


def test_one_click_rollback_from_home_with_the_reason_filled_in(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    regressing(canary_v2)
    make_staff("rita", "approver")
    log_in(page, live_server.url, "rita")
    page.goto(f"{live_server.url}/admin/")
    page.click(f"{ROW} a.canary-row-action")
    page.wait_for_selector("textarea[name=reason]")
    # The reason is the verdict's, and the cursor is in it: one click, then confirm.
    assert page.evaluate("document.activeElement.name") == "reason"
    reason = page.input_value("textarea[name=reason]")
    assert reason.startswith("Rollback verdict for v2.0.0:") and "5.00%" in reason
    screenshot(page, "console-one-click-rollback.png")
    with page.expect_navigation():
        page.click("input[name=confirm]")
    assert "Rolled back v2.0.0" in page.inner_text("ul.messagelist li.success")
    rolled = Deployment.objects.get(pk=canary_v2.pk)
    assert rolled.status == "rolled_back" and rolled.rollback_reason == reason


def test_no_green_promote_while_a_required_check_fails(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [8.0 + (i % 5) for i in range(300)], errors=3, paired=True)
    add_logs(
        canary, "v2", [8.0 + (i % 5) for i in range(300)], errors=3, paired=True, shared_errors=3
    )
    make_staff("pia", "approver")
    log_in(page, live_server.url, "pia")
    page.goto(deployment_page(live_server.url, canary_v2))
    verdict = page.locator("#canary-verdict")
    assert verdict.get_attribute("data-recommendation") == "promote"  # the evidence alone
    assert verdict.get_attribute("data-tone") == "warning"  # but a required check fails
    assert verdict.inner_text().startswith("Wait: 1 of 6 readiness checks pending")
    checklist = page.locator("#canary-checklist tr[data-check='time at traffic']")
    assert "pending" in checklist.inner_text() and "at least 60 minutes" in checklist.inner_text()
    assert page.locator(".canary-button-primary[data-action='promote']").count() == 0
    promote = page.locator("a.canary-button[data-action='promote']")
    assert promote.inner_text() == "Promote to 100%"
    first = page.locator("#canary-actions a.canary-button").first
    assert first.get_attribute("data-action") == "traffic"
    assert first.inner_text() == "Raise to 20%"  # promote means the next step
    screenshot_region(page, "console-wait-not-green.png", "#header", "#canary-measurements")
    # Promote to 100% says what it skips.
    promote.click()
    page.wait_for_selector("#canary-consequence")
    assert "skips the steps 20%, 30%, 40%" in page.inner_text("#canary-consequence")


def test_a_stale_page_disables_its_actions_in_place(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment, settings: Any
):
    settings.CANARY_CONSOLE_REFRESH_SECONDS = 1
    make_staff("sam", "approver")
    log_in(page, live_server.url, "sam")
    page.goto(deployment_page(live_server.url, canary_v2))
    stale_rollback = page.get_attribute("a.canary-button[data-action='rollback']", "href")
    page.evaluate("window.canaryNotReloaded = true")
    services.deployment_set_traffic(deployment_id=canary_v2.pk, traffic_percentage=30, actor="t")
    page.wait_for_selector("#canary-actions[data-stale='1']")
    assert page.evaluate("window.canaryNotReloaded") is True
    state = page.inner_text("#canary-actions-state")
    assert state.startswith("changed: now canary at 30% traffic") and "Reload" in state
    buttons = page.locator("#canary-actions a.canary-button")
    for i in range(buttons.count()):
        assert buttons.nth(i).get_attribute("aria-disabled") == "true"
        assert buttons.nth(i).get_attribute("href") is None
    screenshot_region(page, "console-stale-actions.png", "#header", "#canary-actions")
    # A confirmation opened from the stale page's link refuses and says why.
    page.goto(f"{live_server.url}{stale_rollback}")
    assert "changed since your page loaded" in page.inner_text("ul.messagelist li.warning")
    assert page.locator("textarea[name=reason]").count() == 0


def test_pages_fit_1280_px_and_the_verdicts_action_is_three_tabs_away(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    regressing(canary_v2)
    make_staff("tess", "approver")
    base = live_server.url
    log_in(page, base, "tess")
    assert page.viewport_size["width"] == 1280
    for path in (
        "/admin/",
        "/admin/deployments/deployment/",
        "/admin/monitoring/executionlog/",
        f"/admin/deployments/deployment/{canary_v2.pk}/change/",
    ):
        page.goto(f"{base}{path}")
        assert fits_the_window(page), path
    assert page.inner_text("#site-name") == "Canary"
    # Keyboard: Tab, Tab reaches "Skip to actions"; Enter lands on the verdict's action.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to actions"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.dataset.action") == "rollback"
    outline = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement); "
        "return [s.outlineStyle, s.outlineWidth]; })()"
    )
    assert outline == ["solid", "2px"]
    screenshot_region(page, "console-canary-1280.png", "#header", "#canary-measurements")
    # At 1,920 px the home block and the charts use the width instead of a 1,100 px column.
    page.set_viewport_size({"width": 1920, "height": 1000})
    page.goto(f"{base}/admin/")
    assert page.locator("#canary-running table").bounding_box()["width"] > 1400
    page.goto(deployment_page(base, canary_v2))
    assert page.locator("#canary-charts figure").first.bounding_box()["width"] > 330


def test_a_canary_with_a_plan_at_1920_px_shows_each_panel_in_its_place(
    live_server: Any, page: Any, roles: None, ruleset: Any, active_v1: Deployment
):
    """The verdict (the monitor's stored decision, a closed gate under it), the actions, the
    plan's row of steps, then the charts and the evidence table, using a wide screen."""
    from canary.errors import GateClosed
    from monitoring.decision import decisions
    from monitoring.decision.selectors import step_started_at
    from tests.admin.test_plan_browser import waiting_for_approval

    canary = Deployment.objects.select_related("baseline").get(pk=waiting_for_approval(ruleset).pk)
    add_logs(canary, "v1", [8.0 + (i % 5) for i in range(900)], errors=9, paired=True)
    add_logs(
        canary,
        "v2",
        [8.0 + (i % 7) for i in range(300)],
        errors=4,
        paired=True,
        shared_errors=3,
    )
    services.deployment_gate_closed(
        deployment_id=canary.pk,
        closed=GateClosed(
            "closed",
            gate={"type": "confirm-traffic", "url": "http://127.0.0.1:9/gate"},
            status_code=503,
        ),
        step=step_started_at(canary).isoformat(),
        actor="system:monitor",
    )
    canary.refresh_from_db()
    decisions.decision_store(deployment=canary, judged=decisions.decision_make(deployment=canary))
    make_staff("wanda", "approver")
    log_in(page, live_server.url, "wanda")
    page.set_viewport_size({"width": 1920, "height": 1200})
    page.goto(deployment_page(live_server.url, canary))
    assert "by the monitor" in page.inner_text("#canary-verdict-source")
    assert "confirm-traffic" in page.inner_text("#canary-gate-closed")
    places = [
        page.locator(selector).bounding_box()["y"]
        for selector in (
            "#canary-verdict",
            "#canary-gate-closed",
            "#canary-actions",
            "#canary-plan",
            "#canary-charts",
            "#canary-comparison",
        )
    ]
    assert places == sorted(places)
    assert fits_the_window(page)
    assert page.locator("#canary-comparison").bounding_box()["width"] > 1400
    screenshot_region(page, "console-canary-1920.png", "#header", "#canary-measurements")


def test_the_bake_panel_leads_a_promoted_deployment_at_1920_px(
    live_server: Any, page: Any, roles: None
):
    from tests.monitoring.test_bake import GOOD, execute, promoted_with_bake

    promoted = promoted_with_bake("bake-wide")
    for n in range(5):
        execute(promoted, GOOD, f"u{n}")
    make_staff("bea", "viewer")
    log_in(page, live_server.url, "bea")
    page.set_viewport_size({"width": 1920, "height": 1000})
    page.goto(deployment_page(live_server.url, promoted))
    assert "Baking until" in page.inner_text("#canary-bake")
    bake = page.locator("#canary-bake").bounding_box()
    assert bake["y"] < page.locator("#canary-actions").bounding_box()["y"]
    assert fits_the_window(page)
    screenshot_region(page, "console-bake-1920.png", "#header", "#canary-actions")
