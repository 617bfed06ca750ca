from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from deployments.canary_config import default_canary_config
from deployments.choices import (
    CompensationStatus,
    CompensationStrategy,
    DeploymentStatus,
    EventAction,
    PlanState,
)

SEMVER_PATTERN = (
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
semver_validator = RegexValidator(
    SEMVER_PATTERN, 'Must be a semantic version such as "v2.1.0" or "2.1.0".'
)


class RuleSet(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every lifecycle change of the rule set's deployments, in the same
    # transaction: the data plane's in-process routing state is valid only while
    # it carries the current value (see ``assignments.routing``).
    routing_generation = models.BigIntegerField(default=0, editable=False)
    # Dotted input paths never stored with an execution (``deployments.rules.redaction``).
    redacted_input_paths = models.JSONField(default=list, blank=True)
    # The share (percent) of executes served by the active version, while no canary
    # runs, whose (redacted) input is kept as a recorded production input for
    # backtests (SPEC 10.2). Part of the routing state: a change bumps the generation.
    capture_percentage = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RuleSetVersion(models.Model):
    """One immutable release of a rule set's rules; a change is a new version."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ruleset = models.ForeignKey(RuleSet, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=64, validators=[semver_validator])
    rules = models.JSONField()
    default = models.JSONField(null=True, blank=True)
    changelog = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The rule set's test cases run against this version when it was created
    # (``services.test_cases_run``): what the version's admin page shows.
    test_report = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["ruleset", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["ruleset", "version"], name="uniq_version_per_ruleset")
        ]
        indexes = [models.Index(fields=["ruleset", "-created_at"], name="version_latest_idx")]

    def __str__(self) -> str:
        return f"{self.ruleset.name} {self.version}"


class Deployment(models.Model):
    """The release of one rule-set version; its status changes only through services."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ruleset = models.ForeignKey(RuleSet, on_delete=models.PROTECT, related_name="deployments")
    version = models.ForeignKey(
        RuleSetVersion, on_delete=models.PROTECT, related_name="deployments"
    )
    changelog = models.TextField(blank=True, default="")
    canary_config = models.JSONField(default=default_canary_config)
    compensation_strategy = models.CharField(
        max_length=32,
        choices=CompensationStrategy.choices,
        default=CompensationStrategy.ROLLBACK_ONLY,
    )
    status = models.CharField(
        max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.DRAFT
    )
    traffic_percentage = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    canary_target_filter = models.JSONField(null=True, blank=True)
    baseline = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="successors",
        help_text="The deployment that was active when this one started; its version is v1.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    deprecated_at = models.DateTimeField(null=True, blank=True)
    rollback_reason = models.TextField(blank=True, default="")
    compensation_status = models.CharField(
        max_length=16,
        choices=CompensationStatus.choices,
        default=CompensationStatus.NONE,
        help_text="Pending after a manual-compensation rollback until an operator marks it done.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["ruleset"],
                condition=Q(status=DeploymentStatus.CANARY),
                name="one_canary_per_ruleset",
            ),
            models.UniqueConstraint(
                fields=["ruleset"],
                condition=Q(status=DeploymentStatus.ACTIVE),
                name="one_active_per_ruleset",
            ),
            models.CheckConstraint(
                condition=Q(traffic_percentage__gte=0) & Q(traffic_percentage__lte=100),
                name="traffic_percentage_0_100",
            ),
        ]
        indexes = [
            models.Index(fields=["ruleset", "status"], name="deployment_ruleset_status_idx"),
            models.Index(fields=["status", "-created_at"], name="deployment_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.ruleset.name} {self.version.version} ({self.status})"


class DeploymentEvent(models.Model):
    """The audit trail: every transition and traffic change, with who did it and why."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=32, choices=EventAction.choices)
    actor = models.CharField(max_length=150, help_text="A username or a system actor.")
    from_status = models.CharField(max_length=16, choices=DeploymentStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=DeploymentStatus.choices, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    # Set by the service from its (injectable) clock, so scheduled jobs can be replayed in tests.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["deployment", "created_at"], name="event_deployment_idx")]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor}"


class PromotionApproval(models.Model):
    """One approver's "yes" to promoting a canary, while more approvals are required.

    Rows live only while a promotion is pending: a traffic change, a rollback or
    the promote itself deletes them (the ``approve`` events keep the history).
    The unique constraints make "the same person twice" impossible even for two
    requests that race past the service's checks.
    """

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="approvals")
    approver = models.CharField(max_length=150, help_text="The approver's username.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "approver"], name="one_approval_per_approver"
            ),
            models.UniqueConstraint(
                fields=["deployment", "user"],
                condition=Q(user__isnull=False),
                name="one_approval_per_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.approver} approved {self.deployment_id}"


class DeploymentPlan(models.Model):
    """Where a canary's rollout plan (``canary_config.steps``) stands, and whether it is paused.

    One row per started canary; without steps it only carries a pause of
    ``auto_progress``. Every change goes through ``deployments.services.plans`` under the
    deployment's row lock, compared against ``current_step`` and ``state``, so two
    approvers resuming at once move it one step.
    """

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="plan"
    )
    state = models.CharField(max_length=16, choices=PlanState.choices, default=PlanState.NONE)
    # The state a pause interrupted, restored by resume.
    paused_from = models.CharField(max_length=16, choices=PlanState.choices, blank=True)
    current_step = models.PositiveSmallIntegerField(default=0)
    step_started_at = models.DateTimeField(null=True, blank=True)
    # [{step, started_at, ended_at}], one per step entered.
    history = models.JSONField(default=list, blank=True)
    # The step whose "not now" refusal was last recorded: one event per step, not per run.
    refused_step = models.SmallIntegerField(null=True, blank=True)
    waiting_for = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"plan of {self.deployment_id}: {self.state} at step {self.current_step}"


class RuleSetTestCase(models.Model):
    """An input and the output the rule set must give for it (the guide's "tested with /test").

    Every new version runs them at creation, and a draft's preflight requires them
    to pass.
    """

    ruleset = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="test_cases")
    name = models.CharField(max_length=200)
    input = models.JSONField()
    expected_output = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["ruleset", "name"]
        constraints = [
            models.UniqueConstraint(fields=["ruleset", "name"], name="uniq_test_case_name")
        ]

    def __str__(self) -> str:
        return self.name
