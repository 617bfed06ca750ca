"""The role matrix: every endpoint x {anonymous, viewer, approver, admin}."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, RuleSet
from tests.samples import V1_RULES

pytestmark = pytest.mark.django_db

RANK = {None: 0, "viewer": 1, "approver": 2, "admin": 3}


@dataclass
class World:
    ruleset: RuleSet
    active: Deployment
    canary: Deployment
    draft: Deployment
    lone_active: Deployment


@pytest.fixture
def world(ruleset: RuleSet, active_v1: Deployment, canary_v2: Deployment) -> World:
    services.ruleset_version_create(
        ruleset=ruleset, version="v3.0.0", rules=V1_RULES, default=None, actor="t"
    )
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="t")
    other = services.ruleset_create(name="other", actor="t")
    services.ruleset_version_create(
        ruleset=other, version="1.0.0", rules=V1_RULES, default=None, actor="t"
    )
    lone = services.deployment_create(ruleset_id=other.pk, version="1.0.0", actor="t")
    lone = services.deployment_promote(deployment_id=lone.pk, actor="t")
    return World(ruleset, active_v1, canary_v2, draft, lone)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: Callable[[World], str]
    body: dict[str, Any] | None
    minimum: str
    success: int


ENDPOINTS = {
    "list rulesets": Endpoint("get", lambda w: "/api/v1/rulesets", None, "viewer", 200),
    "create ruleset": Endpoint(
        "post", lambda w: "/api/v1/rulesets", {"name": "new"}, "approver", 201
    ),
    "get ruleset": Endpoint(
        "get", lambda w: f"/api/v1/rulesets/{w.ruleset.pk}", None, "viewer", 200
    ),
    "list versions": Endpoint(
        "get", lambda w: f"/api/v1/rulesets/{w.ruleset.pk}/versions", None, "viewer", 200
    ),
    "create version": Endpoint(
        "post",
        lambda w: f"/api/v1/rulesets/{w.ruleset.pk}/versions",
        {"version": "v4.0.0", "rules": V1_RULES},
        "approver",
        201,
    ),
    "test ruleset": Endpoint(
        "post",
        lambda w: f"/api/v1/rulesets/{w.ruleset.pk}/test",
        {"input": {"temperature": 30}},
        "approver",
        200,
    ),
    "list deployments": Endpoint("get", lambda w: "/api/v1/deployments", None, "viewer", 200),
    "create deployment": Endpoint(
        "post",
        lambda w: "/api/v1/deployments",
        {"ruleset_id": None, "version": "v3.0.0"},
        "approver",
        201,
    ),
    "get deployment": Endpoint(
        "get", lambda w: f"/api/v1/deployments/{w.canary.pk}", None, "viewer", 200
    ),
    "events": Endpoint(
        "get", lambda w: f"/api/v1/deployments/{w.canary.pk}/events", None, "viewer", 200
    ),
    "update draft": Endpoint(
        "patch", lambda w: f"/api/v1/deployments/{w.draft.pk}", {"changelog": "x"}, "approver", 200
    ),
    "delete draft": Endpoint(
        "delete", lambda w: f"/api/v1/deployments/{w.draft.pk}", None, "admin", 204
    ),
    "start canary": Endpoint(
        "post",
        lambda w: f"/api/v1/deployments/{w.lone_active.pk}/start-canary",
        {"canary_pct": 10},
        "approver",
        409,  # authorised, then refused by the lifecycle: proves the role gate came first
    ),
    "traffic": Endpoint(
        "put",
        lambda w: f"/api/v1/deployments/{w.canary.pk}/traffic",
        {"traffic_percentage": 50},
        "approver",
        200,
    ),
    "promote": Endpoint(
        "post", lambda w: f"/api/v1/deployments/{w.canary.pk}/promote", None, "approver", 200
    ),
    "rollback": Endpoint(
        "post",
        lambda w: f"/api/v1/deployments/{w.canary.pk}/rollback",
        {"reason": "bad"},
        "approver",
        200,
    ),
    "deprecate": Endpoint(
        "post", lambda w: f"/api/v1/deployments/{w.lone_active.pk}/deprecate", None, "approver", 200
    ),
}


@pytest.mark.parametrize("role", [None, "viewer", "approver", "admin"])
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_role_matrix(
    name: str, role: str | None, world: World, client_for: Callable[[str | None], APIClient]
) -> None:
    endpoint = ENDPOINTS[name]
    body = dict(endpoint.body) if endpoint.body is not None else None
    if body is not None and "ruleset_id" in body:
        body["ruleset_id"] = str(world.ruleset.pk)
    client = client_for(role)
    response = getattr(client, endpoint.method)(endpoint.path(world), body, format="json")
    if role is None:
        expected = 401
    elif RANK[role] < RANK[endpoint.minimum]:
        expected = 403
    else:
        expected = endpoint.success
    assert response.status_code == expected, (name, role, response.content)
    if expected in (401, 403):
        assert response.json()["detail"]
        assert response.json()["code"] in ("not_authenticated", "permission_denied")


def test_start_canary_succeeds_for_an_approver(
    world: World, client_for: Callable[[str | None], APIClient]
) -> None:
    services.deployment_rollback(deployment_id=world.canary.pk, reason="make room", actor="t")
    response = client_for("approver").post(
        f"/api/v1/deployments/{world.draft.pk}/start-canary", {"canary_pct": 10}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "canary"


def test_wrong_token_is_401(world: World) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-token")
    response = client.get("/api/v1/deployments")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_authenticated_user_without_a_role_is_403(world: World) -> None:
    from django.contrib.auth import get_user_model

    from tests.accounts import issue_token

    user = get_user_model().objects.create(username="rule-engine")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user)}")
    assert client.get("/api/v1/deployments").status_code == 403
