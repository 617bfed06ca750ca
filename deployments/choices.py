from django.db import models


class DeploymentStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    CANARY = "canary", "Canary"
    ACTIVE = "active", "Active"
    ROLLED_BACK = "rolled_back", "Rolled back"
    DEPRECATED = "deprecated", "Deprecated"


class CompensationStrategy(models.TextChoices):
    ROLLBACK_ONLY = "rollback_only", "Roll back only"
    NOTIFY_AND_ROLLBACK = "notify_and_rollback", "Notify and roll back"
    MANUAL = "manual", "Manual"


class EventAction(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Updated"
    START_CANARY = "start_canary", "Canary started"
    SET_TRAFFIC = "set_traffic", "Traffic changed"
    PROMOTE = "promote", "Promoted"
    APPROVE = "approve", "Promotion approved (more approvals pending)"
    ROLLBACK = "rollback", "Rolled back"
    DEPRECATE = "deprecate", "Deprecated"
    SUPERSEDE = "supersede", "Superseded by a promotion"
    RESTORE = "restore", "Restored by a rollback"
    COMPENSATION_COMPLETE = "compensation_complete", "Compensation marked done"
    BREAKER_OPEN = "breaker_open", "Circuit breaker opened"
    REGRESSION_DETECTED = "regression_detected", "Regression detected (held until acted on)"
    REGRESSION_DISMISSED = "regression_dismissed", "Regression dismissed"
    BAKE_COMPLETE = "bake_complete", "Bake after promotion complete"
    GATE_CLOSED = "gate_closed", "Held at a closed gate"
    PLAN_STEP = "plan_step", "Rollout plan step"
    PAUSE = "pause", "Paused"
    RESUME = "resume", "Resumed"
    BACKTEST_COMPLETED = "backtest_completed", "Backtest completed"


class CompensationStatus(models.TextChoices):
    NONE = "none", "None"
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"


class PlanState(models.TextChoices):
    """A rollout plan's state (SPEC 10.1); ``none`` is a canary without steps."""

    NONE = "none", "No plan"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    DONE = "done", "Done"
