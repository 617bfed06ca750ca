"""The console's home: each running canary's verdict, readiness, approvals and error rates,
the compensations still owed, and the block's own refresh endpoint."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from deployments import services
from deployments.models import Deployment
from tests.admin.conftest import make_staff
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def running_block(client: Client) -> str:
    body = client.get(reverse("admin:index")).content.decode()
    return body.split('id="canary-running"')[1].split("</table>")[0]


def test_a_regressing_canary_reads_roll_back_not_ready_with_both_error_rates(
    console: Console, canary_v2: Deployment
):
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [10.0] * 200, errors=2)
    add_logs(canary, "v2", [10.0] * 200, errors=80)
    row = running_block(console("viewer"))
    assert 'class="canary-badge canary-tone-error"' in row and ">Roll back</span>" in row
    assert "checks pass" in row and "time at traffic" in row
    assert "0 of 1" in row
    assert "v1 1.00%<br>v2 40.00%" in row


def test_approvals_count_towards_the_required_number(
    console: Console, draft_v2: Deployment, roles: None
):
    services.deployment_update(
        deployment_id=draft_v2.pk, canary_config={"required_approvals": 2}, actor="t"
    )
    services.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=10, actor="t")
    services.deployment_promote_or_approve(
        deployment_id=draft_v2.pk, actor=make_staff("anna", "approver"), override_reason="ok"
    )
    row = running_block(console("viewer"))
    assert "1 of 2: anna" in row


def test_compensation_still_owed_is_listed_with_its_counts(console: Console, canary_v2: Deployment):
    Deployment.objects.filter(pk=canary_v2.pk).update(compensation_strategy="manual")
    add_logs(canary_v2, "v2", [1.0] * 12)
    services.deployment_rollback(deployment_id=canary_v2.pk, reason="bad", actor="t")
    body = console("viewer").get(reverse("admin:index")).content.decode()
    block = body.split('id="canary-compensations"')[1].split("</table>")[0]
    assert "thermostat v2.0.0" in block and "<td>12</td><td>0</td><td>0</td>" in block
    assert "No canary is running." in body

    services.deployment_compensation_complete(deployment_id=canary_v2.pk, actor="t")
    body = console("viewer").get(reverse("admin:index")).content.decode()
    assert 'id="canary-compensations"' not in body


def test_the_home_block_refreshes_itself_from_its_own_endpoint(
    console: Console, canary_v2: Deployment
):
    url = reverse("admin:deployments_deployment_running")
    index = console("viewer").get(reverse("admin:index")).content.decode()
    assert f'id="canary-home" data-refresh-url="{url}" data-refresh-seconds="30"' in index
    assert "deployments/admin.js" in index
    response = console("viewer").get(url)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    body = response.content.decode()
    assert "<html" not in body and 'id="canary-running"' in body and "v2.0.0 / v1.0.0" in body


def test_the_home_block_endpoint_needs_the_view_permission(client: Client, canary_v2: Deployment):
    url = reverse("admin:deployments_deployment_running")
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    nobody = make_staff("nobody", "viewer")
    nobody.groups.clear()
    client.force_login(nobody)
    assert client.get(url).status_code == 403
