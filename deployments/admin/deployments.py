"""The deployment list and page, and the confirmation step of every lifecycle action."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from canary.errors import DomainError, NotFound
from deployments import admin_panels, selectors, transitions
from deployments.admin import charts, home
from deployments.admin.actions import (
    ACTIONS,
    COMPENSATION,
    COMPENSATION_COMPLETE,
    LIFECYCLE,
    DeploymentAction,
    Situation,
    actions_for,
    arrange_buttons,
    why_no_action,
)
from deployments.admin.bake import bake_panel
from deployments.admin.display import (
    NONE,
    ReadOnlyAdmin,
    admin_link,
    domain_error_text,
    form_error_text,
    health_badge,
    key_value_table,
    minutes_text,
    percent,
    percent_of_one,
    seconds_text,
    status_badge,
    when,
)
from deployments.admin.panels import (
    breaker_line,
    compensation_panel,
    event_details,
    event_rows,
    measurement_panel,
    monitor_banner,
    outcome_banner,
    shadow_panel,
    step_lines,
)
from deployments.admin.plan import plan_buttons, plan_panel
from deployments.choices import CompensationStatus, DeploymentStatus, EventAction
from deployments.models import Deployment, DeploymentEvent


class DeploymentChangeList(ChangeList):
    """Reads v2 health for the page's canary rows only, and in one query which active rows
    are v1 of a running canary: other rows cost no query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        canaries = selectors.deployment_canaries_by_baseline(
            baseline_ids=[row.pk for row in rows if row.status == DeploymentStatus.ACTIVE]
        )
        for row in rows:
            if row.status == DeploymentStatus.CANARY:
                row.canary_health = admin_panels.health_for(row)
            elif row.status == DeploymentStatus.ACTIVE:
                row.running_canary = canaries.get(row.pk)
        self.result_list = rows


GRAFANA_DASHBOARD = "d/canary-overview/canary-deployments"  # ops/grafana/dashboards/canary.json


def grafana_url(deployment: Deployment) -> str | None:
    """The shipped dashboard filtered to this deployment, when CANARY_GRAFANA_URL is set."""
    base = getattr(settings, "CANARY_GRAFANA_URL", "")
    if not base:
        return None
    return f"{base}/{GRAFANA_DASHBOARD}?var-deployment={deployment.pk}"


CHART_MARKERS = {
    EventAction.START_CANARY,
    EventAction.SET_TRAFFIC,
    EventAction.ROLLBACK,
    EventAction.PROMOTE,
    EventAction.BREAKER_OPEN,
}

CONFIG_FORMATTERS = {
    "success_threshold": percent_of_one,
    "error_threshold": percent_of_one,
    "latency_multiplier": lambda value: f"{value} x v1 p95",
    "duration_minutes": minutes_text,
    "breaker_cooldown_seconds": seconds_text,
    "initial_traffic_percentage": lambda value: f"{value}%",
    "increment": lambda value: f"{value} percentage points",
    "shadow_percentage": lambda value: f"{value}%",
}

# Where the key alone would mislead ("duration minutes: 1 h"): what the value is.
CONFIG_LABELS = {
    "duration_minutes": "step duration",
    "increment": "traffic step",
    "initial_traffic_percentage": "initial traffic",
}


# The charts' ranges, as Grafana and Flagger offer them: per minute, one query each.
CHART_RANGES = {
    "1h": ("The last hour", 1),
    "6h": ("The last 6 h", 6),
    "all": ("The whole canary", 0),  # per hour, from the rollups
}


def chart_range(request: HttpRequest) -> str:
    chosen = request.GET.get("range", "1h")
    return chosen if chosen in CHART_RANGES else "1h"


