"""Execution logs in the admin, and the measurement panels of the deployment admin.

``deployments`` cannot import ``monitoring`` (dependencies run one way), so the
deployment page gets its v1-vs-v2 panel and the list its health column through
``deployments.admin_panels``; this module registers the providers when it is
imported (by the admin's autodiscovery, and explicitly by
``MonitoringConfig.ready()``). Both return the same dicts as the REST
``/comparison`` and ``/health`` endpoints.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from assignments.admin import DeploymentFilter
from deployments import admin_panels
from deployments.admin import ReadOnlyAdmin
from deployments.admin.display import NONE, every, key_value_table, milliseconds
from deployments.choices import CompensationStatus, DeploymentStatus
from deployments.models import Deployment, PromotionApproval, RuleSetVersion
from deployments.rules.redaction import redaction_note
from monitoring import console, verdict
from monitoring.automation import compensation
from monitoring.automation.compensation import compensation_replay_enqueue
from monitoring.automation.monitor import MONITOR_JOB
from monitoring.decision import decisions, health, metric_checks, selectors
from monitoring.logstore import rollups
from monitoring.models import CanaryDecision, ExecutionLog, JobRun


def deployment_measurements(deployment: Deployment) -> dict[str, Any] | None:
    """Comparison over the whole canary, plus live health while it is still a canary."""
    if deployment.baseline_id is None or deployment.started_at is None:
        return None  # never ran as a canary: there is no v1-vs-v2 to show
    # The monitor's stored decision while fresh (SPEC 9.6), as the verdict above shows it.
    judged = decisions.decision_read(deployment=deployment)
    comparison = health.deployment_comparison(
        deployment=deployment, window_minutes=None, judged=judged
    )
    live = deployment_health_summary(deployment, judged=judged)
    return {"comparison": comparison, "health": live}


def deployment_health_summary(
    deployment: Deployment, judged: decisions.Judged | None = None
) -> dict[str, Any] | None:
    """Health only means something while v2 serves traffic."""
    if deployment.status != DeploymentStatus.CANARY:
        return None
    return health.deployment_health(
        deployment=deployment, judged=judged or decisions.decision_read(deployment=deployment)
    )


def deployment_live(deployment: Deployment) -> dict[str, Any] | None:
    """A canary's current step and breaker: what the monitor and the data plane do next."""
    if deployment.status != DeploymentStatus.CANARY:
        return None
    return {
        "progress": console.canary_progress(deployment=deployment),
        "breaker": console.breaker_detail(deployment=deployment),
    }


HOME_CACHE_PREFIX = "canary:console:running:"


def running_canaries() -> list[dict[str, Any]]:
    """Every running canary with its step, breaker, verdict, readiness, approvals and error
    rates for the index page's first block, worst first (``verdict.SEVERITY``).

    Computed once per monitor run or refresh interval for every open tab: the answer is
    cached under a key that changes with the monitor's last run and with any change to a
    canary (status, traffic, approvals, a held or dismissed regression).
    """
    canaries = list(
        Deployment.objects.filter(status=DeploymentStatus.CANARY).select_related(
            "ruleset", "version", "baseline__version"
        )
    )
    key = HOME_CACHE_PREFIX + _home_fingerprint(canaries)
    found = cache.get(key)
    if found is not None:
        return found
    rows = [
        {
            "deployment": deployment,
            **(deployment_live(deployment) or {}),
            "overview": verdict.canary_overview(deployment=deployment),
        }
        for deployment in canaries
    ]
    rows.sort(
        key=lambda row: (
            ((row["overview"] or {}).get("verdict") or {}).get("severity", len(verdict.SEVERITY)),
            row["deployment"].ruleset.name,
        )
    )
    cache.set(key, rows, timeout=int(settings.CANARY_CONSOLE_REFRESH_SECONDS))
    return rows


