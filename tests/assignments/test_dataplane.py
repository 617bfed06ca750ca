"""Execute and resolve over HTTP: stickiness, lifecycle effects, logging, bad input."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from assignments import router, services, sticky
from assignments.models import Assignment
from canary.redis import redis_client
from deployments import services as lifecycle
from deployments.models import Deployment, RuleSet
from monitoring.models import ExecutionLog
from tests.stored import stored

pytestmark = pytest.mark.django_db


@pytest.fixture
def caller(client_for: Any) -> APIClient:
    """A rule-engine client: authenticated, with no role at all."""
    from django.contrib.auth import get_user_model

    from tests.accounts import issue_token

    user = get_user_model().objects.create(username="rule-engine")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user)}")
    return client


def execute(client: APIClient, ruleset: RuleSet, **body: Any) -> Any:
    body.setdefault("input", {"temperature": 26, "zone": "C"})
    return client.post(f"/api/v1/rulesets/{ruleset.pk}/execute", body, format="json")


def resolve(client: APIClient, ruleset: RuleSet, **query: str) -> Any:
    return client.get(f"/api/v1/rulesets/{ruleset.pk}/resolve", query)


def workflow_with_bucket(deployment: Deployment, *, below: int, start: int = 0) -> str:
    """A workflow id whose bucket is below (v2) or at/above (v1) ``below``."""
    for n in range(start, start + 100_000):
        candidate = f"wf-{n}"
        bucket = router.bucket_for(str(deployment.pk), "workflow", candidate)
        if (bucket < below) == (below > 0):
            return candidate
    raise AssertionError("no id found")


def v1_workflow(deployment: Deployment) -> str:
    for n in range(100_000):
        candidate = f"wf-v1-{n}"
        if router.bucket_for(str(deployment.pk), "workflow", candidate) >= 9_000:
            return candidate
    raise AssertionError("no id found")


class TestWithoutCanary:
    def test_active_version_serves(
        self, caller: APIClient, ruleset: RuleSet, active_v1: Deployment
    ) -> None:
        response = execute(caller, ruleset, user_id="u1")
        assert response.status_code == 200
        body = response.json()
        assert body == {
            "success": True,
            "output": {"alert": "raise"},
            "matched_rule": "hot",
            "error": None,
            "version": "v1.0.0",
            "canary_version": "v1",
            "deployment_id": str(active_v1.pk),
            "assignment_priority": None,
            "latency_ms": body["latency_ms"],
        }
        assert response["X-Canary-Version"] == "v1"
        assert not stored(Assignment).exists()
        assert not stored(ExecutionLog).exists()

    def test_nothing_deployed_is_409(self, caller: APIClient, ruleset: RuleSet) -> None:
        response = execute(caller, ruleset)
        assert response.status_code == 409
        assert response.json()["code"] == "nothing_deployed"
        assert "promote" in response.json()["detail"]
        assert resolve(caller, ruleset).status_code == 409

    def test_unknown_ruleset_is_404(self, caller: APIClient, db: None) -> None:
        for ruleset_id in (uuid.uuid4(), "nope"):
            response = caller.post(
                f"/api/v1/rulesets/{ruleset_id}/execute", {"input": {}}, format="json"
            )
            assert response.status_code == 404

    def test_anonymous_is_401(self, ruleset: RuleSet, active_v1: Deployment) -> None:
        assert execute(APIClient(), ruleset).status_code == 401
        assert resolve(APIClient(), ruleset).status_code == 401


class TestCanary:
    def test_a_context_pinned_against_its_bucket_is_served_and_logged_as_pinned(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        """Stored before traffic rose, the user keeps v1; its log row is v1's outcome."""
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=0, actor="t"
        )
        body = {"input": {"temperature": 26, "zone": "C"}, "user_id": "pinned"}
        assert execute(caller, ruleset, **body).json()["canary_version"] == "v1"
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk,
            traffic_percentage=100,
            actor="t",
            reason="all traffic to v2",
        )
        again = execute(caller, ruleset, **body).json()
        # v1 raises the alert at 26 degrees, v2 does not: the answer is v1's.
        assert (again["canary_version"], again["output"]) == ("v1", {"alert": "raise"})
        assert execute(caller, ruleset, **{**body, "user_id": "new"}).json()["output"] == {
            "alert": "none"
        }
        rows = stored(ExecutionLog).filter(deployment=canary_v2, user_id="pinned")
        assert [(row.served_version, row.output) for row in rows] == [
            ("v1", {"alert": "raise"}),
            ("v1", {"alert": "raise"}),
        ]

    def test_guides_example(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        """User A's workflow_123 gets v2 and keeps it on every rerun, even by user B."""
        canary_v2 = lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=10, actor="t"
        )
        wf_v2 = workflow_with_bucket(canary_v2, below=1_000)
        wf_other = v1_workflow(canary_v2)
        first = execute(caller, ruleset, user_id="user-a", workflow_id=wf_v2).json()
        assert (first["canary_version"], first["version"], first["assignment_priority"]) == (
            "v2",
            "v2.0.0",
            "workflow",
        )
        for _ in range(3):
            again = execute(caller, ruleset, user_id="user-a", workflow_id=wf_v2).json()
            assert again["canary_version"] == "v2"
        by_b = execute(caller, ruleset, user_id="user-b", workflow_id=wf_v2).json()
        assert by_b["canary_version"] == "v2"
        other = execute(caller, ruleset, user_id="user-a", workflow_id=wf_other).json()
        assert other["canary_version"] == "v1"
        assert other["version"] == "v1.0.0"
        assert stored(Assignment).filter(deployment=canary_v2).count() == 2

    def test_resolve_and_execute_agree(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=50, actor="t"
        )
        for n in range(40):
            resolved = resolve(caller, ruleset, user_id=f"user-{n}")
            executed = execute(caller, ruleset, user_id=f"user-{n}")
            assert resolved.json()["canary_version"] == executed.json()["canary_version"]
            assert resolved["X-Canary-Version"] == executed["X-Canary-Version"]
            assert resolved.json()["is_canary"] == (resolved.json()["canary_version"] == "v2")
        assert stored(Assignment).filter(deployment=canary_v2).count() == 40

    def test_traffic_change_keeps_existing_assignments(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        before = {
            f"u{n}": resolve(caller, ruleset, user_id=f"u{n}").json()["canary_version"]
            for n in range(50)
        }
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk,
            traffic_percentage=100,
            actor="t",
            reason="all traffic to v2",
        )
        after = {
            user: resolve(caller, ruleset, user_id=user).json()["canary_version"] for user in before
        }
        assert after == before
        assert resolve(caller, ruleset, user_id="brand-new").json()["canary_version"] == "v2"

    def test_rollback_clears_assignments_and_serves_v1(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment, active_v1: Deployment
    ) -> None:
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk,
            traffic_percentage=100,
            actor="t",
            reason="all traffic to v2",
        )
        assert execute(caller, ruleset, user_id="u1").json()["canary_version"] == "v2"
        assert stored(Assignment).filter(deployment=canary_v2).exists()
        lifecycle.deployment_rollback(deployment_id=canary_v2.pk, reason="bad", actor="t")
        assert not stored(Assignment).filter(deployment=canary_v2).exists()
        after = execute(caller, ruleset, user_id="u1").json()
        assert (after["canary_version"], after["deployment_id"]) == ("v1", str(active_v1.pk))

    def test_promote_serves_v2_to_everyone(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=0, actor="t"
        )
        assert execute(caller, ruleset, user_id="u1").json()["canary_version"] == "v1"
        lifecycle.deployment_promote(deployment_id=canary_v2.pk, actor="t")
        body = execute(caller, ruleset, user_id="u1").json()
        assert (body["version"], body["deployment_id"]) == ("v2.0.0", str(canary_v2.pk))

    def test_session_assignments_expire(
        self, ruleset: RuleSet, canary_v2: Deployment, settings: Any
    ) -> None:
        settings.CANARY_SESSION_TTL = 60
        start = timezone.now()
        context = router.RoutingContext(session_id="sess-1")
        first = services.dataplane_resolve(ruleset_id=ruleset.pk, context=context, now=start)
        assert first.assignment_priority == "session"
        row = stored(Assignment).get(tier="session", identifier="sess-1")
        assert row.expires_at == start + timedelta(seconds=60)
        # Flip the stored answer so a re-decision is observable.
        flipped = "v1" if first.canary_version == "v2" else "v2"
        stored(Assignment).filter(pk=row.pk).update(assigned_version=flipped)
        if settings.REDIS_URL:  # where decisions are read first
            key = sticky.sticky_key(str(canary_v2.pk), "session", "sess-1")
            redis_client().set(key, f"{flipped}|{row.expires_at.timestamp():.6f}")
        still = services.dataplane_resolve(
            ruleset_id=ruleset.pk, context=context, now=start + timedelta(seconds=59)
        )
        assert still.canary_version == flipped
        redecided = services.dataplane_resolve(
            ruleset_id=ruleset.pk, context=context, now=start + timedelta(seconds=60)
        )
        assert redecided.canary_version == first.canary_version
        row = stored(Assignment).get(pk=row.pk)
        assert row.expires_at == start + timedelta(seconds=120)
        assert stored(Assignment).filter(tier="session").count() == 1

    def test_new_session_gets_its_own_decision(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=50, actor="t"
        )
        versions = {
            resolve(caller, ruleset, session_id=f"s{n}").json()["canary_version"] for n in range(40)
        }
        assert versions == {"v1", "v2"}
        assert stored(Assignment).filter(tier="session").count() == 40

    def test_no_ids_is_random_and_not_stored(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        body = execute(caller, ruleset).json()
        assert body["assignment_priority"] == "random"
        assert not stored(Assignment).exists()

    def test_target_filter(self, caller: APIClient, ruleset: RuleSet, draft_v2: Deployment) -> None:
        lifecycle.deployment_start_canary(
            deployment_id=draft_v2.pk,
            canary_pct=100,
            canary_target_filter={"user_ids": ["vip"]},
            actor="t",
        )
        assert resolve(caller, ruleset, user_id="vip").json()["canary_version"] == "v2"
        assert resolve(caller, ruleset, user_id="someone").json()["canary_version"] == "v1"


class TestExecutionLog:
    def test_every_canary_execute_is_logged(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=50, actor="t"
        )
        served = [
            execute(
                caller, ruleset, user_id=f"u{n}", session_id="s", input={"temperature": 30}
            ).json()
            for n in range(20)
        ]
        logs = list(stored(ExecutionLog).filter(deployment=canary_v2).order_by("id"))
        assert [log.served_version for log in logs] == [s["canary_version"] for s in served]
        assert all(log.success and log.input == {"temperature": 30} for log in logs)
        assert logs[0].user_id == "u0" and logs[0].session_id == "s"
        assert {log.version.version for log in logs} <= {"v1.0.0", "v2.0.0"}

    def test_failed_evaluation_is_a_200_and_an_error_outcome(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        lifecycle.deployment_set_traffic(
            deployment_id=canary_v2.pk,
            traffic_percentage=100,
            actor="t",
            reason="all traffic to v2",
        )
        response = execute(caller, ruleset, user_id="u1", input={"zone": "A"})
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is False
        assert body["output"] is None
        assert body["error"]["rule"] == "hot"
        assert "temperature" in body["error"]["message"]
        log = stored(ExecutionLog).get()
        assert (log.success, log.error_rule, log.served_version) == (False, "hot", "v2")
        assert "temperature" in log.error_message


class TestAssignmentsEndpoint:
    def test_shape_filters_and_pages(
        self, caller: APIClient, viewer: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        execute(caller, ruleset, user_id="user-a", workflow_id="wf-1", session_id="s-1")
        execute(caller, ruleset, user_id="user-a", workflow_id="wf-2")
        execute(caller, ruleset, user_id="user-b")
        url = f"/api/v1/deployments/{canary_v2.pk}/assignments"
        everything = viewer.get(url).json()
        assert everything["total"] == 3
        one = next(a for a in everything["assignments"] if a["workflow_id"] == "wf-1")
        assert set(one) >= {
            "assignment_id",
            "user_id",
            "workflow_id",
            "session_id",
            "canary_version_id",
            "assigned_version",
            "assigned_at",
            "priority",
        }
        assert one["priority"] == "workflow"
        assert one["user_id"] == "user-a" and one["session_id"] == "s-1"
        expected_version = (
            canary_v2.version_id
            if one["assigned_version"] == "v2"
            else canary_v2.baseline.version_id
        )
        assert one["canary_version_id"] == str(expected_version)

        by_user = viewer.get(url, {"user_id": "user-a"}).json()
        assert by_user["total"] == 2
        by_workflow = viewer.get(url, {"workflow_id": "wf-2"}).json()
        assert [a["workflow_id"] for a in by_workflow["assignments"]] == ["wf-2"]
        page = viewer.get(url, {"page": 2, "page_size": 2}).json()
        assert page["total"] == 3 and len(page["assignments"]) == 1

    def test_roles_and_unknown_ids(
        self, caller: APIClient, viewer: APIClient, canary_v2: Deployment
    ) -> None:
        url = f"/api/v1/deployments/{canary_v2.pk}/assignments"
        assert APIClient().get(url).status_code == 401
        assert caller.get(url).status_code == 403
        assert viewer.get(f"/api/v1/deployments/{uuid.uuid4()}/assignments").status_code == 404
        assert viewer.get(url, {"user_id": "bad id!"}).status_code == 400


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "input"),
            ({"input": [1, 2]}, "input"),
            ({"input": "text"}, "input"),
            ({"input": {}, "user_id": 42}, "user_id"),
            ({"input": {}, "user_id": "has space"}, "user_id"),
            ({"input": {}, "session_id": "x" * 201}, "session_id"),
            ({"input": {}, "workflow_id": ""}, "workflow_id"),
            ({"input": {}, "tenant": "x"}, "tenant"),
            ({"input": {"blob": "x" * 70_000}}, "input"),
        ],
    )
    def test_execute_refuses_and_logs_nothing(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment, body: dict, field: str
    ) -> None:
        response = caller.post(f"/api/v1/rulesets/{ruleset.pk}/execute", body, format="json")
        assert response.status_code == 400, response.content
        assert field in response.json()
        assert not stored(ExecutionLog).exists()
        assert not stored(Assignment).exists()

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            (
                {"temperature": 2**64},
                "input.temperature: integer 18446744073709551616 is outside the 64-bit "
                "range CEL evaluates exactly",
            ),
            (
                {"temperature": 30, "history": [{"t": -(2**63) - 1}]},
                "input.history[0].t: integer -9223372036854775809 is outside the 64-bit "
                "range CEL evaluates exactly",
            ),
        ],
    )
    def test_an_integer_outside_64_bits_is_a_400_naming_its_path(
        self,
        caller: APIClient,
        ruleset: RuleSet,
        canary_v2: Deployment,
        document: dict,
        message: str,
    ) -> None:
        for headers in ({}, {"HTTP_ORIGIN": "https://app.example"}):
            response = caller.post(
                f"/api/v1/rulesets/{ruleset.pk}/execute",
                {"input": document, "user_id": "u1"},
                format="json",
                **headers,
            )
            assert response.status_code == 400, response.content
            assert response.json() == {
                "input": [message],
                "detail": f"input: {message}",
                "code": "invalid",
            }
        assert not stored(ExecutionLog).exists()
        assert not stored(Assignment).exists()

    def test_resolve_refuses_malformed_ids(
        self, caller: APIClient, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        response = resolve(caller, ruleset, workflow_id="../../etc")
        assert response.status_code == 200  # dots and slashes are legal id characters
        response = resolve(caller, ruleset, workflow_id="a b")
        assert response.status_code == 400
        assert "workflow_id" in response.json()


def test_a_version_that_could_be_slow_is_not_evaluated_on_a_guess(
    caller: APIClient, db: Any
) -> None:
    """Its execute routes first, then evaluates what it serves: logged as served."""
    from assignments.routing import routing_state_for

    ruleset = lifecycle.ruleset_create(name="costly", actor="t")
    costly = [
        {
            "name": "blocked",
            "condition": "has(input.items) && input.items.exists(i, string(i) in input.blocked)",
            "output": {"alert": "blocked"},
        }
    ]
    lifecycle.ruleset_version_create(
        ruleset=ruleset,
        version="v1.0.0",
        rules=[{"name": "any", "condition": "true", "output": {}}],
        default={},
        actor="t",
    )
    lifecycle.ruleset_version_create(
        ruleset=ruleset, version="v2.0.0", rules=costly, default={"alert": "none"}, actor="t"
    )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    canary = lifecycle.deployment_start_canary(deployment_id=draft.pk, canary_pct=100, actor="t")
    state = routing_state_for(ruleset_id=str(ruleset.pk))
    assert state is not None and state.canary is not None
    assert not state.canary.rules.is_cheap()
    body = {"input": {"items": [1, 2], "blocked": ["2"]}}
    for n in range(3):
        answer = execute(caller, ruleset, user_id=f"u{n}", **body).json()
        assert (answer["canary_version"], answer["output"]) == ("v2", {"alert": "blocked"})
    rows = stored(ExecutionLog).filter(deployment=canary)
    assert sorted((row.user_id, row.served_version, row.output["alert"]) for row in rows) == [
        (f"u{n}", "v2", "blocked") for n in range(3)
    ]
