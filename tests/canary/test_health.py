import pytest
from django.test import Client


def test_healthz_needs_nothing(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_dependencies(client: Client, settings: object) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"] == "ok"
    if settings.REDIS_URL:  # type: ignore[attr-defined]
        assert body["checks"]["redis"] == "ok"