def _home_fingerprint(canaries: list[Deployment]) -> str:
    """What the home's answer depends on besides time, as a short hash."""
    ids = [deployment.pk for deployment in canaries]
    run = JobRun.objects.filter(name=MONITOR_JOB).values_list("last_started_at", flat=True).first()
    approvals = sorted(
        PromotionApproval.objects.filter(deployment_id__in=ids).values_list(
            "deployment_id", "approver"
        )
    )
    decisions = sorted(
        CanaryDecision.objects.filter(pk__in=ids).values_list(
            "deployment_id", "decided_at", "regression_detected_at"
        )
    )
    parts = [(d.pk, d.status, d.traffic_percentage, d.updated_at) for d in canaries]
    text = repr((run, parts, approvals, decisions))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


COMPENSATION_LIST_SIZE = 20


def deployment_chart(deployment: Deployment, since: Any) -> list[dict[str, Any]] | None:
    """Per-minute rows for the canary page's charts (``selectors.minute_series``)."""
    if deployment.status != DeploymentStatus.CANARY:
        return None
    return selectors.minute_series(deployment_id=deployment.pk, since=since)


def deployment_chart_hourly(deployment: Deployment, since: Any) -> list[dict[str, Any]] | None:
    """Per-hour rows shaped like ``minute_series`` for the whole-canary chart: the rolled-up
    hours from ``ExecutionRollup`` (p95 from its histogram), the hours after the rollup
    watermark from the raw log, so a long canary costs one row per hour and version."""
    if deployment.status != DeploymentStatus.CANARY:
        return None
    watermark = rollups.watermark_for(deployment.pk)
    rows: list[dict[str, Any]] = []
    if watermark is not None:
        for rollup in rollups.hours_between(
            deployment_id=deployment.pk, since=since, until=watermark
        ).order_by("hour", "served_version"):
            buckets = {int(k): int(v) for k, v in (rollup.latency_buckets or {}).items()}
            pairs = sum(
                getattr(rollup, name) or 0
                for name in (
                    "pairs_both_succeeded",
                    "pairs_only_v1_failed",
                    "pairs_only_v2_failed",
                    "pairs_both_failed",
                )
            )
            rows.append(
                {
                    "minute": rollup.hour,
                    "served_version": rollup.served_version,
                    "total": rollup.total,
                    "errors": rollup.errors,
                    "p95_latency_ms": rollups.histogram_percentile(buckets, rollup.total, 0.95)
                    if rollup.total
                    else None,
                    "pairs": pairs,
                    "disagreed": pairs - (rollup.pairs_agreed or 0),
                }
            )
    tail_since = max(filter(None, [watermark, since])) if (watermark or since) else since
    rows.extend(selectors.hour_series(deployment_id=deployment.pk, since=tail_since))
    return rows


def deployment_compensation(deployment: Deployment) -> dict[str, Any] | None:
    """Manual compensation's counts and the first decisions v1 would have made differently.

    Only for deployments with something to compensate (a status other than
    "none"): the same numbers as ``GET /deployments/{id}/compensation``.
    """
    if deployment.compensation_status == CompensationStatus.NONE:
        return None
    summary = compensation.compensation_summary(deployment=deployment)
    differences = compensation.compensation_differences(deployment=deployment)
    return {
        **summary,
        "differences": list(differences[:COMPENSATION_LIST_SIZE]),
        "total_differences": summary["differing"],
    }


admin_panels.register(
    operations_by_name={"compensation_replay": compensation_replay_enqueue},
    verdict=lambda deployment: verdict.canary_verdict(deployment=deployment),
    shadow=lambda deployment: health.deployment_shadow(deployment=deployment, window_minutes=None),
    bake=lambda deployment: health.deployment_bake(deployment=deployment),
    compensation=deployment_compensation,
    chart=deployment_chart,
    chart_hourly=deployment_chart_hourly,
    measurements=deployment_measurements,
    health=deployment_health_summary,
    monitor=console.monitor_status,
    live=deployment_live,
    running=running_canaries,
    compensation_pending=console.compensation_pending_list,
    metric_checks=lambda deployment: metric_checks.stored_metric_results(deployment=deployment),
)


