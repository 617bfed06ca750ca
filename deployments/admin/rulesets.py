"""Rule sets and their versions: browse the rules, dry-run a version ("Test this version")."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from canary.errors import DomainError
from canary.roles import (
    TEST_RULESETVERSION,
)
from deployments import services
from deployments.admin.display import (
    NONE,
    ReadOnlyAdmin,
    domain_error_text,
    form_error_text,
    pretty_json,
    uuid_or_404,
)
from deployments.models import RuleSet, RuleSetVersion


class RuleSetVersionInline(admin.TabularInline):
    model = RuleSetVersion
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["version", "changelog", "created_by", "created_at"]
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RuleSetVersion]:
        return super().get_queryset(request).select_related("created_by")


@admin.register(RuleSet)
class RuleSetAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "version_count", "created_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["name", "description", "redacted_paths", "created_at", "deployments_link"]
    fields = readonly_fields
    inlines = [RuleSetVersionInline]

    @admin.display(description="input paths never stored")
    def redacted_paths(self, obj: RuleSet) -> str:
        # Changed over the API (PATCH /rulesets/{id}, Admin role): docs/security.md.
        return ", ".join(obj.redacted_input_paths or []) or "none (every input stored whole)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RuleSet]:
        return super().get_queryset(request).annotate(_version_count=Count("versions"))

    @admin.display(description="versions", ordering="_version_count")
    def version_count(self, obj: RuleSet) -> int:
        return obj._version_count

    @admin.display(description="deployments")
    def deployments_link(self, obj: RuleSet) -> SafeString:
        url = reverse("admin:deployments_deployment_changelist") + f"?ruleset__id__exact={obj.pk}"
        return format_html('<a href="{}">Deployments of {}</a>', url, obj.name)


class JSONDocumentField(forms.JSONField):
    """JSON where ``{}`` and ``[]`` are values, not "missing" as Django treats them by default."""

    empty_values = [None, ""]


class RuleSetTestForm(forms.Form):
    """A dry run of one version: the same service as ``POST /rulesets/{id}/test``."""

    input = JSONDocumentField(
        label="Input",
        help_text='The request\'s input document, a JSON object, e.g. {"temperature": 26}.',
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "vLargeTextField"}),
    )
    expected_output = JSONDocumentField(
        label="Expected output",
        required=False,
        help_text="Optional JSON; when given, the test passes only if the output equals it.",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "class": "vLargeTextField"}),
    )

    def clean_input(self) -> dict[str, Any]:
        value = self.cleaned_data["input"]
        if not isinstance(value, dict):
            raise forms.ValidationError("Must be a JSON object.")
        limit = getattr(settings, "CANARY_MAX_INPUT_BYTES", 64 * 1024)
        if len(json.dumps(value)) > limit:
            raise forms.ValidationError(f"Must be at most {limit} bytes of JSON.")
        return value


@admin.register(RuleSetVersion)
class RuleSetVersionAdmin(ReadOnlyAdmin):
    list_display = ["ruleset", "version", "rule_count", "created_by", "created_at"]
    list_filter = ["ruleset"]
    search_fields = ["version", "changelog", "ruleset__name"]
    list_select_related = ["ruleset", "created_by"]
    readonly_fields = [
        "ruleset",
        "version",
        "changelog",
        "rules_table",
        "default_output",
        "created_by",
        "created_at",
    ]
    fields = readonly_fields
    change_form_template = "admin/deployments/rulesetversion/change_form.html"

    class Media:
        css = {"all": ["deployments/admin.css"]}

    @admin.display(description="rules")
    def rule_count(self, obj: RuleSetVersion) -> int:
        return len(obj.rules) if isinstance(obj.rules, list) else 0

    @admin.display(description="rules (first match wins)")
    def rules_table(self, obj: RuleSetVersion) -> SafeString:
        rules = obj.rules if isinstance(obj.rules, list) else []
        if not rules:
            return format_html("{}", NONE)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            (
                (
                    number,
                    rule.get("name", ""),
                    rule.get("condition", ""),
                    json.dumps(rule.get("output"), ensure_ascii=False),
                )
                for number, rule in enumerate(rules, start=1)
            ),
        )
        return format_html(
            '<table class="canary-table canary-rules"><thead><tr><th>#</th><th>name</th>'
            "<th>condition (CEL over <code>input</code>)</th><th>output</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="default output (no rule matched)")
    def default_output(self, obj: RuleSetVersion) -> SafeString:
        return pretty_json(obj.default)

    def get_urls(self) -> list[URLPattern]:
        test = path(
            "<path:object_id>/test/",
            self.admin_site.admin_view(self.test_view),
            name="deployments_rulesetversion_test",
        )
        return [test, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        if request.user.has_perm(TEST_RULESETVERSION):
            context.setdefault("test_form", RuleSetTestForm(initial={"input": {}}))
            context.setdefault(
                "test_url", reverse("admin:deployments_rulesetversion_test", args=[object_id])
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def test_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET shows the form, POST runs it: a dry run that routes and records nothing.

        Approver and up, like ``POST /rulesets/{id}/test``: it spends evaluation time.
        """
        if not request.user.has_perm(TEST_RULESETVERSION):
            raise PermissionDenied
        version = (
            RuleSetVersion.objects.select_related("ruleset")
            .filter(pk=uuid_or_404(object_id))
            .first()
        )
        if version is None:
            raise Http404("No such rule-set version.")
        result = None
        if request.method == "POST":
            form = RuleSetTestForm(request.POST)
            if form.is_valid():
                expected = form.cleaned_data.get("expected_output")
                expectation = {} if expected is None else {"expected_output": expected}
                try:
                    result = services.ruleset_test(
                        ruleset=version.ruleset,
                        input=form.cleaned_data["input"],
                        version=version.version,
                        **expectation,
                    )
                except DomainError as exc:
                    messages.error(request, f"Test refused: {domain_error_text(exc)}")
                else:
                    result["has_expectation"] = bool(expectation)
                    result["output_display"] = pretty_json(result["output"])
                    result["expected_display"] = pretty_json(result["expected_output"])
            else:
                messages.error(request, f"Test refused: {form_error_text(form)}")
        else:
            form = RuleSetTestForm(initial={"input": {}})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Test {version}",
            "opts": self.opts,
            "original": version,
            "form": form,
            "result": result,
            "rules_table": self.rules_table(version),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/deployments/rulesetversion/test.html", context)
