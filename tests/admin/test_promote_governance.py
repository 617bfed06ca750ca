"""The admin's promote button under four eyes and enforced readiness (SPEC 9.3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from deployments import services
from deployments.models import Deployment, DeploymentEvent
from tests.admin.conftest import make_staff
from tests.admin.test_deployment_actions import ACKNOWLEDGED, action_url, fresh, messages_of

pytestmark = pytest.mark.django_db


def test_promote_records_an_approval_then_a_second_approver_promotes(
    console: Callable[[str], Client], draft_v2: Deployment
) -> None:
    services.deployment_update(
        deployment_id=draft_v2.pk, canary_config={"required_approvals": 2}, actor="t"
    )
    canary = services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
    first = console("approver").post(action_url(canary, "promote"), ACKNOWLEDGED)
    assert fresh(canary).status == "canary"
    assert any(
        "Approval recorded, promotion pending: 1 of 2 approvals (approver-console)" in message
        for message in messages_of(first)
    )
    again = console("approver").post(action_url(canary, "promote"), ACKNOWLEDGED)
    assert any("already approved" in message for message in messages_of(again))

    other = Client()
    other.force_login(make_staff("second-approver", "approver"))
    done = other.post(action_url(canary, "promote"), ACKNOWLEDGED)
    assert any("Promoted" in message for message in messages_of(done))
    assert fresh(canary).status == "active"
    assert DeploymentEvent.objects.filter(deployment=canary, action="promote").count() == 1


def test_unready_canary_is_promoted_only_with_a_reason(
    console: Callable[[str], Client], draft_v2: Deployment
) -> None:
    services.deployment_update(
        deployment_id=draft_v2.pk, canary_config={"enforce_readiness": True}, actor="t"
    )
    canary = services.deployment_start_canary(deployment_id=draft_v2.pk, actor="t")
    refused = console("approver").post(action_url(canary, "promote"), {"expected_status": "canary"})
    assert fresh(canary).status == "canary"
    assert "This field is required" in refused.content.decode()
    console("approver").post(action_url(canary, "promote"), ACKNOWLEDGED)
    assert fresh(canary).status == "active"
    event = DeploymentEvent.objects.get(deployment=canary, action="promote")
    assert event.payload["override_reason"] == "tested"
    assert "time_at_traffic" in str(event.payload)
