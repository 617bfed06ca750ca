"""Lifecycle services on the real database: status, timestamps, baseline, events, constraints."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from canary.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from deployments import services
from deployments.models import Deployment, DeploymentEvent, RuleSet
from deployments.signals import deployment_transitioned, deployment_transitioning

pytestmark = pytest.mark.django_db


def events(deployment: Deployment) -> list[tuple[str, str, str, str]]:
    return list(
        DeploymentEvent.objects.filter(deployment=deployment)
        .order_by("id")
        .values_list("action", "actor", "from_status", "to_status")
    )


def reload(deployment: Deployment) -> Deployment:
    return Deployment.objects.get(pk=deployment.pk)


class TestCreate:
    def test_creates_a_draft_with_config_defaults_and_an_event(self, ruleset: RuleSet) -> None:
        deployment = services.deployment_create(
            ruleset_id=ruleset.pk,
            version="v1.0.0",
            changelog="first",
            canary_config={"increment": 20},
            actor="alice",
        )
        assert deployment.status == "draft"
        assert deployment.traffic_percentage == 0
        assert deployment.canary_config["increment"] == 20
        assert deployment.canary_config["error_threshold"] == 0.05
        assert deployment.compensation_strategy == "rollback_only"
        assert events(deployment) == [("create", "alice", "", "draft")]

    def test_unknown_version_names_the_field(self, ruleset: RuleSet) -> None:
        with pytest.raises(ValidationFailed) as error:
            services.deployment_create(ruleset_id=ruleset.pk, version="v9.9.9", actor="a")
        assert "version" in error.value.field_errors
        assert Deployment.objects.count() == 0

    def test_unknown_ruleset_names_the_field(self, db: None) -> None:
        with pytest.raises(ValidationFailed) as error:
            services.deployment_create(
                ruleset_id="5b6c1f5e-0000-4000-8000-000000000000", version="v1.0.0", actor="a"
            )
        assert "ruleset_id" in error.value.field_errors

    def test_bad_config_writes_nothing(self, ruleset: RuleSet) -> None:
        with pytest.raises(ValidationFailed) as error:
            services.deployment_create(
                ruleset_id=ruleset.pk, version="v1.0.0", canary_config={"min_samples": 0}, actor="a"
            )
        assert error.value.field_errors == {
            "canary_config": {"min_samples": ["Must be at least 1 and at most 1000000."]}
        }
        assert Deployment.objects.count() == 0
        assert DeploymentEvent.objects.count() == 0


class TestInitialRelease:
    def test_promote_from_draft_when_nothing_is_active(self, ruleset: RuleSet) -> None:
        draft = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="a")
        active = services.deployment_promote(deployment_id=draft.pk, actor="alice")
        assert active.status == "active"
        assert active.traffic_percentage == 100
        assert active.baseline_id is None
        assert active.started_at is not None
        assert active.promoted_at == active.started_at
        assert events(active)[-1] == ("promote", "alice", "draft", "active")

    def test_promote_from_draft_refused_when_something_is_active(
        self, draft_v2: Deployment
    ) -> None:
        with pytest.raises(InvalidTransition) as error:
            services.deployment_promote(deployment_id=draft_v2.pk, actor="a")
        assert error.value.current_status == "draft"
        assert "promote" not in error.value.allowed_actions
        assert "start-canary" in error.value.allowed_actions
        assert reload(draft_v2).status == "draft"


class TestStartCanary:
    def test_sets_baseline_traffic_filter_and_time(
        self, draft_v2: Deployment, active_v1: Deployment
    ) -> None:
        canary = services.deployment_start_canary(
            deployment_id=draft_v2.pk,
            canary_pct=15,
            canary_target_filter={"user_ids": ["u1", "u1", "u2"]},
            actor="bob",
        )
        assert canary.status == "canary"
        assert canary.traffic_percentage == 15
        assert canary.baseline_id == active_v1.pk
        assert canary.canary_target_filter == {"user_ids": ["u1", "u2"]}
        assert canary.started_at is not None
        event = DeploymentEvent.objects.filter(deployment=canary).last()
        assert (event.action, event.actor, event.from_status, event.to_status) == (
            "start_canary",
            "bob",
            "draft",
            "canary",
        )
        assert event.payload["baseline_version"] == "v1.0.0"
        assert event.payload["traffic_percentage"] == 15

    def test_default_percentage_comes_from_config(
        self, ruleset: RuleSet, active_v1: Deployment
    ) -> None:
        draft = services.deployment_create(
            ruleset_id=ruleset.pk,
            version="v2.0.0",
            canary_config={"initial_traffic_percentage": 7},
            actor="a",
        )
        assert (
            services.deployment_start_canary(deployment_id=draft.pk, actor="a").traffic_percentage
            == 7
        )

    def test_needs_an_active_deployment(self, ruleset: RuleSet) -> None:
        draft = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="a")
        with pytest.raises(Conflict) as error:
            services.deployment_start_canary(deployment_id=draft.pk, actor="a")
        assert "promoted directly" in error.value.detail
        assert reload(draft).status == "draft"

    def test_second_canary_names_the_running_one(
        self, ruleset: RuleSet, canary_v2: Deployment
    ) -> None:
        services.ruleset_version_create(
            ruleset=ruleset, version="v3.0.0", rules=[], default=None, actor="a"
        )
        other = services.deployment_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="a")
        with pytest.raises(Conflict) as error:
            services.deployment_start_canary(deployment_id=other.pk, actor="a")
        assert str(canary_v2.pk) in error.value.detail
        assert error.value.extra["canary_deployment_id"] == str(canary_v2.pk)

    def test_same_version_as_active_is_refused(
        self, ruleset: RuleSet, active_v1: Deployment
    ) -> None:
        again = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="a")
        with pytest.raises(Conflict):
            services.deployment_start_canary(deployment_id=again.pk, actor="a")

    @pytest.mark.parametrize("pct", [101, -5, "10", 2.5, True])
    def test_percentage_out_of_range(self, draft_v2: Deployment, pct: object) -> None:
        with pytest.raises(ValidationFailed) as error:
            services.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=pct, actor="a")
        assert "canary_pct" in error.value.field_errors
        assert reload(draft_v2).status == "draft"

    def test_target_filter_unknown_key(self, draft_v2: Deployment) -> None:
        with pytest.raises(ValidationFailed) as error:
            services.deployment_start_canary(
                deployment_id=draft_v2.pk, canary_target_filter={"teams": ["x"]}, actor="a"
            )
        assert error.value.field_errors == {
            "canary_target_filter": {
                "teams": ["Unknown field. Known fields: user_ids, workflow_ids."]
            }
        }


class TestTraffic:
    def test_changes_traffic_and_records_from_and_to(self, canary_v2: Deployment) -> None:
        updated = services.deployment_set_traffic(
            deployment_id=canary_v2.pk, traffic_percentage=50, actor="carol"
        )
        assert updated.traffic_percentage == 50
        assert updated.status == "canary"
        event = DeploymentEvent.objects.filter(deployment=canary_v2).last()
        assert event.action == "set_traffic"
        assert event.payload == {"from_traffic": 10, "to_traffic": 50}

    def test_zero_and_hundred_are_allowed(self, canary_v2: Deployment) -> None:
        assert (
            services.deployment_set_traffic(
                deployment_id=canary_v2.pk, traffic_percentage=0, actor="a"
            ).traffic_percentage
            == 0
        )
        assert (
            services.deployment_set_traffic(
                # 0 -> 100 jumps past max_traffic_jump: allowed with a reason (SPEC 10.1).
                deployment_id=canary_v2.pk,
                traffic_percentage=100,
                actor="a",
                reason="verified",
            ).traffic_percentage
            == 100
        )

    def test_stale_traffic_expectation_changes_nothing(self, canary_v2: Deployment) -> None:
        services.deployment_set_traffic(
            deployment_id=canary_v2.pk,
            traffic_percentage=50,
            actor="a",
            expected_traffic_percentage=10,
        )
        with pytest.raises(Conflict) as error:
            services.deployment_set_traffic(
                deployment_id=canary_v2.pk,
                traffic_percentage=50,
                actor="a",
                expected_traffic_percentage=10,
            )
        assert "changed from 10% to 50%" in error.value.detail
        assert (
            DeploymentEvent.objects.filter(deployment=canary_v2, action="set_traffic").count() == 1
        )

    def test_only_during_canary(self, active_v1: Deployment) -> None:
        with pytest.raises(InvalidTransition) as error:
            services.deployment_set_traffic(
                deployment_id=active_v1.pk, traffic_percentage=5, actor="a"
            )
        assert error.value.current_status == "active"
        assert error.value.allowed_actions == ["rollback", "deprecate"]


class TestPromote:
    def test_canary_becomes_active_and_baseline_deprecated(
        self, canary_v2: Deployment, active_v1: Deployment
    ) -> None:
        promoted = services.deployment_promote(deployment_id=canary_v2.pk, actor="dave")
        assert promoted.status == "active"
        assert promoted.traffic_percentage == 100
        assert promoted.promoted_at is not None
        baseline = reload(active_v1)
        assert baseline.status == "deprecated"
        assert baseline.deprecated_at == promoted.promoted_at
        assert events(baseline)[-1] == ("supersede", "dave", "active", "deprecated")
        assert events(promoted)[-1] == ("promote", "dave", "canary", "active")


class TestRollback:
    def test_canary_rollback_keeps_v1_active(
        self, canary_v2: Deployment, active_v1: Deployment
    ) -> None:
        rolled = services.deployment_rollback(
            deployment_id=canary_v2.pk, reason="Error rate 8%", actor="erin"
        )
        assert rolled.status == "rolled_back"
        assert rolled.rollback_reason == "Error rate 8%"
        assert rolled.rolled_back_at is not None
        assert rolled.traffic_percentage == 0
        assert reload(active_v1).status == "active"
        event = DeploymentEvent.objects.filter(deployment=canary_v2).last()
        assert event.payload["reason"] == "Error rate 8%"
        assert event.payload["apply_compensation"] is True
        assert event.payload["from_traffic"] == 10

    def test_active_rollback_restores_the_baseline(
        self, canary_v2: Deployment, active_v1: Deployment
    ) -> None:
        services.deployment_promote(deployment_id=canary_v2.pk, actor="a")
        services.deployment_rollback(deployment_id=canary_v2.pk, reason="bad", actor="frank")
        restored = reload(active_v1)
        assert restored.status == "active"
        assert restored.traffic_percentage == 100
        assert events(restored)[-1] == ("restore", "frank", "deprecated", "active")
        assert reload(canary_v2).status == "rolled_back"

    def test_initial_release_rollback_leaves_nothing_active(self, active_v1: Deployment) -> None:
        services.deployment_rollback(deployment_id=active_v1.pk, reason="bad", actor="a")
        assert not Deployment.objects.filter(status="active").exists()

    def test_active_rollback_refused_while_a_canary_builds_on_it(
        self, canary_v2: Deployment, active_v1: Deployment
    ) -> None:
        with pytest.raises(Conflict) as error:
            services.deployment_rollback(deployment_id=active_v1.pk, reason="x", actor="a")
        assert str(canary_v2.pk) in error.value.detail
        assert reload(active_v1).status == "active"

    def test_stale_expectation_does_nothing(self, canary_v2: Deployment) -> None:
        services.deployment_promote(deployment_id=canary_v2.pk, actor="a")
        with pytest.raises(InvalidTransition) as error:
            services.deployment_rollback(
                deployment_id=canary_v2.pk, reason="x", actor="b", expected_status="canary"
            )
        assert error.value.current_status == "active"
        assert "changed from 'canary' to 'active'" in error.value.detail
        assert reload(canary_v2).status == "active"
        assert events(canary_v2)[-1][0] == "promote"

    @pytest.mark.parametrize("reason", ["", "   ", None, 5])
    def test_reason_is_required(self, canary_v2: Deployment, reason: object) -> None:
        with pytest.raises(ValidationFailed) as error:
            services.deployment_rollback(deployment_id=canary_v2.pk, reason=reason, actor="a")
        assert "reason" in error.value.field_errors
        assert reload(canary_v2).status == "canary"

    def test_rolled_back_is_read_only(self, canary_v2: Deployment) -> None:
        services.deployment_rollback(deployment_id=canary_v2.pk, reason="x", actor="a")
        for call in (
            lambda: services.deployment_promote(deployment_id=canary_v2.pk, actor="a"),
            lambda: services.deployment_rollback(deployment_id=canary_v2.pk, reason="x", actor="a"),
            lambda: services.deployment_set_traffic(
                deployment_id=canary_v2.pk, traffic_percentage=5, actor="a"
            ),
        ):
            with pytest.raises(InvalidTransition) as error:
                call()
            assert error.value.allowed_actions == []


class TestDeprecateAndDelete:
    def test_deprecate_active(self, active_v1: Deployment) -> None:
        gone = services.deployment_deprecate(deployment_id=active_v1.pk, actor="a")
        assert gone.status == "deprecated"
        assert gone.deprecated_at is not None

    def test_deprecate_refused_under_a_canary(
        self, canary_v2: Deployment, active_v1: Deployment
    ) -> None:
        with pytest.raises(Conflict):
            services.deployment_deprecate(deployment_id=active_v1.pk, actor="a")

    def test_delete_draft_only(self, draft_v2: Deployment, active_v1: Deployment) -> None:
        with pytest.raises(InvalidTransition):
            services.deployment_delete(deployment_id=active_v1.pk, actor="a")
        services.deployment_delete(deployment_id=draft_v2.pk, actor="a")
        assert not Deployment.objects.filter(pk=draft_v2.pk).exists()

    def test_unknown_and_malformed_ids(self, db: None) -> None:
        with pytest.raises(NotFound):
            services.deployment_promote(
                deployment_id="5b6c1f5e-0000-4000-8000-000000000000", actor="a"
            )
        with pytest.raises(NotFound):
            services.deployment_promote(deployment_id="not-a-uuid", actor="a")


class TestUpdate:
    def test_merges_config_and_records_changed_fields(self, draft_v2: Deployment) -> None:
        updated = services.deployment_update(
            deployment_id=draft_v2.pk,
            canary_config={"increment": 30},
            changelog="tuned",
            actor="a",
        )
        assert updated.canary_config["increment"] == 30
        assert updated.canary_config["min_samples"] == 20
        assert updated.changelog == "tuned"
        event = DeploymentEvent.objects.filter(deployment=draft_v2).last()
        assert event.payload == {"changed": ["canary_config", "changelog"]}

    def test_only_in_draft(self, canary_v2: Deployment) -> None:
        with pytest.raises(InvalidTransition):
            services.deployment_update(deployment_id=canary_v2.pk, changelog="x", actor="a")


class TestConstraints:
    def test_database_refuses_two_canaries(self, ruleset: RuleSet, canary_v2: Deployment) -> None:
        other = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="a")
        with pytest.raises(IntegrityError), transaction.atomic():
            Deployment.objects.filter(pk=other.pk).update(status="canary")

    def test_database_refuses_two_actives(self, ruleset: RuleSet, active_v1: Deployment) -> None:
        other = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="a")
        with pytest.raises(IntegrityError), transaction.atomic():
            Deployment.objects.filter(pk=other.pk).update(status="active")


class TestHooks:
    def test_hooks_fire_inside_and_after_the_transaction(
        self, canary_v2: Deployment, django_capture_on_commit_callbacks
    ) -> None:
        inside: list[str] = []
        after: list[str] = []

        def on_transitioning(
            sender: object, deployment: Deployment, action: str, **kw: object
        ) -> None:
            inside.append(f"{action}:{kw['from_status']}->{kw['to_status']}")

        def on_transitioned(
            sender: object, deployment: Deployment, action: str, **kw: object
        ) -> None:
            after.append(f"{action}:{kw['actor']}")

        deployment_transitioning.connect(on_transitioning)
        deployment_transitioned.connect(on_transitioned)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                services.deployment_rollback(deployment_id=canary_v2.pk, reason="x", actor="gina")
        finally:
            deployment_transitioning.disconnect(on_transitioning)
            deployment_transitioned.disconnect(on_transitioned)
        assert inside == ["rollback:canary->rolled_back"]
        assert after == ["rollback:gina"]

    def test_a_failing_in_transaction_hook_aborts_the_transition(
        self, canary_v2: Deployment
    ) -> None:
        def explode(**kwargs: object) -> None:
            raise RuntimeError("receiver failed")

        deployment_transitioning.connect(explode)
        try:
            with pytest.raises(RuntimeError):
                services.deployment_rollback(deployment_id=canary_v2.pk, reason="x", actor="a")
        finally:
            deployment_transitioning.disconnect(explode)
        assert reload(canary_v2).status == "canary"
        assert events(canary_v2)[-1][0] == "start_canary"
