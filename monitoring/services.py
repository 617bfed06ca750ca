"""Writes of the measurement side: the execution log (and, later, the breaker)."""

from __future__ import annotations

from typing import Any

from assignments.hooks import ExecutionRecord
from monitoring.models import ExecutionLog


def execution_record(record: ExecutionRecord, canary_config: dict[str, Any]) -> ExecutionLog:
    """Store one canary execution synchronously, before its response is sent.

    A 200 is only returned after this insert commits, so no answered request is
    missing from the metrics.
    """
    return ExecutionLog.objects.create(
        deployment_id=record.deployment_id,
        served_version=record.served_version,
        version_id=record.version_id,
        success=record.success,
        latency_ms=record.latency_ms,
        error_rule=(record.error_rule or "")[:100],
        error_message=record.error_message,
        user_id=record.user_id or "",
        session_id=record.session_id or "",
        workflow_id=record.workflow_id or "",
        input=record.input,
        output=record.output,
        created_at=record.executed_at,
    )
