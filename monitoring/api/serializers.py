"""Response shapes of the measurement endpoints, for the OpenAPI schema.

The views build their answers as dicts; these serializers only describe them.
"""

from __future__ import annotations

from typing import Any

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
    basis = serializers.ChoiceField(
        choices=["paired", "unpaired"],
        help_text="paired: both versions evaluated on the same inputs (shadow evaluation).",
    )


def _interval(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(), min_length=2, max_length=2, allow_null=True, **kwargs
    )


class ErrorRateTestSerializer(serializers.Serializer):
    """Paired (McNemar, with ``pairs``) or unpaired (Agresti-Caffo, with ``n_v1``/``n_v2``)."""

    test = serializers.CharField()
    p_value = serializers.FloatField()
    significant = serializers.BooleanField()
    difference = serializers.FloatField(allow_null=True)
    confidence_interval = _interval()
    confidence_level = serializers.FloatField()
    adjusted_difference = serializers.FloatField(required=False)
    n_v1 = serializers.IntegerField(required=False)
    n_v2 = serializers.IntegerField(required=False)
    pairs = serializers.IntegerField(required=False)
    only_v1_failed = serializers.IntegerField(required=False)
    only_v2_failed = serializers.IntegerField(required=False)
    v1_error_rate = serializers.FloatField(
        required=False, allow_null=True, help_text="v1's error rate on what was compared."
    )
    v2_error_rate = serializers.FloatField(
        required=False, allow_null=True, help_text="v2's error rate on what was compared."
    )


class LatencyTestSerializer(serializers.Serializer):
    """Paired (sign test, median v2/v1 ratio) or unpaired (Mann-Whitney, median shift)."""

    test = serializers.CharField()
    p_value = serializers.FloatField()
    significant = serializers.BooleanField()
    confidence_level = serializers.FloatField()
    u_statistic = serializers.FloatField(allow_null=True, required=False)
    median_difference_ms = serializers.FloatField(allow_null=True, required=False)
    confidence_interval_ms = _interval(required=False)
    sample_v1 = serializers.IntegerField(required=False)
    sample_v2 = serializers.IntegerField(required=False)
    pairs = serializers.IntegerField(required=False)
    v2_over_v1_median_ratio = serializers.FloatField(allow_null=True, required=False)
    confidence_interval = _interval(required=False)


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
    p_value = serializers.FloatField(allow_null=True)


class SampleRatioSerializer(serializers.Serializer):
    contexts = serializers.IntegerField()
    v2_contexts = serializers.IntegerField()
    observed_share = serializers.FloatField(allow_null=True)
    expected_share = serializers.FloatField()
    p_value = serializers.FloatField(allow_null=True)
    mismatch = serializers.BooleanField()
    since = serializers.DateTimeField(allow_null=True)


class DecisionFreshnessSerializer(serializers.Serializer):
    decided_at = serializers.DateTimeField()
    newest_evidence_at = serializers.DateTimeField(
        allow_null=True, help_text="The newest execution the decision saw."
    )
    evidence_age_seconds = serializers.FloatField(allow_null=True)


class WorseTestSerializer(serializers.Serializer):
    basis = serializers.ChoiceField(choices=["paired", "unpaired", "none"])
    rejected = serializers.BooleanField(
        help_text="v2 fails more often than v1, by a test valid however often anyone looks."
    )
    p_value = serializers.FloatField(help_text="Always-valid p-value.")
    detail = serializers.CharField()
    only_v1_failed = serializers.IntegerField()
    only_v2_failed = serializers.IntegerField()


class NonInferioritySerializer(serializers.Serializer):
    basis = serializers.ChoiceField(choices=["paired", "unpaired", "none"])
    margin = serializers.FloatField()
    interval = _interval()
    shown = serializers.BooleanField(
        help_text="The upper bound of v2 - v1's error rate is below the margin: promote evidence."
    )
    samples = serializers.IntegerField()
    detail = serializers.CharField()


class ComparisonEvidenceSerializer(serializers.Serializer):
    error_rate = ErrorRateTestSerializer(allow_null=True)
    latency = LatencyTestSerializer(allow_null=True)
    thresholds = ThresholdCheckSerializer(many=True)
    breaches = BreachSerializer(many=True)
    breaker_state = serializers.CharField()
    sample_ratio = SampleRatioSerializer(allow_null=True)
    look = serializers.IntegerField(help_text="The monitor's look since the canary started.")
    look_alpha = serializers.FloatField(help_text="The significance level spent at this look.")
    min_samples = serializers.IntegerField()
    enough_samples = serializers.BooleanField()
    v2_worse = WorseTestSerializer()
    non_inferiority = NonInferioritySerializer()
    latency_rule = serializers.DictField(
        allow_null=True, help_text="The latency rule's confidence bound on the 5-minute window."
    )
    waiting_for = serializers.ListField(
        child=serializers.CharField(), help_text="Why the recommendation is not promote yet."
    )


class ComparisonOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    comparison = ComparisonSummarySerializer()
    analysis = ComparisonAnalysisSerializer()
    evidence = ComparisonEvidenceSerializer()
    v1_metrics = VersionMetricsSerializer(allow_null=True)
    v2_metrics = VersionMetricsSerializer(allow_null=True)
    window = WindowSerializer()
    decision = DecisionFreshnessSerializer()


class HealthOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    health_status = serializers.ChoiceField(choices=["healthy", "degraded", "unhealthy", "no_data"])
    circuit_breaker_state = serializers.ChoiceField(
        choices=["CLOSED", "OPEN", "HALF_OPEN", "UNKNOWN"]
    )
    current_error_rate = serializers.FloatField(allow_null=True)
    current_success_rate = serializers.FloatField(allow_null=True)
    last_check_at = serializers.DateTimeField()
    warnings = serializers.ListField(child=serializers.CharField())
    dark_launch = serializers.BooleanField(help_text="A canary at 0%: v2 runs only in shadow.")
    recommendation = serializers.ChoiceField(choices=["rollback", "promote", "collect_more_data"])
    decision = DecisionFreshnessSerializer()
    baking = serializers.BooleanField(
        help_text="Promoted, and still judged against the previous version evaluated in shadow."
    )
    bake_ends_at = serializers.DateTimeField(allow_null=True)


class ShadowOutcomesSerializer(serializers.Serializer):
    both_succeeded = serializers.IntegerField()
    only_v1_failed = serializers.IntegerField()
    only_v2_failed = serializers.IntegerField()
    both_failed = serializers.IntegerField()


class McNemarSerializer(serializers.Serializer):
    statistic = serializers.FloatField()
    p_value = serializers.FloatField()
    worse = serializers.ChoiceField(choices=["v1", "v2"], allow_null=True)


class ShadowLatencySerializer(serializers.Serializer):
    pairs = serializers.IntegerField()
    v2_over_v1_median_ratio = serializers.FloatField(allow_null=True)
    ci = _interval()


class DecisionChangeSerializer(serializers.Serializer):
    """One change of decision between two versions, with how many inputs made it."""

    v1_rule = serializers.CharField(allow_null=True)
    v2_rule = serializers.CharField(allow_null=True)
    v1_output = serializers.JSONField(allow_null=True)
    v2_output = serializers.JSONField(allow_null=True)
    count = serializers.IntegerField()


class ShadowChangeSerializer(DecisionChangeSerializer):
    v1_success = serializers.BooleanField()
    v2_success = serializers.BooleanField()


class ShadowOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    dark_launch = serializers.BooleanField()
    shadow_percentage = serializers.IntegerField()
    evaluated = serializers.IntegerField()
    agreed = serializers.IntegerField()
    disagreed = serializers.IntegerField()
    disagreement_rate = serializers.FloatField(allow_null=True)
    disagreement_rate_ci = _interval()
    outcomes = ShadowOutcomesSerializer()
    mcnemar = McNemarSerializer()
    latency = ShadowLatencySerializer()
    changes = ShadowChangeSerializer(many=True)
    window = WindowSerializer()


class ShadowDifferenceSerializer(serializers.Serializer):
    execution_id = serializers.IntegerField()
    executed_at = serializers.DateTimeField()
    served_version = serializers.ChoiceField(choices=["v1", "v2"])
    input = serializers.JSONField()
    redacted_paths = serializers.ListField(
        child=serializers.CharField(), help_text="Input paths not stored (['*']: no input)."
    )
    redaction = serializers.CharField(help_text="e.g. 'input redacted: customer.email'; or ''.")
    v1_output = serializers.JSONField(allow_null=True)
    v2_output = serializers.JSONField(allow_null=True)
    v1_rule = serializers.CharField(allow_null=True)
    v2_rule = serializers.CharField(allow_null=True)
    v1_success = serializers.BooleanField()
    v2_success = serializers.BooleanField()


class ShadowDifferencesOutputSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ShadowDifferenceSerializer(many=True)


class CompensationSummarySerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    compensation_strategy = serializers.ChoiceField(choices=CompensationStrategy.choices)
    compensation_status = serializers.ChoiceField(choices=CompensationStatus.choices)
    pending = serializers.BooleanField()
    flagged = serializers.IntegerField()
    processed = serializers.IntegerField()
    differing = serializers.IntegerField()
    redacted = serializers.IntegerField(
        help_text="Flagged executions whose input was redacted: not replayed, listed to check."
    )


class CompensationDifferenceSerializer(serializers.Serializer):
    execution_id = serializers.IntegerField()
    executed_at = serializers.DateTimeField()
    user_id = serializers.CharField(allow_null=True)
    session_id = serializers.CharField(allow_null=True)
    workflow_id = serializers.CharField(allow_null=True)
    input = serializers.JSONField()
    redacted_paths = serializers.ListField(
        child=serializers.CharField(), help_text="Input paths not stored (['*']: no input)."
    )
    redaction = serializers.CharField(help_text="e.g. 'input redacted: customer.email'; or ''.")
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
