"""The admin console in a real browser: Playwright driving Debian's Chromium.

Chromium comes from the system (``apt-get install -y chromium``); no browser is
ever downloaded at test time. Without it the tests skip locally and fail in CI.
Screenshots land in ``test-artifacts/`` for a person to look at; the three that
docs/admin.md links (canary page, running canaries, compensation panel) are
committed, and every run writes them afresh.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from canary.celery import app as celery_app
from deployments import services
from deployments.models import Deployment, DeploymentEvent
from monitoring.models import ExecutionLog
from tests.admin.conftest import PASSWORD, make_staff
from tests.monitoring.logs import add_logs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 20_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (apt-get install -y chromium)")
    pytest.skip(reason)


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh Chromium page; closed after the test, screenshot kept if the test failed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing")
    # NOTE: Playwright's sync API keeps an event loop on this thread, and Django then
    # refuses ORM calls as "async unsafe". The test thread only sets up and checks data;
    # the live server answers the browser from its own thread.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        finally:
            context.close()
            browser.close()
            # NOTE: ORM calls made while Playwright's loop ran used connections bound to
            # that context; close them here, or they outlive the test database.
            connections.close_all()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    page.screenshot(path=str(target), full_page=True)
    return target


def screenshot_region(page: Any, name: str, first: str, last: str) -> Path:
    """The page from the top of ``first`` to the bottom of ``last``: the part a reader needs,
    small enough to commit."""
    top = page.locator(first).bounding_box()
    bottom = page.locator(last).bounding_box()
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    clip = {
        "x": 0,
        "y": top["y"] - 8,
        "width": page.viewport_size["width"],
        "height": bottom["y"] + bottom["height"] - top["y"] + 16,
    }
    page.screenshot(path=str(target), full_page=True, clip=clip)
    return target


def fits_the_window(page: Any) -> bool:
    """No horizontal scrolling: every table fits the viewport's width."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def regressing(deployment: Deployment) -> Deployment:
    """v2 failing 40% of 200 requests where v1 fails 1%: a clear regression."""
    canary = Deployment.objects.select_related("baseline").get(pk=deployment.pk)
    add_logs(canary, "v1", [8.0 + (i % 5) for i in range(200)], errors=2)
    add_logs(canary, "v2", [8.0 + (i % 5) for i in range(200)], errors=80)
    return canary


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def deployment_page(base: str, deployment: Deployment) -> str:
    return f"{base}/admin/deployments/deployment/{deployment.pk}/change/"


def confirm(page: Any, action: str, expect_consequence: str | None = None) -> None:
    """Press an action button, check what the confirmation says, and leave the form open."""
    page.click(f"a.canary-button[data-action='{action}']")
    page.wait_for_selector("#canary-consequence")
    if expect_consequence:
        assert expect_consequence in page.inner_text("#canary-consequence")


def submit(page: Any) -> None:
    with page.expect_navigation():
        page.click("input[name=confirm]")


def success_message(page: Any) -> str:
    return page.inner_text("ul.messagelist li.success")


def test_approver_starts_raises_and_promotes_a_canary(
    live_server: Any, page: Any, roles: None, draft_v2: Deployment
):
    make_staff("alice", "approver")
    base = live_server.url
    log_in(page, base, "alice")
    page.goto(deployment_page(base, draft_v2))
    assert "Draft" in page.inner_text(".canary-actions")

    confirm(page, "start-canary", "keeps serving everyone else")
    page.fill("#id_canary_pct", "10")
    submit(page)
    assert "Canary started: v2.0.0 serves 10%" in success_message(page)
    assert page.inner_text(".canary-actions .canary-status-canary") == "Canary"

    confirm(page, "traffic", "now serves 10% of new contexts")
    page.fill("#id_traffic_percentage", "50")
    submit(page)
    assert "serves 50% of new contexts" in success_message(page)
    assert "at 50% traffic" in page.inner_text(".canary-actions")

    canary = Deployment.objects.select_related("baseline").get(pk=draft_v2.pk)
    add_logs(canary, "v1", [8.0 + (i % 5) for i in range(60)], errors=1)
    add_logs(canary, "v2", [7.0 + (i % 4) for i in range(60)])
    page.reload()
    assert "60" in page.inner_text("#canary-comparison")
    assert "Health" in page.inner_text("#canary-measurements")

    confirm(page, "promote", "v2.0.0 will serve 100% of traffic; v1.0.0 will be deprecated.")
    # Not an hour at 50% yet: promoting now takes an acknowledgement and a reason.
    page.check("input[name=acknowledge]")
    page.fill("textarea[name=override_reason]", "verified by hand")
    submit(page)
    assert "Promoted: v2.0.0 serves 100% of traffic." in success_message(page)
    assert page.inner_text(".canary-actions .canary-status-active") == "Active"

    history = page.inner_text("#canary-events")
    for line in ("Canary started", "Traffic changed", "traffic 10% → 50%", "Promoted"):
        assert line in history
    rows = page.locator("#canary-events tr.canary-event")
    assert rows.count() == 4  # created, canary started, traffic, promoted
    last = rows.nth(0).inner_text()  # newest first
    assert "alice" in last and "Canary" in last and "Active" in last
    screenshot(page, "admin-deployment-page.png")

    promoted = Deployment.objects.get(pk=draft_v2.pk)
    assert (promoted.status, promoted.traffic_percentage) == ("active", 100)
    assert Deployment.objects.get(pk=promoted.baseline_id).status == "deprecated"
    actors = set(
        DeploymentEvent.objects.filter(deployment=promoted).values_list("actor", flat=True)
    )
    assert "alice" in actors


