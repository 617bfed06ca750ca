"""Lifecycle actions in the admin console: roles, confirmation, double submits, refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from deployments import services
from deployments.models import Deployment, DeploymentEvent, RuleSet
from tests.samples import V1_RULES

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def action_url(deployment: Deployment, action: str) -> str:
    return reverse("admin:deployments_deployment_action", args=[deployment.pk, action])


def page_url(deployment: Deployment) -> str:
    return reverse("admin:deployments_deployment_change", args=[deployment.pk])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def fresh(deployment: Deployment) -> Deployment:
    return Deployment.objects.get(pk=deployment.pk)


def events(deployment: Deployment) -> int:
    return DeploymentEvent.objects.filter(deployment_id=deployment.pk).count()


@pytest.fixture
def draft_v3(ruleset: RuleSet, canary_v2: Deployment) -> Deployment:
    services.ruleset_version_create(
        ruleset=ruleset, version="v3.0.0", rules=V1_RULES, default=None, actor="t"
    )
    return services.deployment_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="t")


# --- what each role sees ------------------------------------------------------------------


def test_viewer_sees_the_page_without_action_buttons(console: Console, canary_v2: Deployment):
    response = console("viewer").get(page_url(canary_v2))
    assert response.status_code == 200
    body = response.content.decode()
    assert "canary-button" not in body
    assert "can look but not act" in body
    assert 'name="_save"' not in body  # fields are read-only for every role


def test_approver_sees_the_actions_the_status_allows(console: Console, canary_v2: Deployment):
    body = console("approver").get(page_url(canary_v2)).content.decode()
    for action in ("traffic", "promote", "rollback"):
        assert action_url(canary_v2, action) in body
    for action in ("start-canary", "deprecate", "delete"):
        assert action_url(canary_v2, action) not in body
    assert 'name="_save"' not in body


def test_draft_offers_start_canary_and_only_admin_may_delete(
    console: Console, draft_v2: Deployment
):
    approver = console("approver").get(page_url(draft_v2)).content.decode()
    assert action_url(draft_v2, "start-canary") in approver
    assert action_url(draft_v2, "promote") not in approver  # v1 is active: not a first release
    assert action_url(draft_v2, "delete") not in approver
    admin = console("admin").get(page_url(draft_v2)).content.decode()
    assert action_url(draft_v2, "delete") in admin


FORGED = {
    "start-canary": {"expected_status": "draft", "canary_pct": "10"},
    "traffic": {"expected_status": "canary", "traffic_percentage": "50", "expected_traffic": "10"},
    "promote": {"expected_status": "canary"},
    "rollback": {"expected_status": "canary", "reason": "forged", "apply_compensation": "on"},
    "deprecate": {"expected_status": "active"},
    "delete": {"expected_status": "draft"},
}


@pytest.mark.parametrize("action", sorted(FORGED))
def test_viewer_forged_post_is_refused_and_changes_nothing(
    console: Console, draft_v2: Deployment, action: str
):
    target = draft_v2 if action in ("start-canary", "delete") else None
    if target is None:
        target = services.deployment_start_canary(
            deployment_id=draft_v2.pk, canary_pct=10, actor="t"
        )
        if action == "deprecate":
            target = target.baseline
    before = (fresh(target).status, fresh(target).traffic_percentage, events(target))
    client = console("viewer")
    assert client.get(action_url(target, action)).status_code == 403
    response = client.post(action_url(target, action), FORGED[action])
    assert response.status_code == 403
    after = (fresh(target).status, fresh(target).traffic_percentage, events(target))
    assert after == before


def test_approver_may_not_delete_a_draft(console: Console, draft_v2: Deployment):
    response = console("approver").post(action_url(draft_v2, "delete"), FORGED["delete"])
    assert response.status_code == 403
    assert Deployment.objects.filter(pk=draft_v2.pk).exists()


def test_admin_deletes_a_draft(console: Console, draft_v2: Deployment):
    response = console("admin").post(action_url(draft_v2, "delete"), FORGED["delete"])
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:deployments_deployment_changelist")
    assert not Deployment.objects.filter(pk=draft_v2.pk).exists()
    assert any("Deleted the draft" in message for message in messages_of(response))


def test_anonymous_is_sent_to_the_login_page(client: Client, canary_v2: Deployment):
    response = client.post(action_url(canary_v2, "promote"), FORGED["promote"])
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]
    assert fresh(canary_v2).status == "canary"


def test_action_posts_are_csrf_protected(console: Console, canary_v2: Deployment, roles: None):
    from tests.admin.conftest import make_staff

    client = Client(enforce_csrf_checks=True)
    client.force_login(make_staff("csrf-approver", "approver"))
    response = client.post(action_url(canary_v2, "promote"), FORGED["promote"])
    assert response.status_code == 403
    assert fresh(canary_v2).status == "canary"


# --- confirmation step ----------------------------------------------------------------------


def test_confirmation_states_the_consequence(console: Console, canary_v2: Deployment):
    response = console("approver").get(action_url(canary_v2, "promote"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "v2.0.0 will serve 100% of traffic; v1.0.0 will be deprecated." in body
    assert 'name="expected_status" value="canary"' in body
    assert "currently recommends" in body and "collect_more_data" in body
    assert fresh(canary_v2).status == "canary"  # looking changes nothing


def test_rollback_confirmation_explains_compensation(console: Console, canary_v2: Deployment):
    body = console("approver").get(action_url(canary_v2, "rollback")).content.decode()
    assert "v1.0.0 serves everyone" in body
    assert "Roll back only" in body
    assert 'name="apply_compensation"' in body and "checked" in body


def test_confirmation_of_an_action_the_status_forbids_redirects_with_a_message(
    console: Console, active_v1: Deployment
):
    response = console("approver").get(action_url(active_v1, "promote"))
    assert response.status_code == 302
    assert response["Location"] == page_url(active_v1)
    assert any("not possible now" in message for message in messages_of(response))


def test_unknown_action_and_unknown_deployment(console: Console, canary_v2: Deployment):
    client = console("approver")
    assert client.get(action_url(canary_v2, "explode")).status_code == 404
    url = reverse(
        "admin:deployments_deployment_action",
        args=["00000000-0000-0000-0000-000000000000", "promote"],
    )
    response = client.post(url, FORGED["promote"])
    assert response.status_code == 302
    assert any("no longer exists" in message for message in messages_of(response))


# --- the actions through the services ---------------------------------------------------------


def test_start_canary_with_targets_then_a_double_submit_does_nothing(
    console: Console, draft_v2: Deployment
):
    client = console("approver")
    data = {
        "expected_status": "draft",
        "canary_pct": "10",
        "target_user_ids": "alice, bob\nalice",
        "target_workflow_ids": "",
    }
    first = client.post(action_url(draft_v2, "start-canary"), data)
    assert first.status_code == 302 and first["Location"] == page_url(draft_v2)
    started = fresh(draft_v2)
    assert (started.status, started.traffic_percentage) == ("canary", 10)
    assert started.canary_target_filter == {"user_ids": ["alice", "bob"]}
    event = DeploymentEvent.objects.filter(deployment=draft_v2).last()
    assert (event.actor, event.from_status, event.to_status) == (
        "approver-console",
        "draft",
        "canary",
    )
    count = events(draft_v2)

    second = client.post(action_url(draft_v2, "start-canary"), data)
    assert second.status_code == 302
    assert events(draft_v2) == count
    message = messages_of(second)[-1]
    assert "Start canary refused" in message
    assert "changed from 'draft' to 'canary'" in message


def test_set_traffic_double_submit_does_nothing_twice(console: Console, canary_v2: Deployment):
    client = console("approver")
    data = {"expected_status": "canary", "traffic_percentage": "50", "expected_traffic": "10"}
    client.post(action_url(canary_v2, "traffic"), data)
    assert fresh(canary_v2).traffic_percentage == 50
    count = events(canary_v2)
    second = client.post(action_url(canary_v2, "traffic"), data)
    assert events(canary_v2) == count
    assert any("changed from 10% to 50%" in message for message in messages_of(second))


# A fresh canary is not ready (an hour at 50% first): the console asks why promote anyway.
ACKNOWLEDGED = {"expected_status": "canary", "acknowledge": "on", "override_reason": "tested"}


def test_promote_then_double_submit(console: Console, canary_v2: Deployment):
    client = console("approver")
    first = client.post(action_url(canary_v2, "promote"), ACKNOWLEDGED)
    assert any("Promoted" in message for message in messages_of(first))
    promoted = fresh(canary_v2)
    assert (promoted.status, promoted.traffic_percentage) == ("active", 100)
    assert fresh(promoted.baseline).status == "deprecated"
    count = events(canary_v2)
    second = client.post(action_url(canary_v2, "promote"), ACKNOWLEDGED)
    assert events(canary_v2) == count
    assert fresh(canary_v2).status == "active"
    assert any("Promote refused" in message for message in messages_of(second))


def test_promoting_against_the_evidence_needs_a_reason(console: Console, canary_v2: Deployment):
    client = console("approver")
    page = client.get(action_url(canary_v2, "promote")).content.decode()
    assert "I promote against the evidence" in page and "Why promote anyway" in page
    refused = client.post(action_url(canary_v2, "promote"), {"expected_status": "canary"})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    assert fresh(canary_v2).status == "canary"
    client.post(action_url(canary_v2, "promote"), ACKNOWLEDGED)
    event = DeploymentEvent.objects.get(deployment=canary_v2, action="promote")
    assert event.payload["override_reason"] == "tested"


def test_the_verdict_leads_the_canary_page(console: Console, canary_v2: Deployment):
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    assert 'id="canary-verdict"' in body
    assert 'data-recommendation="collect_more_data"' in body
    assert '<strong id="canary-verdict-headline">Keep collecting data</strong>' in body
    assert ": v2 is not yet shown as good as v1" in body
    assert "Evidence: no request yet · " in body and "computed for this page" in body


def test_stale_page_rollback_does_not_roll_back_what_a_colleague_promoted(
    console: Console, canary_v2: Deployment
):
    services.deployment_promote(deployment_id=canary_v2.pk, actor="colleague")
    response = console("approver").post(
        action_url(canary_v2, "rollback"),
        {"expected_status": "canary", "reason": "bad", "apply_compensation": "on"},
    )
    assert fresh(canary_v2).status == "active"
    assert any("changed from 'canary' to 'active'" in m for m in messages_of(response))


@pytest.mark.parametrize("reason", ["", "   "])
def test_rollback_without_a_reason_is_refused_with_a_message(
    console: Console, canary_v2: Deployment, reason: str
):
    response = console("approver").post(
        action_url(canary_v2, "rollback"),
        {"expected_status": "canary", "reason": reason, "apply_compensation": "on"},
    )
    assert response.status_code == 200  # the form again, with what was typed
    body = response.content.decode()
    assert "A reason is required to roll back." in body
    assert any("Roll back refused" in message for message in messages_of(response))
    assert fresh(canary_v2).status == "canary"


def test_rollback_with_a_reason_and_without_compensation(console: Console, canary_v2: Deployment):
    response = console("approver").post(
        action_url(canary_v2, "rollback"),
        {"expected_status": "canary", "reason": "error rate 8%"},  # checkbox unticked
    )
    assert response.status_code == 302
    rolled = fresh(canary_v2)
    assert (rolled.status, rolled.rollback_reason) == ("rolled_back", "error rate 8%")
    event = DeploymentEvent.objects.filter(deployment=canary_v2, action="rollback").get()
    assert event.payload["apply_compensation"] is False
    assert any("without compensation" in message for message in messages_of(response))


def test_conflict_is_an_admin_message_not_a_server_error(
    console: Console, canary_v2: Deployment, draft_v3: Deployment
):
    response = console("approver").post(
        action_url(draft_v3, "start-canary"), {"expected_status": "draft", "canary_pct": "10"}
    )
    assert response.status_code == 302
    assert fresh(draft_v3).status == "draft"
    [message] = messages_of(response)
    assert "Start canary refused" in message and "already in canary" in message


def test_deprecate_refused_while_a_canary_builds_on_it(console: Console, canary_v2: Deployment):
    baseline = canary_v2.baseline
    response = console("approver").post(
        action_url(baseline, "deprecate"), {"expected_status": "active"}
    )
    assert fresh(baseline).status == "active"
    assert any("Deprecate refused" in message for message in messages_of(response))


def test_invalid_input_is_refused_with_field_errors(console: Console, canary_v2: Deployment):
    client = console("approver")
    response = client.post(
        action_url(canary_v2, "traffic"),
        {"expected_status": "canary", "traffic_percentage": "150", "expected_traffic": "10"},
    )
    assert response.status_code == 200
    assert any("New canary traffic (%)" in message for message in messages_of(response))
    forged = client.post(action_url(canary_v2, "promote"), {})  # no expected_status
    assert forged.status_code == 200
    assert fresh(canary_v2).status == "canary"


def test_first_release_is_promoted_from_draft(console: Console, ruleset: RuleSet):
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    client = console("approver")
    body = client.get(page_url(draft)).content.decode()
    assert "Promote as first release" in body
    assert action_url(draft, "start-canary") not in body
    confirm = client.get(action_url(draft, "promote")).content.decode()
    assert "first release of thermostat" in confirm
    client.post(action_url(draft, "promote"), {"expected_status": "draft"})
    assert fresh(draft).status == "active"


def test_a_dark_launch_from_the_console(console: Console, draft_v2: Deployment):
    client = console("approver")
    response = client.post(
        action_url(draft_v2, "start-canary"),
        {"expected_status": "draft", "canary_pct": "0", "target_user_ids": ""},
    )
    assert response.status_code == 302
    assert (fresh(draft_v2).status, fresh(draft_v2).traffic_percentage) == ("canary", 0)
    assert "Dark launch started" in messages_of(response)[-1]
    listing = client.get(reverse("admin:deployments_deployment_changelist")).content.decode()
    assert "0% (dark launch)" in listing


def test_the_shadow_panel_shows_what_would_change(console: Console, canary_v2: Deployment):
    from assignments.router import RoutingContext
    from assignments.services import dataplane_execute

    for index in range(3):
        dataplane_execute(
            ruleset_id=canary_v2.ruleset_id,
            input={"temperature": 26, "zone": "C"},
            context=RoutingContext(user_id=f"u{index}"),
        )
    body = console("viewer").get(page_url(canary_v2)).content.decode()
    assert 'id="canary-shadow"' in body
    assert "<strong>3</strong> decided differently (100.00%, 95% interval" in body
    assert "hot → {&quot;alert&quot;: &quot;raise&quot;}" in body  # JSON, not a Python repr
    assert "finds no difference in failures (p &gt; 0.9999)" in body
    assert f"/api/v1/deployments/{canary_v2.pk}/shadow/differences" in body
