"""The execution-log list at any volume: no COUNT(*), no facet counts, a time window by default.

Speed itself is measured in ``bench/console`` (docs/performance.md); here, the
queries that made the list slow at two million rows must not be issued at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]
COUNT = re.compile(r"\bCOUNT\s*\(", re.IGNORECASE)


def listed(client: Client, captured: CaptureQueriesContext, **query: str) -> list[object]:
    url = reverse("admin:monitoring_executionlog_changelist")
    with captured:
        response = client.get(url, query)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"_facets": "1"},
        {"success__exact": "0"},
        {"q": "boom"},
        {"o": "4"},
        {"within": "7d"},
    ],
)
def test_the_log_list_counts_nothing_and_shows_no_facets(
    console: Console, canary_v2: Deployment, query: dict[str, str]
):
    add_logs(canary_v2, "v2", [3.0, 4.0, 5.0], errors=1)
    captured = CaptureQueriesContext(connection)
    listed(console("viewer"), captured, **query)
    log_queries = [
        q["sql"] for q in captured.captured_queries if "monitoring_executionlog" in q["sql"]
    ]
    assert log_queries, "the list read the log table"
    counted = [sql for sql in log_queries if COUNT.search(sql)]
    assert counted == [], f"the list counted the log table: {counted}"


def test_the_log_list_shows_the_last_hour_unless_asked(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [3.0, 4.0])
    add_logs(canary_v2, "v2", [9.0], at=timezone.now() - timedelta(hours=3))
    client = console("viewer")
    captured = CaptureQueriesContext(connection)
    assert len(listed(client, captured)) == 2
    assert len(listed(client, captured, within="6h")) == 3
    body = client.get(reverse("admin:monitoring_executionlog_changelist")).content.decode()
    assert "last hour" in body and "last 6 h" in body
    assert "Show counts" not in body


def test_only_flagged_rows_say_flagged(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [3.0, 4.0])
    from monitoring.models import ExecutionLog

    first = ExecutionLog.objects.order_by("id").first()
    ExecutionLog.objects.filter(pk=first.pk).update(needs_reprocess=True)
    body = console("viewer").get(reverse("admin:monitoring_executionlog_changelist")).content
    assert body.decode().count(">flagged</span>") == 1
    assert b"icon-no.svg" not in body


def test_the_log_list_says_its_size_is_an_estimate_with_separators(
    console: Console, canary_v2: Deployment
):
    add_logs(canary_v2, "v2", [3.0, 4.0])
    body = console("viewer").get(reverse("admin:monitoring_executionlog_changelist")).content
    text = body.decode().split('id="canary-log-estimate">')[1].split("</span>")[0]
    assert text.startswith("about ") and text.endswith("in this window (an estimate)")


def test_a_search_reads_at_most_a_day_and_says_so(console: Console, canary_v2: Deployment):
    add_logs(canary_v2, "v2", [3.0], errors=1)
    add_logs(canary_v2, "v2", [9.0], errors=1, at=timezone.now() - timedelta(days=3))
    client = console("viewer")
    captured = CaptureQueriesContext(connection)
    assert len(listed(client, captured, within="7d")) == 2
    assert len(listed(client, captured, within="7d", q="boom")) == 1
    response = client.get(
        reverse("admin:monitoring_executionlog_changelist"), {"within": "7d", "q": "boom"}
    )
    assert "Searches cover at most the last 24 h" in response.content.decode()
