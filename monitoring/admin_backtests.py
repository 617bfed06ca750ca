"""Backtests and the preflight checklist in the console (SPEC 10.2).

The backtest pages (list, report, "New backtest") live here; the draft's page
in the deployment admin gets its preflight panel (checks, latest backtest, the
"Run backtest" form) through ``deployments.admin_panels`` as ``"preflight"``.
Every write is ``automation.backtests.backtest_create``, as over the API.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from canary.errors import DomainError
from canary.roles import TEST_RULESETVERSION
from deployments import admin_panels
from deployments.admin import ReadOnlyAdmin
from deployments.admin.display import domain_error_text, form_error_text, uuid_or_404
from deployments.choices import DeploymentStatus
from deployments.models import Deployment, RuleSet
from monitoring.automation import backtests
from monitoring.automation.preflight import deployment_preflight
from monitoring.models import Backtest


class BacktestForm(forms.Form):
    """The API's ``POST /rulesets/{id}/backtests`` body, as a form."""

    ruleset = forms.ModelChoiceField(queryset=RuleSet.objects.all(), label="Rule set")
    version = forms.CharField(max_length=64, help_text='The version judged (v2), e.g. "v2.0.0".')
    against = forms.CharField(
        max_length=64, required=False, help_text="v1; empty: the active version."
    )
    limit = forms.IntegerField(
        min_value=1, max_value=backtests.MAX_LIMIT, initial=backtests.DEFAULT_LIMIT
    )
    expect_changes = forms.CharField(
        required=False,
        max_length=backtests.MAX_EXPECT_CHANGES,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="Optional CEL condition over input: the inputs the change is meant to affect.",
    )


class RunBacktestForm(forms.Form):
    """The draft page's "Run backtest": this version against the active one."""

    limit = forms.IntegerField(
        min_value=1, max_value=backtests.MAX_LIMIT, initial=backtests.DEFAULT_LIMIT
    )
    expect_changes = forms.CharField(
        required=False,
        max_length=backtests.MAX_EXPECT_CHANGES,
        widget=forms.TextInput(attrs={"size": 50}),
    )


def _create(request: HttpRequest, **fields: Any) -> Backtest | None:
    try:
        backtest = backtests.backtest_create(actor=request.user, **fields)
    except DomainError as exc:
        messages.error(request, f"Backtest refused: {domain_error_text(exc)}")
        return None
    messages.success(request, f"Backtest queued: {fields['version']} on recorded inputs.")
    return backtest


@admin.register(Backtest)
class BacktestAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "ruleset", "version_pair", "status", "evaluated", "disagreed"]
    list_filter = ["status", "ruleset"]
    list_select_related = ["ruleset", "version", "against"]
    readonly_fields = ["report"]
    fields = readonly_fields
    add_form_template = "admin/monitoring/backtest/add.html"

    class Media:
        css = {"all": ["deployments/admin.css"]}

    @admin.display(description="version")
    def version_pair(self, obj: Backtest) -> str:
        return f"{obj.version.version} vs {obj.against.version}"

    @admin.display(description="disagreed")
    def disagreed(self, obj: Backtest) -> int:
        return obj.evaluated - int((obj.state or {}).get("agreed", 0))

    @admin.display(description="report")
    def report(self, obj: Backtest) -> SafeString:
        from django.template.loader import render_to_string

        return format_html(
            "{}",
            SafeString(
                render_to_string(
                    "admin/monitoring/backtest/report.html",
                    {"backtest": backtests.backtest_report(obj), "differences_url": None},
                )
            ),
        )

    # Who may see a backtest is who may see its rule set; who may run one, who may test
    # versions (Approver and up), as over the API: no permissions of their own.
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("deployments.view_ruleset")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("deployments.view_ruleset")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(TEST_RULESETVERSION)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BacktestForm(request.POST or None)
        if request.method == "POST":
            if form.is_valid():
                data = form.cleaned_data
                backtest = _create(
                    request,
                    ruleset_id=data["ruleset"].pk,
                    version=data["version"],
                    against=data["against"] or None,
                    limit=data["limit"],
                    expect_changes=data["expect_changes"] or None,
                )
                if backtest is not None:
                    return HttpResponseRedirect(
                        reverse("admin:monitoring_backtest_change", args=[backtest.pk])
                    )
            else:
                messages.error(request, f"Backtest refused: {form_error_text(form)}")
        context = {
            **self.admin_site.each_context(request),
            "title": "New backtest",
            "opts": self.opts,
            "form": form,
            "media": self.media,
        }
        return TemplateResponse(request, self.add_form_template, context)

    def get_urls(self) -> list[URLPattern]:
        run = path(
            "run-for/<path:deployment_id>/",
            self.admin_site.admin_view(require_POST(self.run_for_view)),
            name="monitoring_backtest_run_for",
        )
        return [run, *super().get_urls()]

    def run_for_view(self, request: HttpRequest, deployment_id: str) -> HttpResponse:
        """The draft page's "Run backtest" (Approver and up)."""
        if not request.user.has_perm(TEST_RULESETVERSION):
            raise PermissionDenied
        deployment = (
            Deployment.objects.select_related("version")
            .filter(pk=uuid_or_404(deployment_id))
            .first()
        )
        back = reverse("admin:deployments_deployment_change", args=[deployment_id])
        if deployment is None:
            messages.error(request, "No such deployment.")
            return HttpResponseRedirect(reverse("admin:deployments_deployment_changelist"))
        form = RunBacktestForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Backtest refused: {form_error_text(form)}")
            return HttpResponseRedirect(back)
        _create(
            request,
            ruleset_id=deployment.ruleset_id,
            version=deployment.version.version,
            limit=form.cleaned_data["limit"],
            expect_changes=form.cleaned_data["expect_changes"] or None,
        )
        return HttpResponseRedirect(back + "#canary-preflight")


def preflight_panel(deployment: Deployment, user: Any) -> dict[str, Any] | None:
    """The draft page's panel: the checklist, the latest backtest, the run form."""
    if deployment.status != DeploymentStatus.DRAFT:
        return None
    latest = backtests.backtest_latest(version_id=deployment.version_id)
    may_run = bool(user is not None and user.has_perm(TEST_RULESETVERSION))
    return {
        "preflight": deployment_preflight(deployment=deployment),
        "enforced": bool(deployment.canary_config.get("enforce_preflight", False)),
        "backtest": backtests.backtest_report(latest) if latest is not None else None,
        "backtest_url": (
            reverse("admin:monitoring_backtest_change", args=[latest.pk]) if latest else None
        ),
        "run_url": (
            reverse("admin:monitoring_backtest_run_for", args=[deployment.pk]) if may_run else None
        ),
        "run_form": RunBacktestForm() if may_run else None,
    }


admin_panels.panels.update(preflight=preflight_panel)