class RuleSetVersionFilter(admin.SimpleListFilter):
    """Filter by rule-set version; one query, unlike the stock related-field filter."""

    title = "rule-set version"
    parameter_name = "version"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        versions = RuleSetVersion.objects.select_related("ruleset").order_by(
            "ruleset__name", "-created_at"
        )[:100]
        return [(str(v.pk), f"{v.ruleset.name} {v.version}") for v in versions]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        if self.value() not in {value for value, _ in self.lookup_choices}:
            return queryset.none()
        return queryset.filter(version_id=self.value())


class EstimatedCountPaginator(Paginator):
    """Pages without ``COUNT(*)``: on PostgreSQL the count is the planner's estimate.

    Counting millions of log rows exactly is what made the list slow; an approver
    needs "about how many", never the exact figure, so the estimate of
    ``EXPLAIN`` (from ``pg_class.reltuples`` and the column statistics) serves.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor != "postgresql" or not isinstance(queryset, QuerySet):
            return super().count
        plan = json.loads(queryset.order_by().explain(format="json"))
        return max(0, int(plan[0]["Plan"]["Plan Rows"]))


class CreatedWithinFilter(admin.SimpleListFilter):
    """A time window, the last hour unless another is chosen: every list stays on the
    newest day partitions and the ``created_at`` index, however large the table."""

    title = "created within"
    parameter_name = "within"
    WINDOWS = {"1h": ("last hour", 1), "6h": ("last 6 h", 6), "24h": ("last 24 h", 24)}
    WINDOWS |= {"7d": ("last 7 days", 24 * 7), "30d": ("last 30 days", 24 * 30)}
    DEFAULT = "1h"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in self.WINDOWS.items()]

    def value(self) -> str:
        chosen = super().value()
        return chosen if chosen in self.WINDOWS else self.DEFAULT

    def choices(self, changelist: Any) -> Any:
        # No "All": an unbounded window is the slow path this filter exists to avoid.
        for key, label in self.lookup_choices:
            yield {
                "selected": self.value() == key,
                "query_string": changelist.get_query_string({self.parameter_name: key}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        hours = self.WINDOWS[self.value()][1]
        return queryset.filter(created_at__gte=timezone.now() - timedelta(hours=hours))


# The longest window a search of the log reads (ids and error text have no index).
SEARCH_HOURS = 24


@admin.register(ExecutionLog)
class ExecutionLogAdmin(ReadOnlyAdmin):
    # NOTE: compact columns (version pair, stacked ids, short deployment) so the
    # whole row fits beside the filters at 1,280-1,400 px without a horizontal cut.
    list_display = [
        "created_at",
        "deployment_short",
        "served",
        "outcome",
        "latency",
        "ids",
        "reprocess",
    ]
    list_filter = [
        CreatedWithinFilter,
        "served_version",
        RuleSetVersionFilter,
        "success",
        "needs_reprocess",
        DeploymentFilter,
    ]
    search_fields = ["=user_id", "=session_id", "=workflow_id", "error_message"]
    search_help_text = "An exact user, session or workflow id, or words of the error message."
    list_select_related = ["deployment__ruleset", "deployment__version", "version__ruleset"]
    ordering = ["-created_at", "-id"]
    # NOTE: the table grows with every canary request: no COUNT(*) (an estimated
    # count pages the list), no facet counts (each one is a COUNT over the window).
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    readonly_fields = [
        "deployment",
        "served_version",
        "version",
        "success",
        "latency",
        "error_rule",
        "error_message",
        "user_id",
        "session_id",
        "workflow_id",
        "input_display",
        "redaction",
        "output_display",
        "needs_reprocess",
        "reprocessed_at",
        "created_at",
    ]
    fields = readonly_fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Ids and error text are not indexed: a search reads at most the last
        ``SEARCH_HOURS`` of the window, and says so, so it stays under a second."""
        if search_term:
            chosen = request.GET.get(CreatedWithinFilter.parameter_name)
            window = CreatedWithinFilter.WINDOWS.get(chosen or "", (None, 1))[1]
            if window > SEARCH_HOURS:
                since = timezone.now() - timedelta(hours=SEARCH_HOURS)
                queryset = queryset.filter(created_at__gte=since)
                messages.info(
                    request,
                    f"Searches cover at most the last {SEARCH_HOURS} h: the window was "
                    "narrowed for this search.",
                )
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="outcome / error rule", ordering="success")
    def outcome(self, obj: ExecutionLog) -> SafeString:
        # The failing rule sits under the badge: one column fewer keeps the row on screen.
        if obj.success:
            return format_html(
                '<span class="canary-badge canary-health-{}">{}</span>', "healthy", "ok"
            )
        return format_html(
            '<span class="canary-badge canary-health-unhealthy">error</span>'
            '<small class="canary-error-rule">{}</small>',
            obj.error_rule or NONE,
        )

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: ExecutionLog) -> str:
        return milliseconds(obj.latency_ms)

    @admin.display(description="rule set", ordering="deployment")
    def deployment_short(self, obj: ExecutionLog) -> str:
        # The versions are in "served"; the deployment filter names the release.
        return obj.deployment.ruleset.name

    @admin.display(description="served", ordering="served_version")
    def served(self, obj: ExecutionLog) -> SafeString:
        return format_html(
            '<span class="canary-nowrap">{} · {}</span>', obj.served_version, obj.version.version
        )

    @admin.display(description="error rule", ordering="error_rule")
    def error_rule_short(self, obj: ExecutionLog) -> str:
        return obj.error_rule or NONE

    @admin.display(description="ids")
    def ids(self, obj: ExecutionLog) -> SafeString:
        found = [
            (label, value)
            for label, value in (
                ("wf", obj.workflow_id),
                ("session", obj.session_id),
                ("user", obj.user_id),
            )
            if value
        ]
        if not found:
            return format_html("{}", NONE)
        return format_html_join("", '<span class="canary-id"><small>{}</small> {}</span>', found)

    @admin.display(description="flagged", ordering="needs_reprocess")
    def reprocess(self, obj: ExecutionLog) -> SafeString:
        # Only a flagged row says something: a mark on every other row read as an alarm.
        if not obj.needs_reprocess:
            return format_html("{}", "")
        return format_html('<span class="canary-badge canary-health-degraded">{}</span>', "flagged")

    @admin.display(description="input")
    def input_display(self, obj: ExecutionLog) -> SafeString:
        return _json_block(obj.input)

    @admin.display(description="redaction")
    def redaction(self, obj: ExecutionLog) -> str:
        return redaction_note(obj.redacted_paths) or "none: the input is stored as received"

    @admin.display(description="output")
    def output_display(self, obj: ExecutionLog) -> SafeString:
        return _json_block(obj.output)

    class Media:
        css = {"all": ["deployments/admin.css"]}


