from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from assignments.models import ServedVersion
from deployments.models import Deployment, RuleSet, RuleSetVersion


class ExecutionLog(models.Model):
    """One evaluation during a canary: the raw material of metrics, breaker and compensation."""

    id = models.BigAutoField(primary_key=True)
    # NOTE: no single-column indexes on the foreign keys: the composite indexes
    # below lead with the deployment, versions are never deleted, and every index
    # is paid for on each of the many rows the data plane writes.
    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="execution_logs", db_index=False
    )
    served_version = models.CharField(max_length=2, choices=ServedVersion.choices)
    version = models.ForeignKey(
        RuleSetVersion, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    success = models.BooleanField()
    latency_ms = models.FloatField()
    error_rule = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    # The rule whose condition matched ("" when the default output applied or it failed).
    matched_rule = models.CharField(max_length=100, blank=True, default="")
    user_id = models.CharField(max_length=200, blank=True, default="")
    session_id = models.CharField(max_length=200, blank=True, default="")
    workflow_id = models.CharField(max_length=200, blank=True, default="")
    input = models.JSONField()
    # The input paths removed before storing (rule-set redaction); ["*"]: no input
    # was stored at all (CANARY_STORE_INPUTS off). Null: the input is complete.
    redacted_paths = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    needs_reprocess = models.BooleanField(default=False)
    reprocessed_at = models.DateTimeField(null=True, blank=True)
    # Compensation replay: the stored input evaluated with v1's rules.
    replay_success = models.BooleanField(null=True, blank=True)
    replay_output = models.JSONField(null=True, blank=True)
    replay_differs = models.BooleanField(null=True, blank=True)
    # Paired (shadow) evaluation: the other version on the same input, never
    # returned to the caller. All null when the request was not shadowed.
    shadow_success = models.BooleanField(null=True, blank=True)
    shadow_output = models.JSONField(null=True, blank=True)
    # The shadow's matched rule, or the rule it failed in.
    shadow_rule = models.CharField(max_length=100, blank=True, default="")
    shadow_error_message = models.TextField(blank=True, default="")
    shadow_latency_ms = models.FloatField(null=True, blank=True)
    # Same success and an equal output in both versions.
    agreed = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["deployment", "served_version", "created_at"],
                name="execlog_window_idx",
            ),
            # Time windows across both versions (the monitor's, health's, rollups' tail).
            models.Index(fields=["deployment", "created_at"], name="execlog_deployment_time_idx"),
            # The console's log list: newest first across deployments, in a time window.
            models.Index(fields=["-created_at", "-id"], name="execlog_console_time_idx"),
            # The few pairs whose versions disagree, newest first (``/shadow/differences``).
            models.Index(
                fields=["deployment", "-created_at"],
                name="execlog_disagreement_idx",
                condition=models.Q(agreed=False),
            ),
        ]

    def __str__(self) -> str:
        outcome = "ok" if self.success else "error"
        return f"{self.served_version} {outcome} {self.latency_ms:.2f} ms"


class BreakerRecord(models.Model):
    """Breaker state when Redis is not configured (one row per deployment)."""

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="breaker"
    )
    state = models.CharField(max_length=16, default="CLOSED")
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.FloatField(null=True, blank=True)
    trial_started_at = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.state


class JobRun(models.Model):
    """A periodic job's lease (single flight) and heartbeat (did a worker run it lately?)."""

    name = models.CharField(max_length=200, primary_key=True)
    holder = models.CharField(max_length=200, blank=True, default="")
    held_until = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.name


class HealthRecord(models.Model):
    """The monitor's last verdict per deployment, so a change to unhealthy notifies once."""

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="health_record"
    )
    status = models.CharField(max_length=16)
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.status


