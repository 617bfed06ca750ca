"""Read-only registration of the lifecycle models; changes go through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from deployments.models import Deployment, DeploymentEvent, RuleSet, RuleSetVersion


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RuleSet)
class RuleSetAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name", "description"]


@admin.register(RuleSetVersion)
class RuleSetVersionAdmin(ReadOnlyAdmin):
    list_display = ["ruleset", "version", "created_by", "created_at"]
    list_filter = ["ruleset"]
    search_fields = ["version", "changelog"]


class DeploymentEventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "actor", "action", "from_status", "to_status", "payload"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = [
        "ruleset",
        "version",
        "status",
        "traffic_percentage",
        "started_at",
        "promoted_at",
        "created_at",
    ]
    list_filter = ["status", "ruleset"]
    search_fields = ["version__version", "changelog"]
    list_select_related = ["ruleset", "version"]
    inlines = [DeploymentEventInline]


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "action", "actor", "from_status", "to_status", "created_at"]
    list_filter = ["action"]
    list_select_related = ["deployment__ruleset", "deployment__version"]
