"""Response shapes of the measurement endpoints, for the OpenAPI schema.

The views build their answers as dicts; these serializers only describe them.
"""

from __future__ import annotations

from rest_framework import serializers

from deployments.choices import CompensationStatus, CompensationStrategy


class VersionMetricsSerializer(serializers.Serializer):
    total_requests = serializers.IntegerField()
    success_count = serializers.IntegerField()
    error_count = serializers.IntegerField()
    success_rate = serializers.FloatField()
    error_rate = serializers.FloatField()
    avg_latency_ms = serializers.FloatField()
    p95_latency_ms = serializers.FloatField()
    p99_latency_ms = serializers.FloatField()


class WindowSerializer(serializers.Serializer):
    window_minutes = serializers.IntegerField(allow_null=True)
    since = serializers.DateTimeField(allow_null=True)
    until = serializers.DateTimeField(required=False)


class MetricsOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    v1_metrics = VersionMetricsSerializer(allow_null=True)
    v2_metrics = VersionMetricsSerializer(allow_null=True)
    window = WindowSerializer()


class ComparisonSummarySerializer(serializers.Serializer):
    success_rate_diff = serializers.FloatField(allow_null=True)
    error_rate_diff = serializers.FloatField(allow_null=True)
    latency_diff_ms = serializers.FloatField(allow_null=True)
    is_better = serializers.BooleanField()
    recommendation = serializers.ChoiceField(choices=["promote", "rollback", "collect_more_data"])


class ComparisonAnalysisSerializer(serializers.Serializer):
    v1_is_more_reliable = serializers.BooleanField()
    v2_is_faster = serializers.BooleanField()
    significant_difference = serializers.BooleanField()


class ErrorRateTestSerializer(serializers.Serializer):
    test = serializers.CharField()
    p_value = serializers.FloatField()
    significant = serializers.BooleanField()
    difference = serializers.FloatField()
    confidence_interval = serializers.ListField(child=serializers.FloatField())
    confidence_level = serializers.FloatField()
    n_v1 = serializers.IntegerField()
    n_v2 = serializers.IntegerField()


class LatencyTestSerializer(serializers.Serializer):
    test = serializers.CharField()
    p_value = serializers.FloatField()
    u_statistic = serializers.FloatField(allow_null=True)
    significant = serializers.BooleanField()
    sample_v1 = serializers.IntegerField()
    sample_v2 = serializers.IntegerField()


class ThresholdCheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    rule = serializers.CharField()
    observed = serializers.FloatField()
    held = serializers.BooleanField()


class BreachSerializer(serializers.Serializer):
    rule = serializers.CharField()
    message = serializers.CharField()
    observed = serializers.FloatField()
    threshold = serializers.FloatField()


class ComparisonEvidenceSerializer(serializers.Serializer):
    error_rate = ErrorRateTestSerializer(allow_null=True)
    latency = LatencyTestSerializer(allow_null=True)
    thresholds = ThresholdCheckSerializer(many=True)
    breaches = BreachSerializer(many=True)
    min_samples = serializers.IntegerField()
    enough_samples = serializers.BooleanField()


class ComparisonOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    comparison = ComparisonSummarySerializer()
    analysis = ComparisonAnalysisSerializer()
    evidence = ComparisonEvidenceSerializer()
    v1_metrics = VersionMetricsSerializer(allow_null=True)
    v2_metrics = VersionMetricsSerializer(allow_null=True)
    window = WindowSerializer()


class HealthOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    health_status = serializers.ChoiceField(choices=["healthy", "degraded", "unhealthy"])
    circuit_breaker_state = serializers.ChoiceField(choices=["CLOSED", "OPEN", "HALF_OPEN"])
    current_error_rate = serializers.FloatField(allow_null=True)
    current_success_rate = serializers.FloatField(allow_null=True)
    last_check_at = serializers.DateTimeField()
    warnings = serializers.ListField(child=serializers.CharField())


class CompensationSummarySerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    compensation_strategy = serializers.ChoiceField(choices=CompensationStrategy.choices)
    compensation_status = serializers.ChoiceField(choices=CompensationStatus.choices)
    pending = serializers.BooleanField()
    flagged = serializers.IntegerField()
    processed = serializers.IntegerField()
    differing = serializers.IntegerField()


class CompensationDifferenceSerializer(serializers.Serializer):
    execution_id = serializers.IntegerField()
    executed_at = serializers.DateTimeField()
    user_id = serializers.CharField(allow_null=True)
    session_id = serializers.CharField(allow_null=True)
    workflow_id = serializers.CharField(allow_null=True)
    input = serializers.JSONField()
    v2_success = serializers.BooleanField()
    v2_output = serializers.JSONField(allow_null=True)
    v1_success = serializers.BooleanField(allow_null=True)
    v1_output = serializers.JSONField(allow_null=True)


class CompensationOutputSerializer(CompensationSummarySerializer):
    differences = CompensationDifferenceSerializer(many=True)
    total_differences = serializers.IntegerField()


class CompensationReplayOutputSerializer(CompensationSummarySerializer):
    replay = serializers.ChoiceField(choices=["queued"])


class SchedulerJobSerializer(serializers.Serializer):
    name = serializers.CharField()
    task = serializers.CharField()
    schedule = serializers.CharField(allow_null=True)
    interval_seconds = serializers.FloatField(allow_null=True)
    enabled = serializers.BooleanField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()
    last_finished_at = serializers.DateTimeField(allow_null=True)
    last_outcome = serializers.CharField(allow_null=True)
    ran_recently = serializers.BooleanField()


class SchedulerJobsOutputSerializer(serializers.Serializer):
    jobs = SchedulerJobSerializer(many=True)
    total = serializers.IntegerField()


class ReadinessCheckSerializer(serializers.Serializer):
    name = serializers.ChoiceField(
        choices=[
            "time_at_traffic",
            "success_rate",
            "p95_latency",
            "breaker_closed",
            "min_samples",
            "sample_ratio",
            "shadow_agreement",
        ]
    )
    passed = serializers.BooleanField()
    required = serializers.BooleanField(help_text="False: informational, never blocks.")
    observed = serializers.JSONField(
        allow_null=True, help_text="The measured value (a number, or the breaker state)."
    )
    detail = serializers.CharField()


class ReadinessOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    status = serializers.CharField()
    ready = serializers.BooleanField()
    checks = ReadinessCheckSerializer(many=True)
    detail = serializers.CharField()
    enforce_readiness = serializers.BooleanField()
    required_approvals = serializers.IntegerField()
    approved_by = serializers.ListField(
        child=serializers.CharField(), help_text="Approvals of a promotion still pending."
    )
    checked_at = serializers.DateTimeField()
