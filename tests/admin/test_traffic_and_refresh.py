"""The traffic slider, the live block's endpoint and the Grafana link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from deployments.models import Deployment
from tests.monitoring.logs import add_logs

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def page_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_change", args=[deployment.pk])


def live_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_live", args=[deployment.pk])


def test_traffic_is_a_slider_with_steps_presets_and_the_current_value(
    console: Console, canary_v2: Deployment
):
    url = reverse("admin:deployments_deployment_action", args=[canary_v2.pk, "traffic"])
    body = console("approver").get(url).content.decode()
    assert 'type="range" name="traffic_percentage" value="20"' in body
    assert 'list="id_traffic_percentage_steps"' in body
    assert '<option value="30" label="30%">' in body
    presets = [f'data-canary-preset="{value}"' for value in (20, 25, 50, 100)]
    assert all(preset in body for preset in presets)
    assert 'data-canary-preset="10"' not in body  # the current value is no preset
    assert "now 10% · steps of 10" in body


def test_the_canary_page_refreshes_its_live_block(console: Console, canary_v2: Deployment):
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    assert f'data-refresh-url="{live_url(canary_v2)}"' in body
    assert 'data-refresh-seconds="30"' in body


def test_an_ended_deployment_does_not_refresh(console: Console, active_v1: Deployment):
    body = console("viewer").get(page_url(active_v1)).content.decode()
    assert "data-refresh-url" not in body


def test_the_live_endpoint_answers_the_fragment_with_status_headers(
    console: Console, canary_v2: Deployment
):
    add_logs(canary_v2, "v1", [10.0] * 7)
    add_logs(canary_v2, "v2", [10.0] * 9)
    response = console("viewer").get(live_url(canary_v2))
    assert response.status_code == 200
    assert (response["X-Canary-Status"], response["X-Canary-Traffic"]) == ("canary", "10")
    body = response.content.decode()
    assert '<td class="canary-nowrap">7</td><td class="canary-nowrap">9</td>' in body
    assert "<html" not in body and 'id="canary-monitor"' in body


def test_the_live_endpoint_refreshes_the_verdict_with_the_numbers(
    console: Console, canary_v2: Deployment
):
    client = console("viewer")
    assert "Keep collecting data" in client.get(live_url(canary_v2)).content.decode()
    canary = Deployment.objects.select_related("baseline").get(pk=canary_v2.pk)
    add_logs(canary, "v1", [10.0] * 200, errors=2)
    add_logs(canary, "v2", [10.0] * 200, errors=80)
    body = client.get(live_url(canary_v2)).content.decode()
    slot = body.split('data-canary-slot="canary-verdict-slot">')[1].split("</section>")[0]
    assert 'data-recommendation="rollback"' in slot and "Roll back:" in slot


def test_the_live_endpoint_needs_a_console_login(client: Client, canary_v2: Deployment):
    response = client.get(live_url(canary_v2))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_grafana_link_only_when_configured(console: Console, canary_v2: Deployment, settings: Any):
    client = console("viewer")
    assert 'id="canary-grafana"' not in client.get(page_url(canary_v2)).content.decode()
    settings.CANARY_GRAFANA_URL = "http://grafana.example:3000"
    body = client.get(page_url(canary_v2)).content.decode()
    expected = (
        "http://grafana.example:3000/d/canary-overview/canary-deployments"
        f"?var-deployment={canary_v2.pk}"
    )
    assert f'href="{expected}" id="canary-grafana"' in body
