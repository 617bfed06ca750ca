"""The rollout plan on the canary's page in a real browser (Playwright, Debian's Chromium):
the row of steps, and pause/resume through their confirmation as approver and as viewer."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from deployments import services
from deployments.models import Deployment, DeploymentEvent, DeploymentPlan, RuleSet
from tests.admin import test_browser
from tests.admin.conftest import make_staff
from tests.admin.test_browser import (
    confirm,
    deployment_page,
    log_in,
    screenshot_region,
    submit,
    success_message,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # the Chromium page fixture

STEPS = [{"traffic": 10}, {"pause": "approval"}, {"traffic": 50}, {"promote": True}]


def waiting_for_approval(ruleset: RuleSet) -> Deployment:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", canary_config={"steps": STEPS}, actor="tests"
    )
    canary = services.deployment_start_canary(deployment_id=draft.pk, actor="tests")
    assert services.plan_wait_for_approval(
        deployment_id=canary.pk, step=1, actor="system:monitor", now=timezone.now()
    )
    return canary


def step_statuses(page: Any) -> list[str]:
    steps = page.locator("#canary-plan li.canary-plan-step")
    return [steps.nth(i).get_attribute("data-status") for i in range(steps.count())]


def test_approver_resumes_the_approval_step_then_pauses_the_plan(
    live_server: Any, page: Any, roles: None, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = waiting_for_approval(ruleset)
    make_staff("alice", "approver")
    base = live_server.url
    log_in(page, base, "alice")
    page.goto(deployment_page(base, canary))
    assert step_statuses(page) == ["done", "current", "next", "next"]
    assert "waiting for approval" in page.inner_text("#canary-plan li[data-status=current]")
    assert page.inner_text("#canary-plan-state") == "waiting for approval"
    assert page.locator("#canary-plan a[data-action=pause]").count() == 1
    screenshot_region(page, "admin-rollout-plan.png", ".canary-actions", "#canary-plan")

    confirm(page, "resume", "You approve the plan's approval step")
    submit(page)
    assert "Rollout resumed (running)." in success_message(page)
    assert step_statuses(page) == ["done", "done", "current", "next"]
    assert page.locator("#canary-plan a[data-action=resume]").count() == 0

    confirm(page, "pause", "stops advancing")
    page.fill("textarea[name=reason]", "waiting for the batch run")
    submit(page)
    assert "Rollout paused." in success_message(page)
    assert page.inner_text("#canary-plan-state") == "paused"
    assert page.locator("#canary-plan a[data-action=resume]").count() == 1
    assert page.locator("#canary-plan a[data-action=pause]").count() == 0

    plan = DeploymentPlan.objects.get(deployment=canary)
    assert (plan.state, plan.current_step) == ("paused", 2)
    events = DeploymentEvent.objects.filter(deployment=canary, action__in=["resume", "pause"])
    assert [(e.action, e.actor) for e in events.order_by("id")] == [
        ("resume", "alice"),
        ("pause", "alice"),
    ]
    assert events.order_by("id").last().payload["reason"] == "waiting for the batch run"


def test_a_viewer_sees_the_steps_and_no_pause_or_resume(
    live_server: Any, page: Any, roles: None, ruleset: RuleSet, active_v1: Deployment
) -> None:
    canary = waiting_for_approval(ruleset)
    make_staff("victor", "viewer")
    base = live_server.url
    log_in(page, base, "victor")
    page.goto(deployment_page(base, canary))
    assert step_statuses(page) == ["done", "current", "next", "next"]
    assert page.locator("#canary-plan a.canary-button").count() == 0
    assert "Approvers pause and resume" in page.inner_text("#canary-plan-viewer")
    # The confirmation page itself is refused to a viewer.
    page.goto(f"{base}/admin/deployments/deployment/{canary.pk}/actions/resume/")
    assert DeploymentPlan.objects.get(deployment=canary).state == "waiting_approval"
