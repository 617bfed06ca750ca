from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from canary.api.serializers import (
    JSONObjectField,
    RuleErrorSerializer,
    StrictCharField,
    StrictInputSerializer,
)
from deployments import transitions
from deployments.choices import CompensationStrategy, DeploymentStatus
from deployments.models import (
    SEMVER_PATTERN,
    Deployment,
    DeploymentEvent,
    RuleSet,
    RuleSetTestCase,
    RuleSetVersion,
)
from deployments.services import MAX_CHANGELOG, MAX_REASON

# --- rule sets -----------------------------------------------------------------


@extend_schema_field({"type": "string", "pattern": SEMVER_PATTERN, "maxLength": 64})
class VersionField(StrictCharField):
    """A semantic version; the service checks the pattern and names the field when it fails."""


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "condition": {"type": "string", "description": "A CEL expression over `input`."},
                "output": {},
            },
            "required": ["name", "condition", "output"],
        },
    }
)
class RulesField(serializers.ListField):
    """Any JSON list reaches the compiler, which reports each bad rule by index."""


class RuleSetCreateInputSerializer(StrictInputSerializer):
    name = StrictCharField(max_length=200)
    description = StrictCharField(max_length=10_000, required=False, allow_blank=True)
    redacted_input_paths = serializers.JSONField(
        required=False, help_text="Dotted input paths never stored, e.g. ['customer.email']."
    )


class RuleSetUpdateInputSerializer(StrictInputSerializer):
    description = StrictCharField(max_length=10_000, required=False, allow_blank=True)
    redacted_input_paths = serializers.JSONField(
        required=False, help_text="Dotted input paths never stored, e.g. ['customer.email']."
    )
    capture_percentage = serializers.IntegerField(
        min_value=0,
        max_value=100,
        required=False,
        help_text="Share of executes (no canary running) whose input is kept for backtests.",
    )


class RuleSetOutputSerializer(serializers.ModelSerializer):
    ruleset_id = serializers.UUIDField(source="id", read_only=True)

    class Meta:
        model = RuleSet
        fields = [
            "id",
            "ruleset_id",
            "name",
            "description",
            "redacted_input_paths",
            "capture_percentage",
            "created_at",
        ]


class RuleSchemaSerializer(serializers.Serializer):
    name = serializers.CharField()
    condition = serializers.CharField(help_text="A CEL expression over `input`.")
    output = serializers.JSONField()


class RuleSetVersionCreateInputSerializer(StrictInputSerializer):
    version = VersionField(max_length=64, help_text='Semantic version, "v2.1.0".')
    rules = RulesField(child=serializers.JSONField(), allow_empty=True)
    default = serializers.JSONField(required=False, allow_null=True)
    changelog = StrictCharField(max_length=MAX_CHANGELOG, required=False, allow_blank=True)


class RuleSetVersionOutputSerializer(serializers.ModelSerializer):
    ruleset_id = serializers.UUIDField(read_only=True)
    created_by = serializers.SerializerMethodField()
    rules = RuleSchemaSerializer(many=True, read_only=True)

    class Meta:
        model = RuleSetVersion
        fields = [
            "id",
            "ruleset_id",
            "version",
            "rules",
            "default",
            "changelog",
            "created_by",
            "created_at",
        ]

    def get_created_by(self, obj: RuleSetVersion) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None


class RuleSetTestInputSerializer(StrictInputSerializer):
    input = serializers.DictField(help_text="The input document, bound to `input` in CEL.")
    expected_output = serializers.JSONField(required=False, allow_null=True)
    version = StrictCharField(max_length=64, required=False)


class RuleSetTestOutputSerializer(serializers.Serializer):
    passed = serializers.BooleanField()
    output = serializers.JSONField(allow_null=True)
    expected_output = serializers.JSONField(allow_null=True)
    matched_rule = serializers.CharField(allow_null=True)
    error = RuleErrorSerializer(allow_null=True)
    version = serializers.CharField()
    latency_ms = serializers.FloatField()


# --- test cases (SPEC 10.2) ---------------------------------------------------


class TestCaseCreateInputSerializer(StrictInputSerializer):
    name = StrictCharField(max_length=200)
    input = serializers.DictField(help_text="The input document, bound to `input` in CEL.")
    expected_output = serializers.JSONField(allow_null=True)


class TestCaseOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = RuleSetTestCase
        fields = ["id", "name", "input", "expected_output", "created_by", "created_at"]

    def get_created_by(self, obj: RuleSetTestCase) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None


class TestCaseRunInputSerializer(StrictInputSerializer):
    version = StrictCharField(max_length=64)


class TestCaseResultSerializer(serializers.Serializer):
    case_id = serializers.IntegerField()
    name = serializers.CharField()
    passed = serializers.BooleanField()
    output = serializers.JSONField(allow_null=True)
    expected_output = serializers.JSONField(allow_null=True)
    matched_rule = serializers.CharField(allow_null=True)
    error = RuleErrorSerializer(allow_null=True)


class TestCaseRunOutputSerializer(serializers.Serializer):
    version = serializers.CharField()
    passed = serializers.BooleanField()
    total = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = TestCaseResultSerializer(many=True)


# --- deployments --------------------------------------------------------------


class DeploymentCreateInputSerializer(StrictInputSerializer):
    ruleset_id = serializers.UUIDField()
    version = StrictCharField(max_length=64)
    changelog = StrictCharField(max_length=MAX_CHANGELOG, required=False, allow_blank=True)
    canary_config = JSONObjectField(required=False, allow_null=True)
    compensation_strategy = serializers.ChoiceField(
        choices=CompensationStrategy.choices, required=False
    )


