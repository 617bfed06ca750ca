"""Rule sets and their test form, assignments, execution logs, periodic jobs, users and tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from unittest.mock import patch

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from assignments.models import Assignment
from deployments.models import Deployment, RuleSet, RuleSetVersion
from monitoring.models import ExecutionLog
from tests.monitoring.logs import add_logs
from tests.stored import stored

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def version_of(ruleset: RuleSet, name: str) -> RuleSetVersion:
    return RuleSetVersion.objects.get(ruleset=ruleset, version=name)


def test_version_page_shows_rules_readably_with_a_test_form(console: Console, ruleset: RuleSet):
    version = version_of(ruleset, "v2.0.0")
    url = reverse("admin:deployments_rulesetversion_change", args=[version.pk])
    body = console("approver").get(url).content.decode()
    assert "<code>input.temperature &gt; 27</code>" in body
    assert "<code>input.zone in [&quot;A&quot;, &quot;B&quot;]</code>" in body
    assert "Test this version" in body
    assert reverse("admin:deployments_rulesetversion_test", args=[version.pk]) in body


def test_the_test_form_runs_the_test_service(console: Console, ruleset: RuleSet):
    version = version_of(ruleset, "v2.0.0")
    url = reverse("admin:deployments_rulesetversion_test", args=[version.pk])
    response = console("approver").post(
        url,
        {
            "input": json.dumps({"temperature": 28, "zone": "C"}),
            "expected_output": json.dumps({"alert": "raise"}),
        },
    )
    assert response.status_code == 200
    result = response.context["result"]
    assert (result["passed"], result["matched_rule"], result["version"]) == (True, "hot", "v2.0.0")
    body = response.content.decode()
    assert "canary-health-healthy" in body and "passed" in body


def test_the_test_form_reports_a_mismatch_and_an_evaluation_error(
    console: Console, ruleset: RuleSet
):
    version = version_of(ruleset, "v1.0.0")
    url = reverse("admin:deployments_rulesetversion_test", args=[version.pk])
    client = console("approver")
    mismatch = client.post(url, {"input": '{"temperature": 20}', "expected_output": '"x"'})
    assert mismatch.context["result"]["passed"] is False
    missing_key = client.post(url, {"input": "{}", "expected_output": ""})
    result = missing_key.context["result"]
    assert result["passed"] is False and result["error"]["rule"] == "hot"
    assert "rule hot:" in missing_key.content.decode()


def test_a_viewer_sees_the_rules_but_may_not_run_the_test_form(console: Console, ruleset: RuleSet):
    version = version_of(ruleset, "v2.0.0")
    client = console("viewer")
    page = client.get(reverse("admin:deployments_rulesetversion_change", args=[version.pk]))
    body = page.content.decode()
    assert "<code>input.temperature &gt; 27</code>" in body
    assert "Test this version" not in body
    url = reverse("admin:deployments_rulesetversion_test", args=[version.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"input": '{"temperature": 28}'}).status_code == 403


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]"])
def test_the_test_form_refuses_bad_input_with_a_message(
    console: Console, ruleset: RuleSet, raw: str
):
    version = version_of(ruleset, "v1.0.0")
    url = reverse("admin:deployments_rulesetversion_test", args=[version.pk])
    response = console("approver").post(url, {"input": raw})
    assert response.status_code == 200
    assert response.context["result"] is None
    assert any("Test refused: Input:" in str(m) for m in get_messages(response.wsgi_request))


def test_rule_sets_and_versions_are_read_only(console: Console, ruleset: RuleSet):
    client = console("admin")
    assert client.get(reverse("admin:deployments_ruleset_add")).status_code == 403
    assert client.get(reverse("admin:deployments_rulesetversion_add")).status_code == 403
    url = reverse("admin:deployments_ruleset_change", args=[ruleset.pk])
    assert client.post(url, {"name": "renamed"}).status_code == 403
    assert RuleSet.objects.get(pk=ruleset.pk).name == "thermostat"


def _assignment(deployment: Deployment, tier: str, identifier: str, served: str) -> Assignment:
    version = deployment.version if served == "v2" else deployment.baseline.version
    return stored(Assignment).create(
        deployment=deployment,
        tier=tier,
        identifier=identifier,
        assigned_version=served,
        version=version,
        workflow_id=identifier if tier == "workflow" else "",
        user_id=identifier if tier == "user" else "",
        assigned_at=timezone.now(),
    )


def test_assignments_filter_by_deployment_tier_version_and_search_by_id(
    console: Console, canary_v2: Deployment
):
    mine = _assignment(canary_v2, "workflow", "workflow_123", "v2")
    _assignment(canary_v2, "user", "user_a", "v1")
    client = console("viewer")
    url = reverse("admin:assignments_assignment_changelist")

    def shown(**query: str) -> set[str]:
        response = client.get(url, query)
        assert response.status_code == 200
        return {a.identifier for a in response.context["cl"].result_list}

    assert shown(deployment=str(canary_v2.pk)) == {"workflow_123", "user_a"}
    assert shown(deployment="00000000-0000-0000-0000-000000000000") == set()
    assert shown(tier__exact="workflow") == {"workflow_123"}
    assert shown(assigned_version__exact="v1") == {"user_a"}
    assert shown(q="workflow_1") == {"workflow_123"}
    assert shown(q=str(mine.pk)) == {"workflow_123"}


def test_execution_logs_are_read_only_and_filterable(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [3.0, 4.0], errors=1)
    add_logs(canary_v2, "v1", [2.0])
    client = console("viewer")
    url = reverse("admin:monitoring_executionlog_changelist")

    def shown(**query: str) -> int:
        response = client.get(url, query)
        assert response.status_code == 200
        return len(response.context["cl"].result_list)

    assert shown() == 3
    assert shown(success__exact="0") == 1
    assert shown(served_version__exact="v1") == 1
    assert shown(version=str(canary_v2.version_id)) == 2
    assert shown(deployment=str(canary_v2.pk)) == 3
    log = stored(ExecutionLog).first()
    change = reverse("admin:monitoring_executionlog_change", args=[log.pk])
    assert client.get(change).status_code == 200
    assert console("admin").post(change, {"success": "on"}).status_code == 403
    assert client.get(reverse("admin:monitoring_executionlog_add")).status_code == 403


def test_periodic_jobs_visible_to_every_role(console: Console):
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    for role in ("viewer", "approver", "admin"):
        assert console(role).get(url).status_code == 200


def monitor_task() -> PeriodicTask:
    return PeriodicTask.objects.get(name="canary-monitor")


PERIODIC_ACTIONS = ["disable_tasks", "toggle_tasks", "enable_tasks", "run_tasks"]


@pytest.mark.parametrize("action", PERIODIC_ACTIONS)
@pytest.mark.parametrize("role", ["viewer", "approver"])
def test_viewers_and_approvers_cannot_act_on_periodic_jobs(
    console: Console, role: str, action: str
):
    task = monitor_task()
    assert task.enabled
    client = console(role)
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    with patch("celery.app.task.Task.apply_async") as sent:
        response = client.post(url, {"action": action, "_selected_action": [task.pk], "index": "0"})
    assert response.status_code in (200, 302, 403)
    assert monitor_task().enabled is True
    assert sent.call_count == 0
    page = client.get(url)
    assert page.status_code == 200
    assert page.context["action_form"] is None  # no actions offered
    change = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
    assert client.post(change, {"name": task.name, "enabled": ""}).status_code == 403
    assert monitor_task().enabled is True


def test_admin_role_may_disable_and_enable_periodic_jobs(console: Console):
    task = monitor_task()
    client = console("admin")
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    assert client.get(url).context["action_form"] is not None
    client.post(url, {"action": "disable_tasks", "_selected_action": [task.pk], "index": "0"})
    assert monitor_task().enabled is False
    client.post(url, {"action": "enable_tasks", "_selected_action": [task.pk], "index": "0"})
    assert monitor_task().enabled is True


@pytest.mark.parametrize(
    ("role", "allowed"), [("viewer", False), ("approver", False), ("admin", True)]
)
def test_only_admins_manage_users_and_tokens(console: Console, role: str, allowed: bool):
    client = console(role)
    for name in ("admin:auth_user_changelist", "admin:knox_authtoken_changelist"):
        assert (client.get(reverse(name)).status_code == 200) is allowed
    assert (client.get(reverse("admin:auth_user_add")).status_code == 200) is allowed


def test_redaction_is_shown_on_the_rule_set_and_on_each_execution(
    console: Console, canary_v2: Deployment
):
    ruleset = canary_v2.ruleset
    RuleSet.objects.filter(pk=ruleset.pk).update(redacted_input_paths=["customer.email", "ssn"])
    client = console("viewer")
    page = client.get(reverse("admin:deployments_ruleset_change", args=[ruleset.pk]))
    assert "customer.email, ssn" in page.content.decode()
    add_logs(canary_v2, "v2", [1.0])
    log = stored(ExecutionLog).get()
    ExecutionLog.objects.filter(pk=log.pk).update(redacted_paths=["customer.email"])
    change = client.get(reverse("admin:monitoring_executionlog_change", args=[log.pk]))
    assert "input redacted: customer.email" in change.content.decode()
