"""Rule sets and their versions: browse the rules, dry-run a version ("Test this version")."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
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
from deployments.models import RuleSet, RuleSetTestCase, RuleSetVersion


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


class RuleSetTestCaseInline(admin.TabularInline):
    """The rule set's test cases (SPEC 10.2); Approvers add and delete them with the form
    below the inlines (``services.ruleset_case_create``), as over the API."""

    model = RuleSetTestCase
    extra = 0
    can_delete = False
    fields = ["name", "input_json", "expected_json", "created_by", "created_at"]
    readonly_fields = fields
    verbose_name = "test case"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="input")
    def input_json(self, obj: RuleSetTestCase) -> SafeString:
        return pretty_json(obj.input)

    @admin.display(description="expected output")
    def expected_json(self, obj: RuleSetTestCase) -> SafeString:
        return pretty_json(obj.expected_output)


class TestCaseForm(forms.Form):
    name = forms.CharField(max_length=200)
    input = forms.JSONField(widget=forms.Textarea(attrs={"rows": 3, "cols": 50}))
    expected_output = forms.JSONField(
        required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 50})
    )


@admin.register(RuleSet)
class RuleSetAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "version_count", "created_at"]
    search_fields = ["name", "description"]
    readonly_fields = [
        "name",
        "description",
        "redacted_paths",
        "capture_percentage",
        "created_at",
        "deployments_link",
    ]
    fields = readonly_fields
    inlines = [RuleSetVersionInline, RuleSetTestCaseInline]
    change_form_template = "admin/deployments/ruleset/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/test-cases/add/",
                self.admin_site.admin_view(self.add_test_case_view),
                name="deployments_ruleset_add_test_case",
            ),
            path(
                "<path:object_id>/test-cases/<int:case_id>/delete/",
                self.admin_site.admin_view(self.delete_test_case_view),
                name="deployments_ruleset_delete_test_case",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        if request.user.has_perm(TEST_RULESETVERSION):
            context["test_case_form"] = TestCaseForm()
            context["test_case_add_url"] = reverse(
                "admin:deployments_ruleset_add_test_case", args=[object_id]
            )
            context["test_cases"] = [
                (
                    case,
                    reverse(
                        "admin:deployments_ruleset_delete_test_case", args=[object_id, case.pk]
                    ),
                )
                for case in RuleSetTestCase.objects.filter(ruleset_id=uuid_or_404(object_id))
            ]
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _ruleset_or_404(self, request: HttpRequest, object_id: str) -> RuleSet:
        if request.method != "POST" or not request.user.has_perm(TEST_RULESETVERSION):
            raise PermissionDenied
        ruleset = RuleSet.objects.filter(pk=uuid_or_404(object_id)).first()
        if ruleset is None:
            raise Http404("No such rule set.")
        return ruleset

    def add_test_case_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        ruleset = self._ruleset_or_404(request, object_id)
        form = TestCaseForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Test case refused: {form_error_text(form)}")
        else:
            try:
                services.ruleset_case_create(
                    ruleset=ruleset, actor=request.user, **form.cleaned_data
                )
            except DomainError as exc:
                messages.error(request, f"Test case refused: {domain_error_text(exc)}")
            else:
                messages.success(request, f"Test case '{form.cleaned_data['name']}' added.")
        return HttpResponseRedirect(reverse("admin:deployments_ruleset_change", args=[object_id]))

    def delete_test_case_view(
        self, request: HttpRequest, object_id: str, case_id: int
    ) -> HttpResponse:
        ruleset = self._ruleset_or_404(request, object_id)
        try:
            services.ruleset_case_delete(ruleset=ruleset, case_id=case_id, actor=request.user)
        except DomainError as exc:
            messages.error(request, domain_error_text(exc))
        else:
            messages.success(request, "Test case deleted.")
        return HttpResponseRedirect(reverse("admin:deployments_ruleset_change", args=[object_id]))

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
        "test_report_table",
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

    @admin.display(description="test cases at creation")
    def test_report_table(self, obj: RuleSetVersion) -> SafeString:
        """The rule set's test cases run when this version was created (SPEC 10.2)."""
        report = obj.test_report
        if not report or not report.get("total"):
            return format_html("{}", "no test cases when this version was created")
        rows = format_html_join(
            "",
            '<tr class="canary-case" data-passed="{}"><td>{}</td><td>{}</td><td><code>{}</code>'
            "</td><td><code>{}</code></td><td>{}</td></tr>",
            (
                (
                    "true" if result["passed"] else "false",
                    result["name"],
                    "passed" if result["passed"] else "failed",
                    json.dumps(result["output"], ensure_ascii=False),
                    json.dumps(result["expected_output"], ensure_ascii=False),
                    (result.get("error") or {}).get("message", ""),
                )
                for result in report["results"]
            ),
        )
        return format_html(
            '<p id="canary-test-report">{} of {} passed</p><table class="canary-table">'
            "<thead><tr><th>case</th><th>result</th><th>output</th><th>expected</th>"
            "<th>error</th></tr></thead><tbody>{}</tbody></table>",
            report["total"] - report["failed"],
            report["total"],
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
