"""What the console shows, in the words and formats an approver reads (issue #14's fixes)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.test import Client
from django.urls import reverse

from deployments import services
from deployments.models import Deployment
from monitoring.models import ExecutionLog
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def page_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_change", args=[deployment.pk])


def test_canary_config_is_a_readable_table_not_json(console: Console, canary_v2: Deployment):
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    config = body[body.index("field-canary_config_display") :]
    config = config[: config.index("</table>")]
    assert '<th scope="row">error threshold</th><td>5%</td>' in config
    assert '<th scope="row">step duration</th><td>1 h</td>' in config
    assert '<th scope="row">auto rollback</th><td>yes</td>' in config
    assert "canary-json" not in config


def test_dates_carry_one_format_with_time_zone(console: Console, canary_v2: Deployment):
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    started = body[body.index("field-started_at") :][:400]
    assert STAMP.search(started)
    assert "a.m." not in body and "p.m." not in body
    listing = console("viewer").get(reverse("admin:deployments_deployment_changelist"))
    assert STAMP.search(listing.content.decode())


def test_events_are_newest_first_with_a_reason_column(console: Console, canary_v2: Deployment):
    services.deployment_set_traffic(
        deployment_id=canary_v2.pk, traffic_percentage=30, actor="tests", reason="looks fine"
    )
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    history = body[body.index('id="canary-events"') :]
    assert '<th scope="col">reason</th>' in history
    order = [history.index(label) for label in ("Traffic changed", "Canary started", "Created")]
    assert order == sorted(order)
    assert '<td class="canary-event-reason">looks fine</td>' in history
    assert "<summary>payload</summary>" in history  # the rest of the payload, as a table


def test_console_actions_fill_recent_actions_and_history(console: Console, canary_v2: Deployment):
    client = console("approver")
    url = reverse("admin:deployments_deployment_action", args=[canary_v2.pk, "traffic"])
    client.post(
        url, {"expected_status": "canary", "expected_traffic": 10, "traffic_percentage": 25}
    )
    entry = LogEntry.objects.get(object_id=str(canary_v2.pk))
    assert entry.action_flag == CHANGE
    assert entry.get_change_message() == "Traffic set: v2.0.0 serves 25% of new contexts."
    index = client.get(reverse("admin:index")).content.decode()
    assert "thermostat v2.0.0" in index  # Recent actions
    history_url = reverse("admin:deployments_deployment_history", args=[canary_v2.pk])
    history = client.get(history_url).content.decode()
    assert "Traffic set: v2.0.0 serves 25% of new contexts." in history
    assert 'id="canary-events"' in history and "Canary started" in history


def test_pages_nothing_changes_offer_no_empty_history(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [1.0])
    client = console("viewer")
    log = ExecutionLog.objects.get()
    pages = [
        ("deployments", "ruleset", canary_v2.ruleset_id),
        ("deployments", "rulesetversion", canary_v2.version_id),
        ("monitoring", "executionlog", log.pk),
    ]
    for app, model, pk in pages:
        body = client.get(reverse(f"admin:{app}_{model}_change", args=[pk])).content.decode()
        assert 'class="historylink"' not in body, model
        assert client.get(reverse(f"admin:{app}_{model}_history", args=[pk])).status_code == 404
    deployment = client.get(page_url(canary_v2)).content.decode()
    assert 'class="historylink"' in deployment  # filled from the console's actions and events


def test_execution_log_list_has_compact_columns(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [0.1519170000392478], errors=1)
    ExecutionLog.objects.update(workflow_id="wf-1", user_id="u-9", error_rule="hot")
    body = console("viewer").get(reverse("admin:monitoring_executionlog_changelist")).content
    text = body.decode()
    assert "0.152 ms" in text and "0.1519" not in text
    assert "v2 · v2.0.0" in text
    assert '<span class="canary-id"><small>wf</small> wf-1</span>' in text
    assert '<span class="canary-id"><small>user</small> u-9</span>' in text
    assert "column-reprocess" in text
    assert '<small class="canary-error-rule">hot</small>' in text  # under the error badge


def test_event_admin_shows_reason_and_payload_table(console: Console, canary_v2: Deployment):
    services.deployment_rollback(deployment_id=canary_v2.pk, reason="too slow", actor="tests")
    listing = console("viewer").get(reverse("admin:deployments_deploymentevent_changelist"))
    text = listing.content.decode()
    assert "too slow" in text
    assert text.index("Rolled back") < text.index("Canary started")


def test_schedules_read_as_periods_not_seconds(console: Console):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for name, every, period in (("daily", 86400, "seconds"), ("monitor", 5, "minutes")):
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.create(name=name, task="x", interval=schedule)
    body = console("viewer").get(reverse("admin:django_celery_beat_periodictask_changelist"))
    text = body.content.decode()
    assert "every day" in text and "every 5 min" in text
    assert "86400 seconds" not in text


def test_each_metric_has_one_number_on_the_canary_page(console: Console, canary_v2: Deployment):
    """The health block says only what the evidence table does not: no second error rate."""
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [10.0] * 200, errors=2)
    add_logs(canary, "v2", [10.0] * 200, errors=30)
    body = console("viewer").get(page_url(canary)).content.decode()
    health = body[body.index("<h3>Health") :]
    health = health[: health.index("</section>")]
    assert "%" not in health.split("<ul")[0]  # no rate beside the table's
    assert "v2 error rate of the requests v2 served" not in body
    assert "e-05" not in body and "e-06" not in body


def test_home_and_the_canary_page_give_v2_one_error_rate(console: Console, canary_v2: Deployment):
    """Paired: v2 fails 8 of 100 inputs it served and 2 of the 900 it shadowed, so its
    served rate (8%) is not its rate on the paired inputs (1%); both pages say the latter."""
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v2", [1.0] * 100, errors=8, paired=True)
    add_logs(canary, "v1", [1.0] * 900, paired=True, shared_errors=2)
    body = console("viewer").get(page_url(canary)).content.decode()
    row = body[body.index('<tr data-metric="error rate">') :]
    row = row[: row.index("</tr>")]
    assert "1.00%" in row and "8.00%" not in row
    assert "1,000 paired inputs" in row
    home = console("viewer").get(reverse("admin:deployments_deployment_running"))
    assert "v2 1.00%" in home.content.decode()
