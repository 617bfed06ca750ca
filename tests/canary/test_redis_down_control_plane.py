"""The control plane with Redis unreachable: committed changes answer as committed.

Redis here is an address nothing listens on, configured for the cache, the breaker,
the data plane and the Celery broker alike, as when the Redis server is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kombu import pools as kombu_pools
from rest_framework.test import APIClient

from canary.celery import app as celery_app
from canary.redis import reset_redis_client
from deployments import services as lifecycle
from deployments.models import Deployment
from monitoring.models import ExecutionLog
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import free_port
from tests.stored import stored

pytestmark = pytest.mark.django_db


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Celery publishes to ``url`` (its connection and producer pools made anew)."""

    def reset_pools() -> None:
        if celery_app._pool is not None:
            celery_app._pool.force_close_all()
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
        # NOTE: Celery's pools live in kombu's process-wide groups, keyed by broker
        # URL; a closed one left there would be handed out again for that URL.
        kombu_pools.reset()

    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    reset_pools()
    try:
        yield
    finally:
        celery_app.conf.broker_url = previous
        reset_pools()


@pytest.fixture
def redis_down(settings: Any) -> Iterator[str]:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = url
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.2},
        }
    }
    reset_redis_client()
    with broker_at(url):
        yield url
    reset_redis_client()


def _rollback(client: APIClient, canary: Deployment) -> Any:
    return client.post(
        f"/api/v1/deployments/{canary.pk}/rollback",
        {"reason": "Redis is down and v2 is bad"},
        format="json",
    )


def test_a_rollback_commits_and_answers_200(
    roles: None, approver: APIClient, redis_down: str
) -> None:
    canary = make_canary("rollback-while-down", traffic=50)
    response = _rollback(approver, canary)
    assert response.status_code == 200, response.content
    assert Deployment.objects.get(pk=canary.pk).status == "rolled_back"


def test_health_degrades_with_a_warning(roles: None, viewer: APIClient, redis_down: str) -> None:
    canary = make_canary("health-while-down", traffic=50)
    response = viewer.get(f"/api/v1/deployments/{canary.pk}/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["circuit_breaker_state"] == "UNKNOWN"
    assert body["health_status"] == "degraded"
    assert any("Redis is unreachable" in warning for warning in body["warnings"])


def test_replay_is_a_503_with_a_retry_hint(roles: None, approver: APIClient) -> None:
    """Only the broker is down here: the executions to replay must be stored first."""
    canary = make_canary("replay-while-down", traffic=100, compensation_strategy="manual")
    for n in range(3):
        approver.post(
            f"/api/v1/rulesets/{canary.ruleset_id}/execute",
            {"input": {"temperature": 30}, "user_id": f"u{n}"},
            format="json",
        )
    lifecycle.deployment_rollback(deployment_id=canary.pk, reason="bad", actor="t")
    flagged = stored(ExecutionLog).filter(deployment=canary, needs_reprocess=True)
    assert flagged.count() == 3
    with broker_at(f"redis://127.0.0.1:{free_port()}/0"):
        response = approver.post(f"/api/v1/deployments/{canary.pk}/compensation/replay")
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "unavailable"
    assert body["retry_after"] == 30
    assert response["Retry-After"] == "30"
    assert flagged.filter(reprocessed_at__isnull=False).count() == 0