def test_viewer_sees_no_buttons_and_a_forged_post_is_refused(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    make_staff("victor", "viewer")
    base = live_server.url
    log_in(page, base, "victor")
    page.goto(deployment_page(base, canary_v2))
    assert page.locator("a.canary-button").count() == 0
    assert "can look but not act" in page.inner_text("#canary-no-actions")
    screenshot(page, "admin-deployment-page-viewer.png")

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    url = f"{base}/admin/deployments/deployment/{canary_v2.pk}/actions/promote/"
    response = page.request.post(
        url,
        form={"csrfmiddlewaretoken": token, "expected_status": "canary"},
        headers={"Referer": deployment_page(base, canary_v2)},
        max_redirects=0,
    )
    assert response.status == 403
    assert Deployment.objects.get(pk=canary_v2.pk).status == "canary"


def test_rollback_without_a_reason_is_refused_with_a_message(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    make_staff("rita", "approver")
    base = live_server.url
    log_in(page, base, "rita")
    page.goto(deployment_page(base, canary_v2))

    confirm(page, "rollback", "v1.0.0 serves everyone")
    assert page.is_checked("#id_apply_compensation")
    assert "Roll back only" in page.inner_text(".field-apply_compensation")
    submit(page)
    assert "A reason is required to roll back." in page.inner_text("ul.messagelist li.error")
    screenshot(page, "admin-rollback-refused.png")
    assert Deployment.objects.get(pk=canary_v2.pk).status == "canary"

    page.fill("#id_reason", "v2 error rate 8% (threshold 5%)")
    page.uncheck("#id_apply_compensation")
    submit(page)
    assert re.search(r"Rolled back v2\.0\.0 \(without compensation\)", success_message(page))
    assert page.inner_text(".canary-actions .canary-status-rolled_back") == "Rolled back"
    assert "v2 error rate 8%" in page.inner_text("#canary-events .canary-event-reason")


def test_slider_presets_set_traffic_and_the_page_refreshes_itself(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment, settings: Any
):
    settings.CANARY_CONSOLE_REFRESH_SECONDS = 1
    make_staff("sam", "approver")
    base = live_server.url
    log_in(page, base, "sam")
    page.goto(deployment_page(base, canary_v2))

    # New executions show up without a reload; the page itself stays put.
    now = timezone.now()
    Deployment.objects.filter(pk=canary_v2.pk).update(started_at=now - timedelta(minutes=30))
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    assert page.get_attribute("#canary-verdict", "data-recommendation") == "collect_more_data"
    page.evaluate("window.canaryNotReloaded = true")
    for minutes_ago in range(12, 0, -1):
        at = now - timedelta(minutes=minutes_ago)
        add_logs(
            canary,
            "v1",
            [8.0 + (i % 7) for i in range(40)],
            errors=minutes_ago % 2,
            at=at,
            paired=True,
        )
        add_logs(
            canary,
            "v2",
            [9.0 + (i % 9) for i in range(10)],
            errors=3,  # v2 fails 30% where v1 succeeds: a regression the verdict must catch
            at=at,
            paired=True,
        )
    services.deployment_breaker_opened(
        deployment_id=canary.pk, consecutive_failures=5, cooldown_seconds=60, actor="system:breaker"
    )
    page.wait_for_function(
        "document.querySelector('#canary-comparison') &&"
        " document.querySelector('#canary-comparison').innerText.includes('480')"
    )
    assert int(page.get_attribute("#canary-live", "data-refreshed") or 0) >= 1
    assert page.evaluate("window.canaryNotReloaded") is True
    # The verdict at the top refreshed with the numbers: no stale "keep collecting" above them.
    page.wait_for_selector("#canary-verdict[data-recommendation='rollback']")
    # The charts: three SVGs with a v1 and a v2 line each, and the paired disagreement rate;
    # the traffic start and the breaker opening are marked.
    # First v2's traffic weight over time, then the three v1-vs-v2 charts.
    assert page.locator("#canary-charts svg").count() == 5
    assert "v2 traffic weight" in page.locator("#canary-charts figcaption").first.inner_text()
    assert page.locator("#canary-charts path.series-v1").count() == 3
    assert page.locator("#canary-charts path.series-v2").count() == 4
    assert page.locator("#canary-charts svg[data-chart='disagreement'] path.series").count() == 1
    assert page.locator("#canary-charts svg[data-chart='error'] line.marker-breaker").count() == 1
    assert fits_the_window(page)
    screenshot_region(page, "admin-canary-page.png", "#canary-verdict-slot", "#canary-charts")

    confirm(page, "traffic", "now serves 10% of new contexts")
    assert page.get_attribute("#id_traffic_percentage", "type") == "range"
    page.click("[data-canary-preset='50']")
    assert page.input_value("#id_traffic_percentage") == "50"
    assert page.inner_text("#id_traffic_percentage_shown") == "50%"
    screenshot(page, "admin-traffic-slider.png")
    submit(page)
    assert "serves 50% of new contexts" in success_message(page)
    assert Deployment.objects.get(pk=canary_v2.pk).traffic_percentage == 50

    # A change made elsewhere (the monitor, a colleague) marks the buttons as stale.
    services.deployment_set_traffic(
        deployment_id=canary_v2.pk, traffic_percentage=60, actor="colleague"
    )
    page.wait_for_selector("#canary-changed:not([hidden])")
    assert "now canary at 60% traffic" in page.inner_text("#canary-changed")


def test_replay_and_mark_complete_from_the_compensation_panel(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    Deployment.objects.filter(pk=canary_v2.pk).update(compensation_strategy="manual")
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v2", [1.0] * 12, errors=3)
    services.deployment_rollback(
        deployment_id=canary_v2.pk, reason="v2 decides zone C wrongly", actor="t"
    )
    make_staff("carl", "approver")
    base = live_server.url
    log_in(page, base, "carl")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(deployment_page(base, canary_v2))
    assert "Reason: v2 decides zone C wrongly" in page.inner_text("#canary-outcome")
    assert "12 v2 executions flagged" in page.inner_text("#canary-compensation-counts")

    celery_app.conf.task_always_eager = True  # the live server runs in this process
    try:
        confirm(page, "compensation-replay", "evaluated again with v1.0.0")
        submit(page)
    finally:
        celery_app.conf.task_always_eager = False
    assert "Replay queued for 12 flagged executions" in success_message(page)
    assert "12 replayed on v1" in page.inner_text("#canary-compensation-counts")
    assert fits_the_window(page)
    screenshot_region(
        page, "admin-compensation-panel.png", "#canary-outcome", "#canary-compensation"
    )

    confirm(page, "compensation-complete", "recorded as done")
    submit(page)
    assert "Compensation of v2.0.0 marked complete." in success_message(page)
    assert "Compensation: completed" in page.inner_text("#canary-compensation")
    assert page.locator("#canary-compensation a.canary-button").count() == 0
    assert Deployment.objects.get(pk=canary_v2.pk).compensation_status == "completed"


def test_a_viewer_sees_no_action_anywhere(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    task = PeriodicTask.objects.create(
        name="canary monitor (test)", task="monitoring.tasks.monitor", interval=every
    )
    Deployment.objects.filter(pk=canary_v2.pk).update(compensation_strategy="manual")
    add_logs(Deployment.objects.select_related("baseline").get(pk=canary_v2.pk), "v2", [1.0] * 3)
    make_staff("vera", "viewer")
    base = live_server.url
    log_in(page, base, "vera")
    page.goto(f"{base}/admin/")
    running = page.inner_text("#canary-running tr.canary-running-row")
    assert "thermostat\nv2.0.0 / v1.0.0\t10%" in running
    assert page.locator("#canary-home a.canary-button, #canary-home form").count() == 0
    page.goto(deployment_page(base, canary_v2))
    assert page.locator("a.canary-button").count() == 0
    page.goto(f"{base}/admin/deployments/deployment/")
    assert page.locator("select[name=action]").count() == 0
    page.goto(f"{base}/admin/deployments/rulesetversion/{canary_v2.version_id}/change/")
    assert page.locator("#canary-test").count() == 0  # "Test this version" is for approvers
    page.goto(f"{base}/admin/django_celery_beat/periodictask/")
    assert page.locator("select[name=action]").count() == 0
    page.goto(f"{base}/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.locator("input[type=submit]").count() == 0  # read-only: nothing to save
    assert page.locator("#id_enabled").count() == 0

    # After a rollback with manual compensation the panel is shown, without its buttons.
    services.deployment_rollback(deployment_id=canary_v2.pk, reason="bad", actor="t")
    page.goto(deployment_page(base, canary_v2))
    assert "3 v2 executions flagged" in page.inner_text("#canary-compensation-counts")
    assert page.locator("a.canary-button").count() == 0
    page.goto(f"{base}/admin/")
    assert "thermostat v2.0.0" in page.inner_text("#canary-compensations")
    assert page.locator("#canary-home a.canary-button").count() == 0


def test_the_running_view_refreshes_in_place_and_fits_1280_px(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment, settings: Any
):
    settings.CANARY_CONSOLE_REFRESH_SECONDS = 1
    make_staff("olga", "viewer")
    base = live_server.url
    log_in(page, base, "olga")
    page.goto(f"{base}/admin/")
    row = "#canary-running tr.canary-running-row"
    assert "Keep collecting data" in page.inner_text(row)
    page.evaluate("window.canaryNotReloaded = true")
    regressing(canary_v2)
    page.wait_for_function("document.querySelector('#canary-running .canary-tone-error') !== null")
    assert page.evaluate("window.canaryNotReloaded") is True
    cells = page.inner_text(row)
    assert "Roll back" in cells and "checks pass" in cells and "0 of 1" in cells
    assert "v1 1.00%\nv2 40.00%" in cells
    assert fits_the_window(page)
    screenshot(page, "admin-running-canaries.png")
    for path in (
        "/admin/deployments/deployment/",
        "/admin/deployments/deploymentevent/",
        "/admin/monitoring/executionlog/",
        f"/admin/deployments/deployment/{canary_v2.pk}/change/",
        f"/admin/deployments/deployment/{canary_v2.pk}/history/",
    ):
        page.goto(f"{base}{path}")
        assert fits_the_window(page), path


def test_a_clear_regression_reads_roll_back_and_promoting_against_it_takes_a_reason(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    regressing(canary_v2)
    make_staff("paula", "approver")
    base = live_server.url
    log_in(page, base, "paula")
    page.goto(deployment_page(base, canary_v2))
    assert page.get_attribute("#canary-verdict", "data-recommendation") == "rollback"
    verdict = page.inner_text("#canary-verdict")
    assert verdict.startswith("Roll back:")
    assert "40.00%" in verdict and "5.00%" in verdict  # v2's error rate against the threshold
    assert re.search(r"p (<|=) 0\.\d{4}", verdict) and "p = <" not in verdict

    confirm(page, "promote", "v2.0.0 will serve 100% of traffic")
    assert "I promote against the evidence: the rollback verdict above" in page.inner_text(
        "form.canary-action-form"
    )
    assert page.inner_text("#canary-against").startswith(
        "This goes against the verdict. Roll back:"
    )
    submit(page)  # neither acknowledged nor explained
    refused = page.inner_text("ul.messagelist li.error")
    assert "Promote refused" in refused and "Why promote anyway: This field is required." in refused
    assert Deployment.objects.get(pk=canary_v2.pk).status == "canary"

    page.check("input[name=acknowledge]")
    page.fill("textarea[name=override_reason]", "the errors are a test client, not users")
    submit(page)
    assert "Promoted: v2.0.0 serves 100% of traffic." in success_message(page)
    event = DeploymentEvent.objects.get(deployment=canary_v2, action="promote")
    assert event.actor == "paula"
    assert event.payload["override_reason"] == "the errors are a test client, not users"


def test_a_healthy_canary_reads_promote_with_its_numbers(
    live_server: Any, page: Any, roles: None, canary_v2: Deployment
):
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [8.0 + (i % 5) for i in range(300)], errors=3, paired=True)
    add_logs(
        canary, "v2", [8.0 + (i % 5) for i in range(300)], errors=3, paired=True, shared_errors=3
    )
    assert ExecutionLog.objects.filter(agreed=False).count() == 3  # v1-served, v2 succeeded
    make_staff("vince", "viewer")
    base = live_server.url
    log_in(page, base, "vince")
    page.goto(deployment_page(base, canary_v2))
    assert page.get_attribute("#canary-verdict", "data-recommendation") == "promote"
    verdict = page.inner_text("#canary-verdict")
    # Never green while a required check fails: "wait", with the check, and the numbers.
    assert verdict.startswith("Wait: 1 of 6 readiness checks pending (time at traffic)")
    assert "v2 is not worse than v1 (error rate v2 - v1 = " in verdict
    assert "95% interval" in verdict and "paired on 600 inputs" in verdict
    assert page.get_attribute("#canary-verdict", "data-tone") == "warning"
    assert page.locator("a.canary-button").count() == 0  # a viewer reads, never acts
