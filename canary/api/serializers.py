from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a typo is a 400 instead of a silently ignored field."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({str(key): ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON value that must be an object; a key whose value is not valid JSON is named."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            # NOTE: `1e400` parses to infinity, which strict JSON cannot hold; say which
            # key carried it rather than only that the object is invalid.
            invalid: dict[str, list[str]] = {}
            for key, item in data.items():
                try:
                    super().to_internal_value(item)
                except serializers.ValidationError:
                    invalid[str(key)] = ["Must be valid JSON: numbers must be finite."]
            if invalid:
                raise serializers.ValidationError(invalid)
        value = super().to_internal_value(data)
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string: numbers and booleans are a type error."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        return super().to_internal_value(data)


# Why an evaluation failed; shared by execute (data plane) and the rule-set test. (A
# comment, not a docstring: a docstring would become the schema's description.)
class RuleErrorSerializer(serializers.Serializer):
    rule = serializers.CharField(allow_null=True)
    message = serializers.CharField()
