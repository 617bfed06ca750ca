"""A detected regression holds (SPEC 9.6), an approver dismisses it, and inputs failing in
both versions never open the breaker, with real processes where it matters."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.models import Deployment, DeploymentEvent
from monitoring.automation.monitor import monitor_run
from monitoring.breaker.store import breaker_store
from monitoring.models import CanaryDecision
from tests.accounts import create_user
from tests.concurrency import run_together
from tests.monitoring.logs import add_logs
from tests.monitoring.test_breaker_integration import FAILING_IN_BOTH, FAILING_INPUT, make_canary
from tests.monitoring.test_scheduler_e2e import PERIOD_SECONDS, celery_processes
from tests.servers import granian


def regress(canary: Deployment, at: Any) -> None:
    """v2 fails 8% of inputs on which v1 succeeds: 80 against none, over 1,000 pairs."""
    add_logs(canary, "v2", [1.0] * 100, errors=80, at=at, paired=True)
    add_logs(canary, "v1", [1.0] * 900, at=at, paired=True)


def held_canary(name: str) -> tuple[Deployment, Any]:
    """A canary whose regression the monitor found 20 minutes ago; no traffic since."""
    canary = make_canary(name, traffic=10, auto_rollback=False)
    found_at = timezone.now() - timedelta(minutes=20)
    regress(canary, found_at - timedelta(minutes=1))
    monitor_run(now=found_at)
    return canary, found_at


@pytest.mark.django_db
class TestTheRegressionHolds:
    def test_the_verdict_stays_rollback_when_traffic_pauses(
        self, roles: None, viewer: APIClient
    ) -> None:
        canary, _ = held_canary("held")
        assert Deployment.objects.get(pk=canary.pk).status == "canary"  # auto_rollback off
        # Twenty minutes without a request: every window is empty.
        health = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
        assert health["health_status"] == "unhealthy"
        assert health["recommendation"] == "rollback"
        assert health["warnings"][0].startswith("regression_held:")
        assert health["decision"]["evidence_age_seconds"] > 19 * 60
        comparison = viewer.get(f"/api/v1/deployments/{canary.pk}/comparison").json()
        assert comparison["comparison"]["recommendation"] == "rollback"
        # The monitor's later runs keep it, and record and notify it once.
        monitor_run()
        monitor_run(now=timezone.now() + timedelta(minutes=5))
        events = DeploymentEvent.objects.filter(deployment=canary, action="regression_detected")
        assert events.count() == 1
        assert events.get().actor == "system:monitor"
        assert "error_rate" in events.get().payload["rules"]

    def test_without_the_monitor_a_pause_shows_no_rollback_but_no_green_either(
        self, roles: None, viewer: APIClient
    ) -> None:
        canary = make_canary("not-held", traffic=10, auto_rollback=False)
        regress(canary, timezone.now() - timedelta(minutes=21))
        health = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
        # Evidence since the start still says v2 fails more often: degraded, never healthy.
        assert health["health_status"] == "degraded"
        assert any(w.startswith("v2_fails_more_often:") for w in health["warnings"])
        assert health["recommendation"] == "collect_more_data"


@pytest.mark.django_db
class TestDismissRegression:
    def url(self, canary: Deployment) -> str:
        return f"/api/v1/deployments/{canary.pk}/dismiss-regression"

    def test_an_approver_dismisses_with_a_reason(
        self, roles: None, viewer: APIClient, approver: APIClient
    ) -> None:
        canary, _ = held_canary("dismissed")
        assert viewer.post(self.url(canary), {"reason": "x"}, format="json").status_code == 403
        missing = approver.post(self.url(canary), {}, format="json")
        assert missing.status_code == 400 and "reason" in missing.json()
        blank = approver.post(self.url(canary), {"reason": "   "}, format="json")
        assert blank.status_code == 400 and "reason" in blank.json()
        answer = approver.post(
            self.url(canary), {"reason": "known bad input batch, fixed upstream"}, format="json"
        )
        assert answer.status_code == 200, answer.json()
        assert answer.json()["dismissed"]["reason"] == "known bad input batch, fixed upstream"
        event = DeploymentEvent.objects.get(deployment=canary, action="regression_dismissed")
        assert event.actor != "system:monitor"
        assert event.payload["reason"] == "known bad input batch, fixed upstream"
        assert CanaryDecision.objects.get(pk=canary.pk).regression_detected_at is None
        health = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
        assert health["recommendation"] != "rollback"
        again = approver.post(self.url(canary), {"reason": "again"}, format="json")
        assert again.status_code == 409 and again.json()["code"] == "no_regression"

    def test_nothing_held_or_not_a_canary_is_409_unknown_is_404(
        self, roles: None, approver: APIClient
    ) -> None:
        canary = make_canary("nothing-held", traffic=10)
        answer = approver.post(self.url(canary), {"reason": "x"}, format="json")
        assert answer.status_code == 409 and answer.json()["code"] == "no_regression"
        missing = approver.post(
            "/api/v1/deployments/00000000-0000-0000-0000-000000000000/dismiss-regression",
            {"reason": "x"},
            format="json",
        )
        assert missing.status_code == 404

    def test_a_regression_held_again_after_a_dismissal_is_recorded_again(
        self, roles: None, approver: APIClient
    ) -> None:
        canary, _ = held_canary("held-twice")
        approver.post(self.url(canary), {"reason": "looked at it"}, format="json")
        regress(canary, timezone.now() - timedelta(seconds=30))
        monitor_run()
        held = DeploymentEvent.objects.filter(deployment=canary, action="regression_detected")
        assert held.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_approvers_dismissing_at_once_dismiss_once(roles: None) -> None:
    canary, _ = held_canary("dismiss-race")
    alice, bob = create_user("alice", "approver"), create_user("bob", "approver")

    def dismiss(token: str) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        url = f"/api/v1/deployments/{canary.pk}/dismiss-regression"
        return client.post(url, {"reason": "reviewed"}, format="json").status_code

    assert sorted(run_together(lambda: dismiss(alice), lambda: dismiss(bob))) == [200, 409]
    dismissed = DeploymentEvent.objects.filter(deployment=canary, action="regression_dismissed")
    assert dismissed.count() == 1


def execute(base: str, token: str, canary: Deployment, user: str, data: dict) -> dict:
    request = urllib.request.Request(  # noqa: S310 (a local test server)
        f"{base}/api/v1/rulesets/{canary.ruleset_id}/execute",
        data=json.dumps({"input": data, "user_id": user}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local server)
        return json.loads(response.read())


@pytest.mark.django_db(transaction=True)
def test_inputs_failing_in_both_versions_never_roll_back_with_real_processes(
    roles: None, tmp_path: Path
) -> None:
    """The production server feeds the breaker, a real Celery worker and beat run the
    monitor: 60 requests failing in both versions leave the canary running with its
    breaker closed; five of v2's own failures roll it back at once."""
    canary = make_canary("both-failing-live", traffic=100)
    token = create_user("caller", "approver")
    with granian(workers=1) as server, celery_processes(tmp_path):
        for n in range(60):
            answer = execute(server.base, token, canary, f"u{n}", FAILING_IN_BOTH)
            assert answer["canary_version"] == "v2" and answer["success"] is False
        time.sleep(3 * PERIOD_SECONDS)  # a few monitor runs judge the same evidence
        assert Deployment.objects.get(pk=canary.pk).status == "canary"
        assert breaker_store().read(canary.pk).state == "CLOSED"
        for n in range(5):
            execute(server.base, token, canary, f"own{n}", FAILING_INPUT)
        rolled = Deployment.objects.get(pk=canary.pk)
    assert rolled.status == "rolled_back"
    assert DeploymentEvent.objects.get(deployment=canary, action="rollback").actor == (
        "system:breaker"
    )
    lifecycle_events = DeploymentEvent.objects.filter(deployment=canary, actor="system:monitor")
    assert not lifecycle_events.filter(action="rollback").exists()