def traffic_changes(events: Any) -> list[tuple[Any, int]]:
    """Each moment v2's traffic weight changed, from the lifecycle events' payloads."""
    changes = []
    for event in events:
        payload = event.payload or {}
        if "to_traffic" in payload:
            changes.append((event.created_at, int(payload["to_traffic"])))
        elif event.action == EventAction.START_CANARY and "traffic_percentage" in payload:
            changes.append((event.created_at, int(payload["traffic_percentage"])))
        elif event.action == EventAction.PROMOTE:
            changes.append((event.created_at, 100))
        elif event.action == EventAction.ROLLBACK:
            changes.append((event.created_at, 0))
    return changes


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = [
        "ruleset",
        "version_label",
        "status_label",
        "traffic",
        "v2_health",
        "started_at",
        "promoted_at",
    ]
    list_display_links = ["ruleset", "version_label"]
    list_filter = ["status", "ruleset"]
    search_fields = ["version__version", "changelog"]
    list_select_related = ["ruleset", "version"]
    ordering = ["-created_at"]
    fieldsets = [
        (
            "Release",
            {
                "fields": [
                    "ruleset",
                    "version_link",
                    "status_label",
                    "traffic",
                    "baseline_link",
                    "changelog",
                ]
            },
        ),
        (
            "Configuration",
            {"fields": ["canary_config_display", "compensation_strategy", "target_filter_display"]},
        ),
        (
            "Timeline",
            {
                "fields": [
                    "created_by",
                    "created_at",
                    "started_at",
                    "promoted_at",
                    "rolled_back_at",
                    "deprecated_at",
                    "rollback_reason",
                    "id",
                ]
            },
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]
    # History: the console's own actions (LogEntry) and every lifecycle event.
    keeps_history = True
    change_form_template = "admin/deployments/deployment/change_form.html"
    object_history_template = "admin/deployments/deployment/object_history.html"

    class Media:
        css = {"all": ["deployments/admin.css"]}
        js = ["deployments/admin.js"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DeploymentChangeList

    def get_queryset(self, request: HttpRequest) -> QuerySet[Deployment]:
        return (
            super()
            .get_queryset(request)
            .select_related("ruleset", "version", "baseline__version", "created_by")
        )

    # columns and read-only fields

    @admin.display(description="version", ordering="version__version")
    def version_label(self, obj: Deployment) -> str:
        return obj.version.version

    @admin.display(description="version")
    def version_link(self, obj: Deployment) -> SafeString:
        url = reverse("admin:deployments_rulesetversion_change", args=[obj.version_id])
        return format_html('<a href="{}">{}</a>', url, obj.version.version)

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Deployment) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="traffic", ordering="traffic_percentage")
    def traffic(self, obj: Deployment) -> str:
        if obj.status == DeploymentStatus.CANARY and obj.traffic_percentage == 0:
            return "0% (dark launch)"
        if obj.status == DeploymentStatus.ACTIVE:
            if not hasattr(obj, "running_canary"):
                found = selectors.deployment_canaries_by_baseline(baseline_ids=[obj.pk])
                obj.running_canary = found.get(obj.pk)
            canary = obj.running_canary
            if canary is not None:
                return (
                    f"{100 - canary.traffic_percentage}% of new contexts "
                    f"(v1 of canary {canary.version.version} at {canary.traffic_percentage}%)"
                )
        return f"{obj.traffic_percentage}%"

    @admin.display(description="v2 (last 5 min)")
    def v2_health(self, obj: Deployment) -> SafeString:
        health = getattr(obj, "canary_health", None)
        if not health:
            return format_html("{}", NONE)
        return format_html(
            "{} {} errors",
            health_badge(health.get("health_status")),
            percent(health.get("current_error_rate")),
        )

    @admin.display(description="baseline (v1)")
    def baseline_link(self, obj: Deployment) -> SafeString:
        if obj.baseline is None:
            return format_html("{}", NONE)
        url = reverse("admin:deployments_deployment_change", args=[obj.baseline_id])
        return format_html(
            '<a href="{}">{}</a> {}',
            url,
            obj.baseline.version.version,
            status_badge(obj.baseline.status),
        )

    @admin.display(description="canary config")
    def canary_config_display(self, obj: Deployment) -> SafeString:
        return key_value_table(
            obj.canary_config, formatters=CONFIG_FORMATTERS, labels=CONFIG_LABELS
        )

    @admin.display(description="canary target filter")
    def target_filter_display(self, obj: Deployment) -> SafeString:
        if not obj.canary_target_filter:
            return format_html("{}", "everyone (no filter)")
        return key_value_table(obj.canary_target_filter)

    # the page

    def get_urls(self) -> list[URLPattern]:
        action = path(
            "<path:object_id>/actions/<slug:action>/",
            self.admin_site.admin_view(self.action_view),
            name="deployments_deployment_action",
        )
        live = path(
            "<path:object_id>/live/",
            self.admin_site.admin_view(self.live_view),
            name="deployments_deployment_live",
        )
        running = path(
            "running/",
            self.admin_site.admin_view(self.running_view),
            name="deployments_deployment_running",
        )
        return [action, live, running, *super().get_urls()]

    def running_view(self, request: HttpRequest) -> HttpResponse:
        """The home page's block (monitor, running canaries, compensations owed) alone, for the
        index to re-fetch in place (admin.js)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = home.index_block_context(request)
        response = TemplateResponse(request, "admin/deployments/index_live.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The page's live block and its verdict, for the page to re-fetch in place (admin.js).

        Headers carry the status and traffic so the page can tell its buttons are stale.
        """
        deployment = self._deployment_or_none(object_id)
        if deployment is None:
            raise Http404("No such deployment.")
        if not self.has_view_permission(request, deployment):
            raise PermissionDenied
        context = {"original": deployment, **self._page_context(request, deployment)}
        response = TemplateResponse(
            request, "admin/deployments/deployment/live_fragment.html", context
        )
        response["X-Canary-Status"] = deployment.status
        response["X-Canary-Traffic"] = str(deployment.traffic_percentage)
        response["Cache-Control"] = "no-store"
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        deployment = self._deployment_or_none(object_id)
        context = dict(extra_context or {})
        if deployment is not None and self.has_view_permission(request, deployment):
            context.update(self._page_context(request, deployment))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _deployment_or_none(self, object_id: str) -> Deployment | None:
        try:
            return selectors.deployment_get(deployment_id=object_id)
        except NotFound:
            return None

    def _page_context(self, request: HttpRequest, deployment: Deployment) -> dict[str, Any]:
        situation = Situation.of(deployment)
        verdict = admin_panels.panel("verdict", deployment)
        buttons, action_note = arrange_buttons(
            deployment,
            verdict,
            [self._button(deployment, action) for action in actions_for(situation, request.user)],
            request.user,
        )
        compensation = admin_panels.panel("compensation", deployment)
        events = event_rows(selectors.deployment_event_list(deployment=deployment))
        query = f"?deployment={deployment.pk}"
        return {
            "canary_actions": buttons,
            "canary_action_note": action_note,
            "canary_no_action_reason": None if buttons else why_no_action(situation, request.user),
            "canary_events": events,
            "canary_status": status_badge(deployment.status),
            "canary_verdict": verdict,
            "canary_assignments_url": admin_link(
                "admin:assignments_assignment_changelist", query=query
            ),
            "canary_logs_url": admin_link("admin:monitoring_executionlog_changelist", query=query),
            "canary_compensation": compensation_panel(compensation),
            "canary_compensation_actions": [
                self._compensation_button(deployment, action, compensation)
                for action in actions_for(situation, request.user, group=COMPENSATION)
            ],
            "canary_compensation_logs_url": admin_link(
                "admin:monitoring_executionlog_changelist",
                query=f"{query}&needs_reprocess__exact=1",
            ),
            "canary_outcome": outcome_banner(
                deployment,
                rollback_actor=self._rollback_actor(deployment),
                baseline_of=situation.canary if situation.is_baseline else None,
            ),
            "canary_baseline_of": self._page_url(situation.canary)
            if situation.is_baseline
            else None,
            "canary_grafana_url": grafana_url(deployment),
            "canary_bake": bake_panel(admin_panels.panel("bake", deployment))
            if deployment.status == DeploymentStatus.ACTIVE
            else None,
            "canary_refresh_url": reverse("admin:deployments_deployment_live", args=[deployment.pk])
            + ("" if chart_range(request) == "1h" else f"?range={chart_range(request)}")
            if deployment.status == DeploymentStatus.CANARY
            or deployment.compensation_status == CompensationStatus.PENDING
            else None,
            "canary_refresh_seconds": settings.CANARY_CONSOLE_REFRESH_SECONDS,
            "canary_plan": plan_panel(
                request.user,
                deployment,
                [self._button(deployment, a) for a in plan_buttons(situation, request.user)],
            ),
            "canary_chart_ranges": [
                {
                    "label": label,
                    "url": f"?range={key}",
                    "current": key == chart_range(request),
                }
                for key, (label, _) in CHART_RANGES.items()
            ],
            "canary_chart_title": f"{CHART_RANGES[chart_range(request)][0]}, "
            + ("per minute" if CHART_RANGES[chart_range(request)][1] else "per hour"),
            **self._live_context(deployment, verdict, CHART_RANGES[chart_range(request)][1]),
        }

    @staticmethod
    def _rollback_actor(deployment: Deployment) -> str | None:
        if deployment.status != DeploymentStatus.ROLLED_BACK:
            return None
        event = (
            DeploymentEvent.objects.filter(
                deployment=deployment, to_status=DeploymentStatus.ROLLED_BACK
            )
            .order_by("-created_at", "-id")
            .first()
        )
        return event.actor if event else None

    @staticmethod
    def _page_url(deployment: Deployment | None) -> str | None:
        if deployment is None:
            return None
        return reverse("admin:deployments_deployment_change", args=[deployment.pk])

    @staticmethod
    def _button(deployment: Deployment, action: DeploymentAction) -> dict[str, str]:
        # The page's state rides along: a confirmation opened from a stale page says so.
        seen = f"?seen={deployment.status}:{deployment.traffic_percentage}"
        return {
            "label": action.label_for(deployment),
            "url": reverse("admin:deployments_deployment_action", args=[deployment.pk, action.name])
            + seen,
            "style": action.style,
            "name": action.name,
        }

    def _compensation_button(
        self, deployment: Deployment, action: DeploymentAction, summary: dict[str, Any] | None
    ) -> dict[str, str]:
        """ "Mark complete" is not the green way forward while nothing has been replayed."""
        button = self._button(deployment, action)
        nothing_replayed = bool(summary and summary.get("flagged") and not summary.get("processed"))
        if action.name == COMPENSATION_COMPLETE and nothing_replayed:
            button.update(style="default", label="Mark complete (nothing replayed)")
        return button

    def _live_context(
        self, deployment: Deployment, verdict: dict[str, Any] | None = None, hours: int = 1
    ) -> dict[str, Any]:
        """The page's self-refreshing block: monitor, step, breaker and measurements."""
        live = admin_panels.panel("live", deployment) or {}
        is_canary = deployment.status == DeploymentStatus.CANARY
        panel = measurement_panel(admin_panels.measurements_for(deployment), ended=not is_canary)
        if panel and panel.get("health") and verdict:
            # What the verdict already says (the breaches, the held regression) is said once.
            said = verdict.get("sentence", "")
            # On a rollback verdict "v2 fails more often ... no rollback" would contradict it.
            said_worse = verdict.get("recommendation") == "rollback"
            panel["health"]["warnings"] = [
                warning
                for warning in panel["health"]["warnings"]
                if warning not in said
                and not warning.startswith("regression_held:")
                and not (said_worse and warning.startswith("v2_fails_more_often:"))
            ]
        return {
            "canary_charts": self._charts(deployment, hours) if is_canary else None,
            "canary_panel": panel,
            "canary_monitor": monitor_banner(admin_panels.panel("monitor")) if is_canary else None,
            "canary_step": step_lines(live.get("progress"), deployment.traffic_percentage),
            "canary_breaker": breaker_line(live.get("breaker")) if is_canary else None,
            "canary_shadow": shadow_panel(admin_panels.panel("shadow", deployment))
            if is_canary
            else None,
            "canary_rendered_at": when(timezone.now()),
        }

    @staticmethod
    def _charts(deployment: Deployment, hours: int = 1) -> list[SafeString] | None:
        """The chosen range per minute: v2's traffic weight, then v1 vs v2 requests, error
        rate and p95, with traffic changes and breaker openings marked; with paired
        evaluation on, the two versions' disagreement rate against its average too."""
        if hours:
            minutes = charts.minutes_window(count=hours * 60)
            rows = admin_panels.panel("chart", deployment, minutes[0])
        else:
            minutes = charts.hours_window(deployment.started_at or timezone.now())
            rows = admin_panels.panel("chart_hourly", deployment, minutes[0])
        if rows is None:
            return None
        events = selectors.deployment_event_list(deployment=deployment)
        markers = [
            (
                event.created_at,
                f"{when(event.created_at)} {event.get_action_display()}: {event_details(event)}",
                charts.BREAKER if event.action == EventAction.BREAKER_OPEN else charts.CHANGE,
            )
            for event in events
            if event.action in CHART_MARKERS and event.created_at >= minutes[0]
        ]
        weights = charts.traffic_weights(minutes, traffic_changes(events))
        traffic = charts.traffic_chart(weights, charts.placed_markers(minutes, markers))
        found = [
            traffic,
            *charts.charts_for(
                rows,
                minutes=minutes,
                error_threshold=deployment.canary_config.get("error_threshold"),
                markers=markers,
                paired=int(deployment.canary_config.get("shadow_percentage", 100)) > 0,
            ),
        ]
        # Traffic beside error rate and latency in the first row; requests and
        # disagreement after them.
        requests, error, latency, *rest = found[1:]
        ordered = [traffic, error, latency, requests, *rest]
        return [charts.render(chart, minutes) for chart in ordered]

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """Confirmation page (GET) and the action itself (POST, CSRF-checked by Django)."""
        spec = ACTIONS.get(action)
        if spec is None:
            raise Http404("No such action.")
        if not request.user.has_perm(spec.permission):
            raise PermissionDenied
        deployment = self._deployment_or_none(object_id)
        if deployment is None:
            messages.error(request, "That deployment no longer exists.")
            return HttpResponseRedirect(reverse("admin:deployments_deployment_changelist"))
        page = reverse("admin:deployments_deployment_change", args=[deployment.pk])
        situation = Situation.of(deployment)
        label = spec.label_for(deployment)
        seen = request.GET.get("seen")
        current = f"{deployment.status}:{deployment.traffic_percentage}"
        if request.method == "GET" and seen and seen != current and spec.group == LIFECYCLE:
            messages.warning(
                request,
                f"This deployment changed since your page loaded (it is now {deployment.status} "
                f"at {deployment.traffic_percentage}% traffic): check it again before acting.",
            )
            return HttpResponseRedirect(page)

        if request.method == "POST":
            form = spec.form_class(request.POST, deployment=deployment)
            if form.is_valid():
                try:
                    done = spec.run(deployment, form.cleaned_data, request.user, form)
                except DomainError as exc:
                    messages.error(request, f"{label} refused: {domain_error_text(exc)}")
                    return HttpResponseRedirect(page)
                messages.success(request, done)
                self._log_console_action(request, deployment, spec, done)
                if spec.leaves_page:
                    return HttpResponseRedirect(reverse("admin:deployments_deployment_changelist"))
                return HttpResponseRedirect(page)
            messages.error(request, f"{label} refused: {form_error_text(form)}")
        elif not spec.available(situation) and spec.group == COMPENSATION:
            messages.warning(request, "No compensation is pending for this deployment.")
            return HttpResponseRedirect(page)
        elif not spec.available(situation):
            allowed = ", ".join(transitions.allowed_actions(deployment.status)) or "none"
            messages.warning(
                request,
                f"{label} is not possible now: the deployment is {deployment.status} "
                f"(allowed: {allowed}). {why_no_action(situation, request.user) or ''}".strip(),
            )
            return HttpResponseRedirect(page)
        else:
            form = spec.form_class(deployment=deployment)

        advice = None
        if deployment.status == DeploymentStatus.CANARY and spec.name in (
            transitions.PROMOTE,
            transitions.TRAFFIC,
        ):
            advice = measurement_panel(admin_panels.measurements_for(deployment))
        verdict = getattr(form, "verdict", None)
        against = bool(
            spec.name == transitions.PROMOTE and verdict and verdict.get("against_promote")
        )
        context = {
            **self.admin_site.each_context(request),
            "against_verdict": verdict if against else None,
            "confirm_style": "danger" if against else spec.style,
            "title": f"{label}: {deployment.ruleset.name} {deployment.version.version}",
            "advice": advice,
            "opts": self.opts,
            "original": deployment,
            "deployment": deployment,
            "action": spec,
            "action_label": label,
            "consequence": spec.consequence(situation),
            "form": form,
            "status": status_badge(deployment.status),
            "compensation_label": deployment.get_compensation_strategy_display(),
            "media": self.media + form.media,
            "cancel_url": page,
        }
        return TemplateResponse(
            request, "admin/deployments/deployment/action_confirm.html", context
        )

    def _log_console_action(
        self, request: HttpRequest, deployment: Deployment, spec: DeploymentAction, done: str
    ) -> None:
        """Fill Django's "Recent actions" and the page's History with what the console did.

        The audit trail proper is the deployment's events (written by the service,
        whoever acts); this entry only tells admin users what was done from here.
        """
        flag = DELETION if spec.leaves_page else CHANGE
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=[deployment],
            action_flag=flag,
            change_message=done,
            single_object=True,
        )

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django's History, plus every lifecycle event (API, monitor and breaker included)."""
        context = dict(extra_context or {})
        deployment = self._deployment_or_none(object_id)
        if deployment is not None and self.has_view_permission(request, deployment):
            context["canary_events"] = event_rows(
                selectors.deployment_event_list(deployment=deployment)
            )
        return super().history_view(request, object_id, extra_context=context)


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "deployment", "action", "actor", "transition", "reason"]
    list_filter = ["action"]
    search_fields = ["actor"]
    list_select_related = ["deployment__ruleset", "deployment__version"]
    ordering = ["-created_at", "-id"]
    fields = [
        "deployment",
        "action",
        "actor",
        "transition",
        "reason",
        "payload_table",
        "created_at",
    ]
    readonly_fields = fields

    class Media:
        css = {"all": ["deployments/admin.css"]}

    @admin.display(description="from → to")
    def transition(self, obj: DeploymentEvent) -> SafeString:
        if not obj.from_status and not obj.to_status:
            return format_html("{}", NONE)
        return format_html(
            "{} → {}",
            status_badge(obj.from_status) if obj.from_status else NONE,
            status_badge(obj.to_status) if obj.to_status else NONE,
        )

    @admin.display(description="reason")
    def reason(self, obj: DeploymentEvent) -> str:
        return (obj.payload or {}).get("reason") or NONE

    @admin.display(description="payload")
    def payload_table(self, obj: DeploymentEvent) -> SafeString:
        return key_value_table(obj.payload)