class DeploymentUpdateInputSerializer(StrictInputSerializer):
    version = StrictCharField(max_length=64, required=False)
    changelog = StrictCharField(max_length=MAX_CHANGELOG, required=False, allow_blank=True)
    canary_config = JSONObjectField(required=False)
    compensation_strategy = serializers.ChoiceField(
        choices=CompensationStrategy.choices, required=False
    )


class LifecycleInputSerializer(StrictInputSerializer):
    """Every lifecycle call may say which status it acts on: a compare-and-set.

    Without it the API acts on the status it reads at the start of the request;
    with it, a deployment found in any other status is a 409 and nothing changes
    (a rollback aimed at a canary never rolls back the release a colleague's
    promote just made of it).
    """

    expected_status = serializers.ChoiceField(
        choices=DeploymentStatus.choices,
        required=False,
        help_text="Act only if the deployment is in this status; otherwise 409 and no change.",
    )


class TargetFilterSerializer(StrictInputSerializer):
    user_ids = serializers.ListField(
        child=StrictCharField(max_length=200), required=False, allow_null=True, max_length=10_000
    )
    workflow_ids = serializers.ListField(
        child=StrictCharField(max_length=200), required=False, allow_null=True, max_length=10_000
    )


class StartCanaryInputSerializer(LifecycleInputSerializer):
    canary_pct = serializers.IntegerField(
        min_value=0,
        max_value=100,
        required=False,
        allow_null=True,
        help_text="Defaults to canary_config.initial_traffic_percentage.",
    )
    canary_target_filter = TargetFilterSerializer(required=False, allow_null=True)
    override_reason = StrictCharField(
        max_length=MAX_REASON,
        required=False,
        help_text=(
            "Start although the preflight checklist fails and canary_config.enforce_preflight "
            "is on; recorded on the start_canary event with the failed checks."
        ),
    )


class TrafficInputSerializer(LifecycleInputSerializer):
    traffic_percentage = serializers.IntegerField(min_value=0, max_value=100)
    reason = StrictCharField(
        max_length=MAX_REASON,
        required=False,
        allow_blank=True,
        help_text="Recorded on the event; needed to raise by more than max_traffic_jump.",
    )


class PauseInputSerializer(LifecycleInputSerializer):
    reason = StrictCharField(max_length=MAX_REASON, required=False, allow_blank=True)


class ResumeInputSerializer(LifecycleInputSerializer):
    pass


class PlanHistorySerializer(serializers.Serializer):
    step = serializers.IntegerField()
    started_at = serializers.CharField()
    ended_at = serializers.CharField(allow_null=True)


class PlanOutputSerializer(serializers.Serializer):
    """A rollout plan (SPEC 10.1): ``state`` none, running, paused, waiting_approval or done."""

    deployment_id = serializers.CharField()
    deployment_status = serializers.CharField()
    state = serializers.CharField()
    steps = serializers.ListField(child=serializers.DictField())
    current_step = serializers.IntegerField()
    step_started_at = serializers.DateTimeField(allow_null=True)
    next_step_at = serializers.DateTimeField(allow_null=True)
    paused_from = serializers.CharField(allow_null=True)
    waiting_for = serializers.CharField(allow_null=True)
    history = PlanHistorySerializer(many=True)


class RollbackInputSerializer(LifecycleInputSerializer):
    reason = StrictCharField(max_length=MAX_REASON)
    apply_compensation = serializers.BooleanField(default=True)


class PromoteInputSerializer(LifecycleInputSerializer):
    override_reason = StrictCharField(
        max_length=MAX_REASON,
        required=False,
        help_text=(
            "Promote a canary that is not ready although canary_config.enforce_readiness is "
            "on; recorded on the promote event with the failed checks."
        ),
    )


class PromotionPendingOutputSerializer(serializers.Serializer):
    """202: the approval is recorded; the canary waits for more approvers."""

    deployment_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=[DeploymentStatus.CANARY])
    approvals = serializers.IntegerField()
    required_approvals = serializers.IntegerField()
    approved_by = serializers.ListField(child=serializers.CharField())
    detail = serializers.CharField()


class DeprecateInputSerializer(LifecycleInputSerializer):
    pass


class DeploymentOutputSerializer(serializers.ModelSerializer):
    deployment_id = serializers.UUIDField(source="id", read_only=True)
    ruleset_id = serializers.UUIDField(read_only=True)
    ruleset_name = serializers.CharField(source="ruleset.name", read_only=True)
    version = serializers.CharField(source="version.version", read_only=True)
    version_id = serializers.UUIDField(read_only=True)
    baseline = serializers.UUIDField(source="baseline_id", read_only=True, allow_null=True)
    baseline_version = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()
    allowed_actions = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [
            "deployment_id",
            "id",
            "ruleset_id",
            "ruleset_name",
            "version",
            "version_id",
            "changelog",
            "canary_config",
            "compensation_strategy",
            "status",
            "traffic_percentage",
            "canary_target_filter",
            "baseline",
            "baseline_version",
            "created_by",
            "created_at",
            "updated_at",
            "started_at",
            "promoted_at",
            "rolled_back_at",
            "deprecated_at",
            "rollback_reason",
            "allowed_actions",
        ]

    def get_baseline_version(self, obj: Deployment) -> str | None:
        return obj.baseline.version.version if obj.baseline_id else None

    def get_created_by(self, obj: Deployment) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_allowed_actions(self, obj: Deployment) -> list[str]:
        return list(transitions.allowed_actions(obj.status))


class DeploymentEventOutputSerializer(serializers.ModelSerializer):
    event_id = serializers.IntegerField(source="id", read_only=True)
    deployment_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = DeploymentEvent
        fields = [
            "event_id",
            "deployment_id",
            "action",
            "actor",
            "from_status",
            "to_status",
            "payload",
            "created_at",
        ]


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