class ExecutionRollup(models.Model):
    """One hour of one version's executions, pre-aggregated for long windows.

    ``latency_buckets[i]`` counts executions whose latency falls in
    ``[LOW * RATIO**i, LOW * RATIO**(i+1))`` (see ``monitoring.logstore.rollups``).
    """

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="rollups")
    served_version = models.CharField(max_length=2, choices=ServedVersion.choices)
    hour = models.DateTimeField()
    total = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    latency_sum = models.FloatField()
    latency_buckets = models.JSONField()
    # The hour's paired (shadowed) executions served by ``served_version``: their
    # outcome counts, both sides' latency histograms, the v2/v1 latency-ratio
    # histogram and the decision changes ``[v1 rule, v2 rule, v1 output, v2 output,
    # v1 success, v2 success, count]``. Null on rows written before these existed,
    # until the rollup job fills them in (``rollups.backfill_paired``).
    pairs_both_succeeded = models.PositiveIntegerField(null=True)
    pairs_only_v1_failed = models.PositiveIntegerField(null=True)
    pairs_only_v2_failed = models.PositiveIntegerField(null=True)
    pairs_both_failed = models.PositiveIntegerField(null=True)
    pairs_agreed = models.PositiveIntegerField(null=True)
    pairs_v2_slower = models.PositiveIntegerField(null=True)
    pairs_v2_faster = models.PositiveIntegerField(null=True)
    ratio_buckets = models.JSONField(null=True)
    paired_latency_buckets = models.JSONField(null=True)
    shadow_latency_buckets = models.JSONField(null=True)
    changes = models.JSONField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "served_version", "hour"], name="uniq_rollup_hour"
            )
        ]

    def __str__(self) -> str:
        return f"{self.served_version} {self.hour:%Y-%m-%d %H:00} x{self.total}"


class RollupWatermark(models.Model):
    """Executions of a deployment before ``until`` are all in ``ExecutionRollup``."""

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="rollup_watermark"
    )
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.until:%Y-%m-%d %H:%M}"


