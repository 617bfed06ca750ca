"""Assignments (read-only, found by deployment, tier, version or any id) and client tokens."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from assignments import client_tokens
from assignments.models import Assignment, ClientToken
from canary.errors import ValidationFailed
from deployments.admin import ReadOnlyAdmin
from deployments.models import Deployment, RuleSet

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


class ClientTokenForm(forms.ModelForm):
    """Issue form: the origins as one per line; the values are checked by the service."""

    rulesets = forms.ModelMultipleChoiceField(queryset=RuleSet.objects.all())
    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One origin per line, e.g. https://app.example.com (no path, no wildcard).",
    )

    class Meta:
        model = ClientToken
        fields = ["name", "rulesets", "allowed_origins"]

    def clean_allowed_origins(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["allowed_origins"].splitlines()]
        try:
            return client_tokens.normalize_origins([line for line in lines if line])
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.field_errors["allowed_origins"]) from None


@admin.register(ClientToken)
class ClientTokenAdmin(admin.ModelAdmin):
    """Client tokens: issued here (shown once), listed by prefix, revoked by deleting.

    Issuing and revoking go through ``assignments.client_tokens``, as the API does.
    """

    form = ClientTokenForm
    list_display = ["token_prefix", "name", "ruleset_names", "origins", "created_at", "created_by"]
    list_display_links = ["token_prefix", "name"]
    search_fields = ["name", "token_prefix"]
    readonly_fields = ["token_prefix", "created_at", "created_by"]
    ordering = ["-created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return client_tokens.client_token_list()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "rulesets", "allowed_origins"]
        return ["token_prefix", "name", "rulesets", "allowed_origins", "created_at", "created_by"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # issued or revoked, never edited

    @admin.display(description="rule sets")
    def ruleset_names(self, obj: ClientToken) -> str:
        return ", ".join(sorted(ruleset.name for ruleset in obj.rulesets.all()))

    @admin.display(description="allowed origins")
    def origins(self, obj: ClientToken) -> str:
        return ", ".join(obj.allowed_origins)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        created, token = client_tokens.client_token_create(
            name=form.cleaned_data["name"],
            ruleset_ids=[str(ruleset.pk) for ruleset in form.cleaned_data["rulesets"]],
            allowed_origins=form.cleaned_data["allowed_origins"],
            actor=request.user,
        )
        # The admin's redirect and log entry refer to the row the service made.
        obj.pk = created.pk
        obj.token_prefix = created.token_prefix
        obj._state.adding = False
        messages.warning(
            request,
            f"Client token for “{created.name}”: {token} — copy it now; it is not shown again.",
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """The service stored the rule sets with the token."""

    def delete_model(self, request: HttpRequest, obj: ClientToken) -> None:
        client_tokens.client_token_revoke(token_id=obj.pk, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        client_tokens.client_tokens_revoke(tokens=list(queryset), actor=request.user)
