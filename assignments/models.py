from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from deployments.models import Deployment, RuleSet, RuleSetVersion


class Tier(models.TextChoices):
    WORKFLOW = "workflow", "Workflow"
    SESSION = "session", "Session"
    USER = "user", "User"


class ServedVersion(models.TextChoices):
    V1 = "v1", "v1 (stable)"
    V2 = "v2", "v2 (canary)"


class Assignment(models.Model):
    """The version one workflow, session or user is pinned to during one canary."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # NOTE: no single-column indexes on the foreign keys: the unique constraint and
    # the look-up indexes lead with the deployment, and versions are never deleted.
    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    tier = models.CharField(max_length=16, choices=Tier.choices)
    identifier = models.CharField(max_length=200)
    assigned_version = models.CharField(max_length=2, choices=ServedVersion.choices)
    version = models.ForeignKey(
        RuleSetVersion,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        help_text="The rule-set version this context is served.",
    )
    # The request's ids when the decision was made, for look-ups by any of them.
    user_id = models.CharField(max_length=200, blank=True, default="")
    session_id = models.CharField(max_length=200, blank=True, default="")
    workflow_id = models.CharField(max_length=200, blank=True, default="")
    assigned_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-assigned_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "tier", "identifier"], name="uniq_assignment_per_context"
            )
        ]
        indexes = [
            models.Index(fields=["deployment", "user_id"], name="assignment_user_idx"),
            models.Index(fields=["deployment", "session_id"], name="assignment_session_idx"),
            models.Index(fields=["deployment", "workflow_id"], name="assignment_workflow_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tier}:{self.identifier} -> {self.assigned_version}"


class ClientToken(models.Model):
    """A browser-safe token: ``resolve`` only, on the listed rule sets, from the listed origins.

    Only a SHA-512 digest of the token is stored (as for API tokens); revoking one
    deletes its row, and every request looks the digest up, so a revocation holds
    in every process at once (``assignments.client_tokens``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    token_prefix = models.CharField(
        max_length=16, help_text="The token's first characters, to tell tokens apart."
    )
    digest = models.CharField(max_length=128, unique=True)
    rulesets = models.ManyToManyField(RuleSet, related_name="client_tokens")
    allowed_origins = models.JSONField(
        default=list, help_text="Origins (scheme://host[:port]) a browser may call resolve from."
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}…)"
