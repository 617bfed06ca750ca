"""Reads of stored assignments (the routing state lives in ``assignments.routing``)."""

from __future__ import annotations

from django.db.models import QuerySet

from assignments.buffer import drain_now
from assignments.models import Assignment
from deployments.models import Deployment


def assignment_list(
    *,
    deployment: Deployment,
    user_id: str | None = None,
    session_id: str | None = None,
    workflow_id: str | None = None,
) -> QuerySet[Assignment]:
    """Exact: decisions still on their way to the database are written first."""
    drain_now()
    assignments = Assignment.objects.filter(deployment=deployment)
    if user_id:
        assignments = assignments.filter(user_id=user_id)
    if session_id:
        assignments = assignments.filter(session_id=session_id)
    if workflow_id:
        assignments = assignments.filter(workflow_id=workflow_id)
    return assignments.order_by("-assigned_at", "id")