def _json_block(value: Any) -> SafeString:
    """An object as a key/value table; anything else (a scalar, a list) as JSON."""
    if isinstance(value, dict) and value:
        return key_value_table(value)
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="canary-json">{}</pre>', text)


class RolePeriodicTaskAdmin(PeriodicTaskAdmin):
    """The monitor's schedule: every console user reads it, only the Admin role acts on it.

    django-celery-beat offers its enable/disable/toggle/run actions to anyone who
    may view the changelist, so a Viewer could switch the monitor off. Actions
    here need ``change_periodictask`` (Admin role, or a superuser); without it
    the list offers none, and a forged POST of one changes nothing.
    """

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        if not self.has_change_permission(request):
            return {}
        return super().get_actions(request)

    list_display = ("name", "enabled", "schedule_text", "start_time", "last_run_at", "one_off")

    @admin.display(description="schedule")
    def schedule_text(self, task: PeriodicTask) -> str:
        """ "every day", "every 5 min", not django-celery-beat's "every 86400 seconds"."""
        if task.interval is not None:
            return every(task.interval.schedule.run_every.total_seconds())
        return str(task.scheduler or NONE)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, RolePeriodicTaskAdmin)


from monitoring import admin_webhooks  # noqa: E402, F401 (registers webhooks and triggers)
