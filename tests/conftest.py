"""Shared fixtures: users in each role with real tokens, and lifecycle states built by services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from canary.roles import sync_roles
from deployments import services
from deployments.models import Deployment, RuleSet
from tests.accounts import create_user
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES

ROLES = ("viewer", "approver", "admin")


@pytest.fixture
def roles(db: Any) -> None:
    # NOTE: transactional tests flush the groups the data migration made.
    sync_roles()


@pytest.fixture
def client_for(roles: None) -> Callable[[str | None], APIClient]:
    tokens: dict[str, str] = {}

    def make(role: str | None) -> APIClient:
        client = APIClient()
        if role is None:
            return client
        if role not in tokens:
            tokens[role] = create_user(f"{role}-user", role)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[role]}")
        return client

    return make


@pytest.fixture
def approver(client_for: Callable[[str | None], APIClient]) -> APIClient:
    return client_for("approver")


@pytest.fixture
def viewer(client_for: Callable[[str | None], APIClient]) -> APIClient:
    return client_for("viewer")


@pytest.fixture
def admin_api(client_for: Callable[[str | None], APIClient]) -> APIClient:
    return client_for("admin")


@pytest.fixture
def ruleset(db: Any) -> RuleSet:
    ruleset = services.ruleset_create(name="thermostat", description="Alerts", actor="tests")
    services.ruleset_version_create(
        ruleset=ruleset, version="v1.0.0", rules=V1_RULES, default=DEFAULT_OUTPUT, actor="tests"
    )
    services.ruleset_version_create(
        ruleset=ruleset, version="v2.0.0", rules=V2_RULES, default=DEFAULT_OUTPUT, actor="tests"
    )
    return ruleset


@pytest.fixture
def active_v1(ruleset: RuleSet) -> Deployment:
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="tests")
    return services.deployment_promote(deployment_id=draft.pk, actor="tests")


@pytest.fixture
def draft_v2(ruleset: RuleSet, active_v1: Deployment) -> Deployment:
    return services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="tests")


@pytest.fixture
def canary_v2(draft_v2: Deployment) -> Deployment:
    return services.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=10, actor="tests")


@pytest.fixture(scope="session", autouse=True)
def clean_redis() -> None:
    """Start every run from an empty Redis database (breaker state, routing cache)."""
    from django.conf import settings

    if settings.REDIS_URL:
        from canary.redis import redis_client

        redis_client().flushdb()
