"""The deployment list and page: what an approver reads before acting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deployments import admin_panels, services
from deployments.models import Deployment, RuleSet
from tests.monitoring.logs import add_logs
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]
LIST_URL = reverse("admin:deployments_deployment_changelist")


def page_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_change", args=[deployment.pk])


def test_page_shows_comparison_health_and_recommendation(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v1", [10.0] * 80)
    add_logs(canary_v2, "v2", [12.0] * 80, errors=20)
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    assert 'id="canary-comparison"' in body
    cell = '<td class="canary-nowrap">'
    assert f"{cell}80</td>{cell}80</td>" in body  # requests v1, v2
    assert f"{cell}100.00%</td>{cell}75.00%</td>" in body  # success rates
    assert f"{cell}10.0 ms</td>{cell}12.0 ms</td>" in body  # p95, three significant digits
    assert 'data-recommendation="rollback"' in body
    assert "two-proportion" in body
    assert "canary-health-unhealthy" in body
    assert "Circuit breaker: <strong" in body
    assert "above the 5.00% threshold" in body  # the health warning, in words


def test_page_without_measurements_says_so(console: Console, draft_v2: Deployment):
    body = console("viewer").get(page_url(draft_v2)).content.decode()
    assert "Nothing measured" in body


def test_page_shows_event_history_and_links(console: Console, canary_v2: Deployment):
    services.deployment_set_traffic(
        deployment_id=canary_v2.pk, traffic_percentage=30, actor="tests", reason="looks fine"
    )
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    assert body.count('class="canary-event"') == 3  # create, start canary, traffic
    assert "Traffic changed" in body and "traffic 10% → 30%" in body
    assert '<td class="canary-event-reason">looks fine</td>' in body
    assert f"/admin/assignments/assignment/?deployment={canary_v2.pk}" in body
    assert f"/admin/monitoring/executionlog/?deployment={canary_v2.pk}" in body


def test_a_failing_measurement_provider_leaves_the_page_usable(
    console: Console, canary_v2: Deployment, monkeypatch: pytest.MonkeyPatch
):
    def broken(deployment: Deployment) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(admin_panels, "measurement_provider", broken)
    monkeypatch.setattr(admin_panels, "health_provider", broken)
    response = console("approver").get(page_url(canary_v2))
    assert response.status_code == 200
    assert "Nothing measured" in response.content.decode()
    assert console("approver").get(LIST_URL).status_code == 200


def test_list_shows_badges_traffic_and_canary_health(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [5.0] * 30)
    body = console("viewer").get(LIST_URL).content.decode()
    assert 'class="canary-badge canary-status-canary"' in body
    assert 'class="canary-badge canary-status-active"' in body
    assert "canary-health-healthy" in body and "0.00% errors" in body
    assert '<td class="field-traffic">10%</td>' in body


def test_list_filters_and_search(console: Console, canary_v2: Deployment):
    client = console("viewer")
    canary_only = client.get(LIST_URL, {"status__exact": "canary"}).content.decode()
    assert "canary-status-canary" in canary_only and "canary-status-active" not in canary_only
    found = client.get(LIST_URL, {"q": "v1.0.0"}).content.decode()
    assert "canary-status-active" in found and "canary-status-canary" not in found
    by_ruleset = client.get(LIST_URL, {"ruleset__id__exact": str(canary_v2.ruleset_id)})
    assert by_ruleset.status_code == 200


def _more_rule_sets(count: int, start: int) -> None:
    """Each: an active v1, a rolled-back canary and a draft: every non-canary status."""
    for index in range(start, start + count):
        ruleset = services.ruleset_create(name=f"extra-{index}", actor="t")
        for version, rules in (("1.0.0", V1_RULES), ("2.0.0", V2_RULES), ("3.0.0", V1_RULES)):
            services.ruleset_version_create(
                ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
            )
        first = services.deployment_create(ruleset_id=ruleset.pk, version="1.0.0", actor="t")
        services.deployment_promote(deployment_id=first.pk, actor="t")
        second = services.deployment_create(ruleset_id=ruleset.pk, version="2.0.0", actor="t")
        services.deployment_start_canary(deployment_id=second.pk, canary_pct=5, actor="t")
        services.deployment_rollback(deployment_id=second.pk, reason="r", actor="t")
        services.deployment_create(ruleset_id=ruleset.pk, version="3.0.0", actor="t")


def _list_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST_URL)
    assert response.status_code == 200
    return len(queries)


def test_list_query_count_stays_flat_as_rows_grow(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [5.0] * 30)
    client = console("approver")
    client.get(LIST_URL)  # warm up: session, content types
    _more_rule_sets(2, start=0)
    few = _list_queries(client)
    _more_rule_sets(8, start=2)
    many = _list_queries(client)
    assert Deployment.objects.count() == 2 + 3 * 10
    assert many == few


def test_ruleset_page_lists_versions_and_links_deployments(console: Console, ruleset: RuleSet):
    url = reverse("admin:deployments_ruleset_change", args=[ruleset.pk])
    body = console("viewer").get(url).content.decode()
    assert "v1.0.0" in body and "v2.0.0" in body
    assert f"?ruleset__id__exact={ruleset.pk}" in body
