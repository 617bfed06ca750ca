"""The active deployment's page during its bake after promotion (SPEC 10.3)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment
from tests.monitoring.test_bake import FAILING_IN_V2, GOOD, execute, promoted_with_bake

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def page(console: Console, deployment: Deployment) -> str:
    response = console("viewer").get(
        reverse("admin:deployments_deployment_change", args=[deployment.pk])
    )
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_says_baking_until_with_the_pairs(console: Console) -> None:
    promoted = promoted_with_bake("bake-console")
    execute(promoted, FAILING_IN_V2, "u1")
    execute(promoted, GOOD, "u2")
    body = page(console, promoted)
    assert 'id="canary-bake"' in body
    assert "Baking until" in body
    assert "v1.0.0 runs in shadow beside it" in body
    assert "<strong>2</strong> inputs evaluated by both since the promotion" in body
    assert "only this version failed: <strong>1</strong>" in body
    # The previous deployment's page, and the page once the bake is over, say nothing of it.
    assert 'id="canary-bake"' not in page(console, promoted.baseline)
    Deployment.objects.filter(pk=promoted.pk).update(
        promoted_at=timezone.now() - timedelta(minutes=61)
    )
    assert 'id="canary-bake"' not in page(console, promoted)
