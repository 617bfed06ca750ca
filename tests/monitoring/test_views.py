"""``/metrics``: open by default, behind a bearer token when ``CANARY_METRICS_TOKEN`` is set."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TOKEN = "scrape-secret-0123456789"


def test_open_when_no_token_is_configured(client: Client, settings: Any) -> None:
    settings.CANARY_METRICS_TOKEN = ""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "header",
    [None, "", f"Token {TOKEN}", "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}"],
)
def test_a_scrape_without_the_token_is_a_json_401(
    client: Client, settings: Any, header: str | None
) -> None:
    settings.CANARY_METRICS_TOKEN = TOKEN
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "canary_" not in response.content.decode()


def test_a_scrape_with_the_token_gets_the_metrics(client: Client, settings: Any) -> None:
    settings.CANARY_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