class GovernanceRecord(models.Model):
    """The monitor's last readiness verdict per canary, and what it has already told people.

    The verdict feeds the ``canary_ready`` gauge (the same value in every process).
    Each ``*_notified_*`` field is claimed with a compare-and-set update before a
    notification is sent, so overlapping or repeated monitor runs notify once: once
    per stretch at 50% for "ready", once per traffic step for a pending approval,
    once per day of a stale canary's age.
    """

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="governance_record"
    )
    ready = models.BooleanField(default=False)
    checks = models.JSONField(default=list, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    ready_notified_for = models.CharField(max_length=64, blank=True, default="")
    approval_notified_for = models.CharField(max_length=64, blank=True, default="")
    stale_notified_day = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return "ready" if self.ready else "not ready"


class CanaryDecision(models.Model):
    """The one decision (SPEC 9.6) as the monitor last made it, and a regression it holds.

    ``body`` is the decision's full answer; the console (home, the canary's page) reads it
    while fresh, so every tab shows the monitor's verdict without recomputing it.
    ``regression_detected_at`` is set
    by a compare-and-set when the monitor finds a rollback rule breached and does not
    roll back (automatic rollback off): the decision then stays ``rollback`` until the
    canary ends or an approver dismisses it, whatever the traffic does meanwhile.
    """

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="decision"
    )
    recommendation = models.CharField(max_length=32, default="collect_more_data")
    health_status = models.CharField(max_length=16, default="no_data")
    body = models.JSONField(default=dict, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    newest_evidence_at = models.DateTimeField(null=True, blank=True)
    regression_detected_at = models.DateTimeField(null=True, blank=True)
    regression_reasons = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return self.recommendation


# --- webhooks and triggers (SPEC 10.4) ---------------------------------------------------


class Webhook(models.Model):
    """An HTTP receiver of lifecycle events, signed per Standard Webhooks.

    ``secret`` is the signing key (``whsec_`` + base64): a symmetric key the sender
    needs at every delivery, so it is kept as is and shown only when created.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text='Event types, or ["*"] for all.')
    ruleset_ids = models.JSONField(default=list, blank=True, help_text="Empty: every rule set.")
    active = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return self.name


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one webhook: written in the event's transaction, sent after commit.

    ``event_id`` is the CloudEvent id and the ``webhook-id`` header: the same on every
    attempt, so receivers deduplicate an at-least-once delivery. ``event`` holds the
    CloudEvent's attributes and data as they were when the event happened.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=64)
    event = models.JSONField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_response = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=models.Q(status="pending"),
            )
        ]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_id"], name="one_delivery_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.webhook_id}"


class TriggerAction(models.TextChoices):
    ROLLBACK = "rollback", "Roll back"
    PAUSE = "pause", "Pause"


class Trigger(models.Model):
    """An alerting tool's kill switch: a secret URL that rolls back or pauses a canary.

    Only a SHA-512 digest of the secret is kept (as knox does for API tokens); the URL
    is shown once. Revoking deletes the row, so its URL is a 404 from then on.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    ruleset = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="triggers")
    action = models.CharField(max_length=16, choices=TriggerAction.choices)
    secret_digest = models.CharField(max_length=128, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return self.name


class MetricCheckRecord(models.Model):
    """The latest result of each of a canary's metric checks (SPEC 10.1), per monitor run.

    ``results`` is ``[{name, query, value, outcome, detail, max, min}]`` with ``outcome``
    ``pass``, ``breach`` or ``inconclusive``; health, readiness's ``metric:<name>`` checks,
    the plan and the console read it, so none of them queries Prometheus itself.
    """

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="metric_check_record"
    )
    results = models.JSONField(default=list, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"metric checks of {self.deployment_id}"


class CapturedInput(models.Model):
    """A production input kept for backtests: sampled from executes served by the active
    version while no canary ran (``RuleSet.capture_percentage``), redacted like the
    execution log. Drained from the execution stream; the id is the stream entry's,
    so a redelivered entry writes one row."""

    id = models.BigAutoField(primary_key=True)
    ruleset = models.ForeignKey(
        "deployments.RuleSet", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    version = models.ForeignKey(
        RuleSetVersion, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    input = models.JSONField()
    # The input paths removed before storing (null: the input is complete).
    redacted_paths = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Backtests read newest first in keyset pages; retention trims from the end.
            models.Index(fields=["ruleset", "created_at", "id"], name="capture_ruleset_time_idx"),
            models.Index(fields=["created_at"], name="capture_time_idx"),
        ]

    def __str__(self) -> str:
        return f"input captured {self.created_at:%Y-%m-%d %H:%M:%S}"


class BacktestStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Backtest(models.Model):
    """A version judged against another on recorded production inputs (SPEC 10.2).

    ``state`` holds the run's progress (where each input source was read up to)
    and the aggregates so far, committed with each chunk, so a run that dies
    resumes where the last chunk ended and reaches the same numbers.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ruleset = models.ForeignKey(
        "deployments.RuleSet", on_delete=models.CASCADE, related_name="backtests"
    )
    version = models.ForeignKey(RuleSetVersion, on_delete=models.PROTECT, related_name="+")
    against = models.ForeignKey(RuleSetVersion, on_delete=models.PROTECT, related_name="+")
    limit = models.PositiveIntegerField(default=10_000)
    expect_changes = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=16, choices=BacktestStatus.choices, default=BacktestStatus.QUEUED
    )
    total = models.PositiveIntegerField(default=0)
    evaluated = models.PositiveIntegerField(default=0)
    state = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # The last committed progress: a run silent for CANARY_BACKTEST_STALE_SECONDS is resumed.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["ruleset", "-created_at"], name="backtest_ruleset_idx"),
            models.Index(
                fields=["status", "heartbeat_at"],
                name="backtest_unfinished_idx",
                condition=models.Q(status__in=["queued", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"backtest {self.pk} ({self.status})"


class BacktestDifference(models.Model):
    """One input on which the two versions of a backtest disagreed (the first
    ``CANARY_BACKTEST_MAX_DIFFERENCES``, newest input first)."""

    id = models.BigAutoField(primary_key=True)
    backtest = models.ForeignKey(Backtest, on_delete=models.CASCADE, related_name="differences")
    # The input's place in the backtest's order (0 = newest): a resumed chunk writes it again
    # as the same row.
    position = models.PositiveIntegerField()
    input = models.JSONField()
    v1_output = models.JSONField(null=True)
    v2_output = models.JSONField(null=True)
    v1_rule = models.CharField(max_length=100, blank=True, default="")
    v2_rule = models.CharField(max_length=100, blank=True, default="")
    # Inside ``expect_changes``; null when the backtest declared none.
    expected = models.BooleanField(null=True)

    class Meta:
        ordering = ["backtest", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["backtest", "position"], name="uniq_backtest_difference_position"
            )
        ]

    def __str__(self) -> str:
        return f"difference {self.position} of {self.backtest_id}"
