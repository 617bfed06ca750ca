"""Assignments in the admin: read-only, found by deployment, tier, version or any id."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from assignments.models import Assignment
from deployments.admin import ReadOnlyAdmin
from deployments.models import Deployment

RECENT_DEPLOYMENTS = 30


class DeploymentFilter(admin.SimpleListFilter):
    """Filter by deployment (``?deployment=<id>``), the link the deployment page uses.

    Offers the most recent deployments, plus the selected one however old; a
    custom filter because the stock one lists every deployment with a query each.
    """

    title = "deployment"
    parameter_name = "deployment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = list(
            Deployment.objects.select_related("ruleset", "version").order_by("-created_at")[
                :RECENT_DEPLOYMENTS
            ]
        )
        selected = _as_uuid(self.value())
        if selected is not None and all(d.pk != selected for d in recent):
            extra = Deployment.objects.select_related("ruleset", "version").filter(pk=selected)
            recent.extend(extra)
        return [(str(d.pk), str(d)) for d in recent]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() is None:
            return queryset
        selected = _as_uuid(self.value())
        return queryset.filter(deployment_id=selected) if selected else queryset.none()


def _as_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = [
        "tier",
        "identifier",
        "assigned_version",
        "version",
        "deployment",
        "assigned_at",
        "expires_at",
    ]
    list_filter = [DeploymentFilter, "tier", "assigned_version"]
    search_fields = ["identifier", "user_id", "session_id", "workflow_id"]
    search_help_text = "An assignment id, or a user, session or workflow id."
    list_select_related = ["deployment__ruleset", "deployment__version", "version__ruleset"]
    ordering = ["-assigned_at"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Also match the assignment's own id, which is a UUID and so not in search_fields."""
        results, duplicates = super().get_search_results(request, queryset, search_term)
        assignment_id = _as_uuid(search_term.strip())
        if assignment_id is not None:
            results = results | queryset.filter(pk=assignment_id)
        return results, duplicates
