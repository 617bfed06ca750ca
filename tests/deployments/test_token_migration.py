"""Moving to hashed tokens: every token issued before keeps working; no plain text is left."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

BEFORE = [("deployments", "0005_ruleset_routing_generation")]
AFTER = [("deployments", "0006_hash_api_tokens")]


@pytest.fixture
def latest_schema_after() -> Iterator[None]:
    """Migrating back to BEFORE unapplies every later migration; put them all back after."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_tokens_issued_in_plain_text_still_authenticate(latest_schema_after: None) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_apps = executor.loader.project_state(BEFORE).apps
    user = old_apps.get_model("auth", "User").objects.create(username="legacy-engine")
    plain = "0123456789abcdef0123456789abcdef01234567"  # a DRF token: 40 hex characters
    old_apps.get_model("authtoken", "Token").objects.create(key=plain, user_id=user.pk)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new_apps = executor.loader.project_state(AFTER).apps
    assert not new_apps.get_model("authtoken", "Token").objects.exists()
    stored = new_apps.get_model("knox", "AuthToken").objects.get(user_id=user.pk)
    assert plain not in (stored.digest, stored.token_key)
    assert stored.expiry is None

    # NOTE: back to every app's newest migration (migrating deployments to 0005
    # also unapplied the later migrations of deployments and of monitoring).
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert client.get("/api/v1/deployments").status_code == 403  # known, and has no role
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain[:-1]}0")
    assert client.get("/api/v1/deployments").status_code == 401
