"""What the console promises an approver (issue 23), through Django's test client: home
computed once for every tab, four eyes visible, promote meaning the next step,
confirmations that promise only what is configured and warn before an empty compensation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deployments import services
from deployments.models import Deployment
from tests.admin.conftest import make_staff
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def page_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_change", args=[deployment.pk])


def action_url(deployment: Deployment, action: str) -> str:
    return reverse("admin:deployments_deployment_action", args=[deployment.pk, action])


def log_reads(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return sum("monitoring_executionlog" in q["sql"] for q in captured.captured_queries)


def test_home_is_computed_once_for_every_tab_until_something_changes(
    console: Console, canary_v2: Deployment
):
    add_logs(canary_v2, "v2", [3.0] * 5)
    running = reverse("admin:deployments_deployment_running")
    assert log_reads(console("viewer"), running) > 0  # the first tab computes
    assert log_reads(console("approver"), running) == 0  # every other tab reads the answer
    assert log_reads(console("viewer"), reverse("admin:index")) == 0
    # A change to the canary (traffic here; approvals, a held regression and the monitor's
    # next run count too) computes it afresh.
    services.deployment_set_traffic(deployment_id=canary_v2.pk, traffic_percentage=20, actor="t")
    assert log_reads(console("viewer"), running) > 0


def test_an_approver_who_approved_is_not_offered_promote_again(
    console: Console, draft_v2: Deployment, roles: None
):
    services.deployment_update(
        deployment_id=draft_v2.pk, canary_config={"required_approvals": 2}, actor="t"
    )
    services.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=10, actor="t")
    anna = make_staff("anna", "approver")
    services.deployment_promote_or_approve(
        deployment_id=draft_v2.pk, actor=anna, override_reason="looked fine"
    )
    hers = Client()
    hers.force_login(anna)
    body = hers.get(page_url(draft_v2)).content.decode()
    assert 'data-action="promote"' not in body
    assert "You approved the promotion (1 of 2: anna); another approver completes it." in body
    assert "approvals 1 of 2: anna" in body  # four eyes, with names, in the verdict
    other = console("approver").get(page_url(draft_v2)).content.decode()
    assert "Approve: promote to 100% (2 of 2)" in other
    home = hers.get(reverse("admin:index")).content.decode()
    assert "1 of 2: anna" in home and "you approved; another approver completes it" in home


def test_promote_to_100_says_which_steps_it_skips(console: Console, canary_v2: Deployment):
    body = console("approver").get(action_url(canary_v2, "promote")).content.decode()
    assert "This skips the steps 20%, 30%, 40%, 50%, 60%, 70%, 80%, 90%" in body


def test_a_rollback_promises_only_the_channels_configured(
    console: Console, canary_v2: Deployment, settings: object
):
    Deployment.objects.filter(pk=canary_v2.pk).update(compensation_strategy="notify_and_rollback")
    settings.SLACK_WEBHOOK_URL = ""  # type: ignore[attr-defined]
    settings.CANARY_NOTIFY_EMAILS = []  # type: ignore[attr-defined]
    body = console("approver").get(action_url(canary_v2, "rollback")).content.decode()
    assert "notifies nobody: no Slack webhook or e-mail recipients are configured" in body
    assert "notifies Slack" not in body
    settings.SLACK_WEBHOOK_URL = "https://hooks.example.test/x"  # type: ignore[attr-defined]
    body = console("approver").get(action_url(canary_v2, "rollback")).content.decode()
    assert "notifies Slack at once" in body and "e-mail" not in body.split("notifies Slack")[1][:20]


def test_marking_compensation_complete_warns_when_nothing_was_replayed(
    console: Console, canary_v2: Deployment
):
    Deployment.objects.filter(pk=canary_v2.pk).update(compensation_strategy="manual")
    add_logs(canary_v2, "v2", [1.0] * 4)
    services.deployment_rollback(deployment_id=canary_v2.pk, reason="bad", actor="t")
    client = console("approver")
    page = client.get(page_url(canary_v2)).content.decode()
    assert "Mark complete (nothing replayed)" in page
    assert "canary-button-primary" not in page.split('id="canary-compensation"')[1]
    confirm = client.get(action_url(canary_v2, "compensation-complete")).content.decode()
    assert "Nothing has been replayed yet: 0 of 4 flagged executions" in confirm


def test_a_rollback_verdict_fills_in_the_reason_and_focuses_it(
    console: Console, canary_v2: Deployment
):
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [10.0] * 200, errors=2)
    add_logs(canary, "v2", [10.0] * 200, errors=80)
    body = console("approver").get(action_url(canary_v2, "rollback")).content.decode()
    assert "Rollback verdict for v2.0.0:" in body
    assert "autofocus" in body.split('name="reason"')[0].rsplit("<textarea", 1)[1] or (
        "autofocus" in body.split('name="reason"')[1].split(">")[0]
    )


def test_a_stale_link_opens_no_confirmation(console: Console, canary_v2: Deployment):
    services.deployment_set_traffic(deployment_id=canary_v2.pk, traffic_percentage=30, actor="t")
    response = console("approver").get(action_url(canary_v2, "rollback") + "?seen=canary:10")
    assert response.status_code == 302 and response["Location"] == page_url(canary_v2)


def test_the_charts_lead_with_traffic_weight_and_offer_a_six_hour_range(
    console: Console, canary_v2: Deployment
):
    services.deployment_set_traffic(deployment_id=canary_v2.pk, traffic_percentage=30, actor="t")
    add_logs(canary_v2, "v2", [3.0] * 5)
    client = console("viewer")
    body = client.get(page_url(canary_v2)).content.decode()
    charts = body.split('id="canary-charts"')[1]
    assert charts.index("v2 traffic weight") < charts.index("Error rate per minute")
    assert '<strong aria-current="true">The last hour</strong>' in charts
    assert '<a href="?range=6h">The last 6 h</a>' in charts
    wide = client.get(page_url(canary_v2), {"range": "6h"}).content.decode()
    assert "The last 6 h, per minute" in wide
    live = reverse("admin:deployments_deployment_live", args=[canary_v2.pk])
    assert f'data-refresh-url="{live}?range=6h"' in wide


def test_the_whole_canary_range_draws_one_point_per_hour(console: Console, canary_v2: Deployment):
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.logstore.rollups import rollup_run

    started = timezone.now() - timedelta(hours=5)
    Deployment.objects.filter(pk=canary_v2.pk).update(started_at=started)
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v2", [3.0] * 4, errors=1, at=started + timedelta(minutes=30))
    add_logs(canary, "v1", [2.0] * 4, at=started + timedelta(minutes=30))
    rollup_run()  # those hours come from the rollups
    add_logs(canary, "v2", [3.0] * 2)  # the current hour from the raw log
    body = console("viewer").get(page_url(canary_v2), {"range": "all"}).content.decode()
    charts = body.split('id="canary-charts"')[1]
    assert "The whole canary, per hour" in charts
    assert "Error rate per hour" in charts and "p95 latency per hour" in charts
    assert '<strong aria-current="true">The whole canary</strong>' in charts
    error = charts.split('data-chart="error"')[1].split("</svg>")[0]
    # The rolled-up hour (25% of v2 failing) and the current, raw one both drew a point.
    assert error.count('class="dot series-v2"') == 2
