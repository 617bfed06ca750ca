"""``RolePermission``: OPTIONS describes an endpoint to any authenticated caller."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from deployments.models import Deployment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "suffix",
    ["compensation", "compensation/complete", "compensation/replay", "metrics", "assignments"],
)
def test_viewer_gets_options_on_every_deployment_path(
    suffix: str, canary_v2: Deployment, viewer: APIClient
) -> None:
    response = viewer.options(f"/api/v1/deployments/{canary_v2.pk}/{suffix}")
    assert response.status_code == 200, response.content


def test_options_still_needs_a_token(
    canary_v2: Deployment, client_for: Callable[[str | None], APIClient]
) -> None:
    response = client_for(None).options(f"/api/v1/deployments/{canary_v2.pk}/compensation/replay")
    assert response.status_code == 401


def test_options_does_not_open_the_action(canary_v2: Deployment, viewer: APIClient) -> None:
    response = viewer.post(f"/api/v1/deployments/{canary_v2.pk}/compensation/replay")
    assert response.status_code == 403
