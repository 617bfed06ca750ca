"""Compensation after a rollback: flag v2's executions, replay them on v1, list what differs."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from assignments.buffer import drain_now
from canary.dispatch import enqueue
from canary.errors import Conflict, ServiceUnavailable
from deployments.choices import CompensationStatus
from deployments.models import Deployment
from deployments.selectors import compiled_rules_for_version_id
from monitoring.models import ExecutionLog

REPLAY_BATCH = 500


def compensation_flag(*, deployment: Deployment) -> int:
    """Mark every v2 execution of the deployment for reprocessing (manual strategy)."""
    return ExecutionLog.objects.filter(deployment=deployment, served_version="v2").update(
        needs_reprocess=True
    )


def compensation_replay(*, deployment_id: Any, batch_size: int = REPLAY_BATCH) -> dict[str, int]:
    """Evaluate each flagged v2 execution's input with v1's rules, once.

    An execution stored with a redacted input is not evaluated (v1 would see an
    input missing fields and its answer would be a guess): it is counted as
    ``redacted`` and listed among the differences with its redaction note.

    Resumable and idempotent: rows are claimed one by one with a compare-and-set
    on ``reprocessed_at``, so a run killed half-way and started again (or two
    runs at once) processes every execution exactly once.
    """
    drain_now()
    deployment = Deployment.objects.select_related("baseline").get(pk=deployment_id)
    if deployment.baseline_id is None:
        raise Conflict("This deployment has no v1 to replay its executions on.")
    v1_rules = compiled_rules_for_version_id(str(deployment.baseline.version_id))
    processed = differing = redacted = 0
    last_id = 0
    while True:
        batch = list(
            ExecutionLog.objects.filter(
                deployment_id=deployment_id,
                needs_reprocess=True,
                reprocessed_at__isnull=True,
                id__gt=last_id,
            )
            .order_by("id")
            .only("id", "created_at", "input", "output", "success", "redacted_paths")[:batch_size]
        )
        if not batch:
            break
        for log in batch:
            last_id = log.id
            if log.redacted_paths:
                # v1 would run on an input missing fields: report it, never guess.
                redacted += ExecutionLog.objects.filter(
                    pk=log.pk, created_at=log.created_at, reprocessed_at__isnull=True
                ).update(reprocessed_at=timezone.now())
                continue
            evaluation = v1_rules.evaluate(log.input)
            differs = evaluation.success != log.success or evaluation.output != log.output
            # NOTE: created_at too: on PostgreSQL it picks the one day partition to touch.
            claimed = ExecutionLog.objects.filter(
                pk=log.pk, created_at=log.created_at, reprocessed_at__isnull=True
            ).update(
                replay_success=evaluation.success,
                replay_output=evaluation.output,
                replay_differs=differs,
                reprocessed_at=timezone.now(),
            )
            processed += claimed
            differing += claimed and differs
    return {"processed": processed + redacted, "differing": differing, "redacted": redacted}


def compensation_differences(*, deployment: Deployment) -> QuerySet[ExecutionLog]:
    """Replayed executions whose v1 answer differs, and those not replayable (redacted input)."""
    return ExecutionLog.objects.filter(
        Q(replay_differs=True) | Q(needs_reprocess=True, redacted_paths__isnull=False),
        deployment=deployment,
    ).order_by("id")


def compensation_summary(*, deployment: Deployment) -> dict[str, Any]:
    drain_now()
    flagged = ExecutionLog.objects.filter(deployment=deployment, needs_reprocess=True)
    return {
        "deployment_id": str(deployment.pk),
        "compensation_strategy": deployment.compensation_strategy,
        "compensation_status": deployment.compensation_status,
        "pending": deployment.compensation_status == CompensationStatus.PENDING,
        "flagged": flagged.count(),
        "processed": flagged.filter(reprocessed_at__isnull=False).count(),
        "differing": flagged.filter(replay_differs=True).count(),
        "redacted": flagged.filter(redacted_paths__isnull=False).count(),
    }


COMPENSATION_REPLAY_TASK = "monitoring.tasks.compensation_replay_task"


def compensation_replay_enqueue(*, deployment: Any) -> dict[str, Any]:
    """Queue the replay of a deployment's flagged executions; the API and the console call this.

    Refused (409) when nothing is flagged, and 503 when the broker is down:
    nothing changes then, and the caller can simply try again.
    """
    summary = compensation_summary(deployment=deployment)
    if not summary["flagged"]:
        raise Conflict(
            "No executions of this deployment are flagged for reprocessing; replay "
            "applies after a rollback with the manual compensation strategy."
        )
    try:
        # NOTE: no publish retries: with the broker down, answer now, not in seconds.
        enqueue(COMPENSATION_REPLAY_TASK, str(deployment.pk), retry=False)
    except (KombuOperationalError, RedisError, OSError) as exc:
        raise ServiceUnavailable(
            "The task queue is unreachable, so the replay was not queued and nothing "
            "changed. Try again once it is back.",
            retry_after=30,
        ) from exc
    return summary
