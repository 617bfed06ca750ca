"""Execution logs with known values, written straight to the table the data plane fills."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils import timezone

from deployments.models import Deployment
from monitoring.models import ExecutionLog


def add_logs(
    deployment: Deployment,
    version: str,
    latencies: Sequence[float],
    *,
    errors: int = 0,
    at: datetime | None = None,
    paired: bool = False,
    shared_errors: int = 0,
    shadow_latencies: Sequence[float] | None = None,
) -> None:
    """``len(latencies)`` executions of ``version``; the first ``errors`` of them failed.

    ``paired``: each was also evaluated in the other version (shadow), which
    failed on the first ``shared_errors`` inputs and succeeded on the rest, as fast
    (or with ``shadow_latencies``).
    """
    at = at or timezone.now()
    version_id = deployment.version_id if version == "v2" else deployment.baseline.version_id
    ExecutionLog.objects.bulk_create(
        ExecutionLog(
            deployment=deployment,
            served_version=version,
            version_id=version_id,
            success=index >= errors,
            latency_ms=latency,
            error_message="" if index >= errors else "boom",
            input={"n": index},
            created_at=at,
            **(
                {
                    "shadow_success": index >= shared_errors,
                    "shadow_latency_ms": shadow_latencies[index] if shadow_latencies else latency,
                    "agreed": (index >= errors) == (index >= shared_errors),
                }
                if paired
                else {}
            ),
        )
        for index, latency in enumerate(latencies)
    )
