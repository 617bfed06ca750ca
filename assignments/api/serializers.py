from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from assignments.models import Assignment, ClientToken
from canary.api.serializers import JSONObjectField, RuleErrorSerializer, StrictInputSerializer
from deployments.rules import InputBoundsError, check_input_bounds

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,200}$"
IDENTIFIER_HELP = "1-200 characters: letters, digits and . _ : @ / + = -"


def identifier_field() -> serializers.RegexField:
    return serializers.RegexField(
        IDENTIFIER_PATTERN,
        required=False,
        allow_null=True,
        help_text=IDENTIFIER_HELP,
        error_messages={"invalid": f"Malformed id: {IDENTIFIER_HELP}."},
    )


class ContextQuerySerializer(StrictInputSerializer):
    user_id = identifier_field()
    session_id = identifier_field()
    workflow_id = identifier_field()


class ExecuteInputSerializer(StrictInputSerializer):
    input = JSONObjectField(help_text="The input document, bound to `input` in CEL.")
    user_id = identifier_field()
    session_id = identifier_field()
    workflow_id = identifier_field()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors = {
                name: ["Must be a string."]
                for name in ("user_id", "session_id", "workflow_id")
                if data.get(name) is not None and not isinstance(data.get(name), str)
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def validate_input(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        try:
            check_input_bounds(value)
        except InputBoundsError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value


class ResolveOutputSerializer(serializers.Serializer):
    ruleset_id = serializers.UUIDField()
    deployment_id = serializers.UUIDField()
    version = serializers.CharField()
    version_id = serializers.UUIDField()
    canary_version = serializers.ChoiceField(choices=["v1", "v2"])
    is_canary = serializers.BooleanField()
    assignment_priority = serializers.ChoiceField(
        choices=["workflow", "session", "user", "random"], allow_null=True
    )


class ExecuteOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    output = serializers.JSONField(allow_null=True)
    matched_rule = serializers.CharField(allow_null=True)
    error = RuleErrorSerializer(allow_null=True)
    version = serializers.CharField()
    canary_version = serializers.ChoiceField(choices=["v1", "v2"])
    deployment_id = serializers.UUIDField()
    assignment_priority = serializers.ChoiceField(
        choices=["workflow", "session", "user", "random"], allow_null=True
    )
    latency_ms = serializers.FloatField()


class AssignmentOutputSerializer(serializers.ModelSerializer):
    assignment_id = serializers.UUIDField(source="id", read_only=True)
    canary_version_id = serializers.UUIDField(source="version_id", read_only=True)
    priority = serializers.CharField(source="tier", read_only=True)
    user_id = serializers.SerializerMethodField()
    session_id = serializers.SerializerMethodField()
    workflow_id = serializers.SerializerMethodField()

    class Meta:
        model = Assignment
        fields = [
            "assignment_id",
            "user_id",
            "workflow_id",
            "session_id",
            "canary_version_id",
            "assigned_version",
            "assigned_at",
            "expires_at",
            "priority",
            "identifier",
        ]

    def get_user_id(self, obj: Assignment) -> str | None:
        return obj.user_id or None

    def get_session_id(self, obj: Assignment) -> str | None:
        return obj.session_id or None

    def get_workflow_id(self, obj: Assignment) -> str | None:
        return obj.workflow_id or None


class AssignmentListOutputSerializer(serializers.Serializer):
    assignments = AssignmentOutputSerializer(many=True)
    total = serializers.IntegerField()


def resolve_answer(resolution: Any) -> dict[str, Any]:
    """The body of a resolve (``ResolveOutputSerializer``), for the API and the fast path."""
    return {
        "ruleset_id": resolution.ruleset_id,
        "deployment_id": resolution.deployment_id,
        "version": resolution.version,
        "version_id": resolution.version_id,
        "canary_version": resolution.canary_version,
        "is_canary": resolution.canary_version == "v2",
        "assignment_priority": resolution.assignment_priority,
    }


def execute_answer(result: Any) -> dict[str, Any]:
    """The body of an execute (``ExecuteOutputSerializer``), for the API and the fast path."""
    resolution = result.resolution
    return {
        "success": result.success,
        "output": result.output,
        "matched_rule": result.matched_rule,
        "error": result.error,
        "version": resolution.version,
        "canary_version": resolution.canary_version,
        "deployment_id": resolution.deployment_id,
        "assignment_priority": resolution.assignment_priority,
        "latency_ms": result.latency_ms,
    }


def max_input_bytes() -> int:
    return settings.CANARY_MAX_INPUT_BYTES


class ClientTokenCreateInputSerializer(StrictInputSerializer):
    """Shapes only; the service checks the values (and names the field in a 400)."""

    name = serializers.CharField(max_length=200)
    ruleset_ids = serializers.ListField(child=serializers.CharField(), allow_empty=False)
    allowed_origins = serializers.ListField(child=serializers.CharField(), allow_empty=False)


class ClientTokenOutputSerializer(serializers.ModelSerializer):
    ruleset_ids = serializers.SerializerMethodField()

    class Meta:
        model = ClientToken
        fields = [
            "id",
            "name",
            "token_prefix",
            "ruleset_ids",
            "allowed_origins",
            "created_at",
            "created_by",
        ]

    def get_ruleset_ids(self, obj: ClientToken) -> list[str]:
        return sorted(str(ruleset.pk) for ruleset in obj.rulesets.all())


class ClientTokenCreatedOutputSerializer(ClientTokenOutputSerializer):
    token = serializers.SerializerMethodField(help_text="The token itself, shown this once.")

    class Meta(ClientTokenOutputSerializer.Meta):
        fields = [*ClientTokenOutputSerializer.Meta.fields, "token"]

    def get_token(self, obj: ClientToken) -> str:
        return self.context["token"]
