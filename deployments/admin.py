"""The admin console: where approvers watch releases and act on them.

Every model is read-only in the ModelAdmin sense: nothing here saves a model
form. Lifecycle changes are buttons on the deployment page that lead to a
confirmation step (``DeploymentAdmin.action_view``); its POST validates a small
form and calls the same service as the REST API with ``expected_status`` (the
status the page showed), so a double submit or a stale page is refused instead
of acting twice. Permissions are checked on the server with the role's Django
permissions (``canary.roles``); hiding a button is only a courtesy.

Measurements come from ``deployments.admin_panels``, which ``monitoring``
fills in: this module must not import ``assignments`` or ``monitoring``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from knox.admin import AuthTokenAdmin as KnoxAuthTokenAdmin
from knox.models import AuthToken
from rest_framework.authtoken.models import TokenProxy

from canary.errors import DomainError, NotFound, ValidationFailed
from canary.roles import (
    TEST_RULESETVERSION,
    grantable_groups,
    manageable_users,
    may_manage_user,
)
from deployments import admin_panels, selectors, services, transitions
from deployments.choices import CompensationStrategy, DeploymentStatus, EventAction
from deployments.models import Deployment, DeploymentEvent, RuleSet, RuleSetVersion

CHANGE_DEPLOYMENT = "deployments.change_deployment"
DELETE_DEPLOYMENT = "deployments.delete_deployment"
NONE = "—"


# --- shared pieces -----------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browse and search only; writes happen through services, never model forms."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def status_badge(status: str) -> SafeString:
    """A coloured status label; the colours live in ``deployments/admin.css``."""
    label = DeploymentStatus(status).label if status in DeploymentStatus.values else status
    return format_html('<span class="canary-badge canary-status-{}">{}</span>', status, label)


def health_badge(health_status: str | None) -> SafeString:
    if not health_status:
        return format_html("{}", NONE)
    return format_html(
        '<span class="canary-badge canary-health-{}">{}</span>', health_status, health_status
    )


def percent(value: float | None, digits: int = 2) -> str:
    return NONE if value is None else f"{value * 100:.{digits}f}%"


def milliseconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f} ms"


def pretty_json(value: Any) -> SafeString:
    if value is None:
        return format_html("{}", NONE)
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="canary-json">{}</pre>', text)


def domain_error_text(exc: DomainError) -> str:
    """One readable sentence for an admin message, field errors included."""
    if isinstance(exc, ValidationFailed):
        fields = "; ".join(_flatten_field_errors(exc.field_errors))
        if fields and fields not in exc.detail:
            return f"{exc.detail} ({fields})"
    return exc.detail


def _flatten_field_errors(errors: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for field, value in errors.items():
        name = f"{prefix}{field}"
        if isinstance(value, Mapping):
            yield from _flatten_field_errors(value, prefix=f"{name}.")
        elif isinstance(value, list | tuple):
            yield from (f"{name}: {message}" for message in value)
        else:
            yield f"{name}: {value}"


def form_error_text(form: forms.Form) -> str:
    parts = []
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else None
        name = str(label or field).rstrip(":") if field != "__all__" else ""
        parts.extend(f"{name}: {error}" if name else str(error) for error in errors)
    return "; ".join(parts)


def _admin_link(url_name: str, *args: Any, query: str = "") -> str | None:
    """A link to another app's admin page, or None when that page is not registered."""
    try:
        return reverse(url_name, args=args) + query
    except NoReverseMatch:
        return None


# --- rule sets and versions ----------------------------------------------------------


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
    readonly_fields = ["name", "description", "created_at", "deployments_link"]
    fields = readonly_fields
    inlines = [RuleSetVersionInline]

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
            .filter(pk=_uuid_or_404(object_id))
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


def _uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise Http404("Malformed id.") from exc


# --- deployment actions ----------------------------------------------------------------


def _id_list(text: str) -> list[str]:
    """Ids typed one per line or comma-separated, in order, without blanks or repeats."""
    items = [item.strip() for line in text.splitlines() for item in line.split(",")]
    return list(dict.fromkeys(item for item in items if item))


class ActionForm(forms.Form):
    """Every action carries the status the page showed: the service's compare-and-set."""

    expected_status = forms.ChoiceField(choices=DeploymentStatus.choices, widget=forms.HiddenInput)

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {}).setdefault("expected_status", deployment.status)
        super().__init__(*args, **kwargs)
        self.deployment = deployment


class StartCanaryForm(ActionForm):
    canary_pct = forms.IntegerField(
        label="Canary traffic (%)",
        min_value=1,
        max_value=100,
        help_text="Share of new workflows, sessions and users that v2 serves.",
    )
    target_user_ids = forms.CharField(
        label="Only these users",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Optional: user ids, one per line or comma-separated. Empty: everyone.",
    )
    target_workflow_ids = forms.CharField(
        label="Only these workflows",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Optional: workflow ids, one per line or comma-separated.",
    )

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        initial = kwargs.setdefault("initial", {})
        initial.setdefault(
            "canary_pct", deployment.canary_config.get("initial_traffic_percentage", 10)
        )
        super().__init__(*args, deployment=deployment, **kwargs)

    def target_filter(self) -> dict[str, list[str]] | None:
        users = _id_list(self.cleaned_data.get("target_user_ids") or "")
        workflows = _id_list(self.cleaned_data.get("target_workflow_ids") or "")
        found = {"user_ids": users, "workflow_ids": workflows}
        return {key: ids for key, ids in found.items() if ids} or None


class TrafficForm(ActionForm):
    traffic_percentage = forms.IntegerField(
        label="New canary traffic (%)",
        min_value=0,
        max_value=100,
        help_text="Only contexts not yet assigned see the new share; assigned ones keep theirs.",
    )
    expected_traffic = forms.IntegerField(widget=forms.HiddenInput, min_value=0, max_value=100)

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        initial = kwargs.setdefault("initial", {})
        step = int(deployment.canary_config.get("increment", 10))
        initial.setdefault("traffic_percentage", min(100, deployment.traffic_percentage + step))
        initial.setdefault("expected_traffic", deployment.traffic_percentage)
        super().__init__(*args, deployment=deployment, **kwargs)


class RollbackForm(ActionForm):
    reason = forms.CharField(
        label="Reason",
        max_length=services.MAX_REASON,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required. Recorded in the event history and sent with notifications.",
        error_messages={"required": "A reason is required to roll back."},
    )
    apply_compensation = forms.BooleanField(
        label="Apply compensation",
        required=False,
        initial=True,
    )


COMPENSATION_EFFECT = {
    CompensationStrategy.ROLLBACK_ONLY: (
        "restores v1 and changes no data (the same as without compensation)."
    ),
    CompensationStrategy.NOTIFY_AND_ROLLBACK: (
        "restores v1 and notifies Slack and e-mail at once."
    ),
    CompensationStrategy.MANUAL: (
        "restores v1 and flags every v2 execution of this deployment as needing "
        "reprocessing; the deployment shows compensation pending until an operator "
        "marks it done."
    ),
}


@dataclass(frozen=True)
class Situation:
    """What the page knows about the deployment's rule set, read once per request."""

    deployment: Deployment
    active: Deployment | None  # another deployment of the rule set that is active
    canary: Deployment | None  # another deployment of the rule set that is in canary

    @classmethod
    def of(cls, deployment: Deployment) -> Situation:
        siblings = (
            Deployment.objects.filter(
                ruleset_id=deployment.ruleset_id,
                status__in=[DeploymentStatus.ACTIVE, DeploymentStatus.CANARY],
            )
            .exclude(pk=deployment.pk)
            .select_related("version")
        )
        by_status = {sibling.status: sibling for sibling in siblings}
        return cls(
            deployment,
            by_status.get(DeploymentStatus.ACTIVE),
            by_status.get(DeploymentStatus.CANARY),
        )


Runner = Callable[[Deployment, dict[str, Any], Any, forms.Form], str]


@dataclass(frozen=True)
class DeploymentAction:
    """One button on the deployment page and its confirmation step."""

    name: str  # the transition, as the API names it
    label: str
    permission: str
    form_class: type[ActionForm]
    consequence: Callable[[Situation], str]
    run: Runner
    style: str = "default"  # CSS modifier of the button
    leaves_page: bool = False  # the deployment no longer exists afterwards

    def label_for(self, deployment: Deployment) -> str:
        if self.name == transitions.PROMOTE and deployment.status == DeploymentStatus.DRAFT:
            return "Promote as first release"
        return self.label

    def available(self, situation: Situation) -> bool:
        """Allowed by the lifecycle table and by the rule set's other deployments."""
        deployment = situation.deployment
        if self.name not in transitions.allowed_actions(deployment.status):
            return False
        if deployment.status == DeploymentStatus.DRAFT:
            if self.name == transitions.START_CANARY:
                return situation.active is not None and situation.canary is None
            if self.name == transitions.PROMOTE:
                return situation.active is None and situation.canary is None
        return True


def _v(deployment: Deployment | None) -> str:
    return deployment.version.version if deployment is not None else "?"


def _start_consequence(s: Situation) -> str:
    return (
        f"{_v(s.deployment)} will serve the percentage below of new workflows, sessions and "
        f"users (only the listed ones, if you list any); {_v(s.active)} keeps serving "
        "everyone else. Each context keeps the version it gets for the whole canary."
    )


def _traffic_consequence(s: Situation) -> str:
    return (
        f"{_v(s.deployment)} now serves {s.deployment.traffic_percentage}% of new contexts; "
        "after this it serves the percentage below. Contexts already assigned keep their "
        f"version; {_v(s.deployment.baseline)} serves the rest."
    )


def _promote_consequence(s: Situation) -> str:
    deployment = s.deployment
    if deployment.status == DeploymentStatus.DRAFT:
        return (
            f"{_v(deployment)} will serve 100% of traffic as the first release of "
            f"{deployment.ruleset.name}."
        )
    baseline = deployment.baseline
    tail = f"; {_v(baseline)} will be deprecated" if baseline is not None else ""
    return f"{_v(deployment)} will serve 100% of traffic{tail}."


def _rollback_consequence(s: Situation) -> str:
    deployment = s.deployment
    strategy = CompensationStrategy(deployment.compensation_strategy)
    if deployment.status == DeploymentStatus.CANARY:
        text = (
            f"{_v(deployment)} stops serving at once; {_v(deployment.baseline)} serves everyone "
            "and the canary's assignments are cleared."
        )
    else:
        restored = deployment.baseline
        if restored is not None:
            text = (
                f"{_v(deployment)} stops serving; {_v(restored)} (the deployment it replaced) "
                "becomes active again and serves 100% of traffic."
            )
        else:
            text = (
                f"{_v(deployment)} stops serving and nothing serves {deployment.ruleset.name} "
                "until another version is promoted."
            )
    return (
        f"{text} This cannot be undone: to release it again, create a new deployment. "
        f"Compensation strategy “{strategy.label}”: with compensation, a rollback "
        f"{COMPENSATION_EFFECT[strategy]} Without it, only v1 is restored."
    )


def _deprecate_consequence(s: Situation) -> str:
    return (
        f"{_v(s.deployment)} stops serving, and no version of {s.deployment.ruleset.name} "
        "is active until another one is promoted: requests to it will be refused."
    )


def _delete_consequence(s: Situation) -> str:
    return (
        f"The draft deployment of {_v(s.deployment)} will be deleted permanently; "
        "the rule-set version itself stays."
    )


def _run_start(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    assert isinstance(form, StartCanaryForm)
    done = services.deployment_start_canary(
        deployment_id=deployment.pk,
        actor=user,
        canary_pct=data["canary_pct"],
        canary_target_filter=form.target_filter(),
        expected_status=data["expected_status"],
    )
    return f"Canary started: {_v(done)} serves {done.traffic_percentage}% of new contexts."


def _run_traffic(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    # The status stays "canary", so the traffic the page showed is checked too (under
    # the service's lock): a double submit or a stale page changes nothing.
    done = services.deployment_set_traffic(
        deployment_id=deployment.pk,
        traffic_percentage=data["traffic_percentage"],
        actor=user,
        expected_status=data["expected_status"],
        expected_traffic_percentage=data["expected_traffic"],
    )
    return f"Traffic set: {_v(done)} serves {done.traffic_percentage}% of new contexts."


def _run_promote(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    outcome = services.deployment_promote_or_approve(
        deployment_id=deployment.pk, actor=user, expected_status=data["expected_status"]
    )
    if not outcome.promoted:  # four eyes: more approvals are required (SPEC 9.3)
        return (
            f"Approval recorded, promotion pending: {outcome.approvals} of "
            f"{outcome.required_approvals} approvals ({', '.join(outcome.approved_by)}); "
            f"another approver's promote completes it."
        )
    done = outcome.deployment
    return f"Promoted: {_v(done)} serves 100% of traffic."


def _run_rollback(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    done = services.deployment_rollback(
        deployment_id=deployment.pk,
        reason=data["reason"],
        apply_compensation=bool(data["apply_compensation"]),
        actor=user,
        expected_status=data["expected_status"],
    )
    compensation = "with" if data["apply_compensation"] else "without"
    return f"Rolled back {_v(done)} ({compensation} compensation)."


def _run_deprecate(
    deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form
) -> str:
    done = services.deployment_deprecate(
        deployment_id=deployment.pk, actor=user, expected_status=data["expected_status"]
    )
    return f"Deprecated {_v(done)}."


def _run_delete(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    services.deployment_delete(
        deployment_id=deployment.pk, actor=user, expected_status=data["expected_status"]
    )
    return f"Deleted the draft deployment of {_v(deployment)}."


ACTIONS: dict[str, DeploymentAction] = {
    action.name: action
    for action in (
        DeploymentAction(
            transitions.START_CANARY,
            "Start canary",
            CHANGE_DEPLOYMENT,
            StartCanaryForm,
            _start_consequence,
            _run_start,
            style="primary",
        ),
        DeploymentAction(
            transitions.TRAFFIC,
            "Set traffic",
            CHANGE_DEPLOYMENT,
            TrafficForm,
            _traffic_consequence,
            _run_traffic,
        ),
        DeploymentAction(
            transitions.PROMOTE,
            "Promote",
            CHANGE_DEPLOYMENT,
            ActionForm,
            _promote_consequence,
            _run_promote,
            style="primary",
        ),
        DeploymentAction(
            transitions.ROLLBACK,
            "Roll back",
            CHANGE_DEPLOYMENT,
            RollbackForm,
            _rollback_consequence,
            _run_rollback,
            style="danger",
        ),
        DeploymentAction(
            transitions.DEPRECATE,
            "Deprecate",
            CHANGE_DEPLOYMENT,
            ActionForm,
            _deprecate_consequence,
            _run_deprecate,
            style="danger",
        ),
        DeploymentAction(
            transitions.DELETE,
            "Delete draft",
            DELETE_DEPLOYMENT,
            ActionForm,
            _delete_consequence,
            _run_delete,
            style="danger",
            leaves_page=True,
        ),
    )
}


def actions_for(situation: Situation, user: Any) -> list[DeploymentAction]:
    """The buttons to show: allowed now by the lifecycle and by the user's role."""
    return [
        action
        for action in ACTIONS.values()
        if action.available(situation) and user.has_perm(action.permission)
    ]


def _why_no_action(situation: Situation, user: Any) -> str | None:
    deployment = situation.deployment
    if not user.has_perm(CHANGE_DEPLOYMENT):
        return "Your role (Viewer) can look but not act; approvers and admins act."
    if deployment.status in (DeploymentStatus.ROLLED_BACK, DeploymentStatus.DEPRECATED):
        return f"A {deployment.get_status_display().lower()} deployment is read only."
    if deployment.status == DeploymentStatus.DRAFT and situation.canary is not None:
        return (
            f"{_v(situation.canary)} is in canary for this rule set: promote or roll it back "
            "before starting another."
        )
    return None


# --- event history and measurement panel ---------------------------------------------------


def event_details(event: DeploymentEvent) -> str:
    """The payload an approver needs, in words: reason, traffic, the other version."""
    payload = event.payload or {}
    parts: list[str] = []
    if "reason" in payload:
        parts.append(f"reason: {payload['reason']}")
    if "from_traffic" in payload and "to_traffic" in payload:
        parts.append(f"traffic {payload['from_traffic']}% → {payload['to_traffic']}%")
    elif "traffic_percentage" in payload:
        parts.append(f"traffic {payload['traffic_percentage']}%")
    if payload.get("baseline_version"):
        parts.append(f"v1 = {payload['baseline_version']}")
    if payload.get("canary_target_filter"):
        targets = payload["canary_target_filter"]
        counts = ", ".join(
            f"{len(ids)} {key.replace('_ids', '')}(s)" for key, ids in targets.items()
        )
        parts.append(f"only {counts}")
    if "apply_compensation" in payload:
        parts.append("compensation applied" if payload["apply_compensation"] else "no compensation")
    if payload.get("initial_release"):
        parts.append("first release")
    if payload.get("superseded_by"):
        parts.append(f"superseded by {payload['superseded_by']}")
    if payload.get("restored_by_rollback_of"):
        parts.append(f"restored by the rollback of {payload['restored_by_rollback_of']}")
    if payload.get("changed"):
        parts.append("changed " + ", ".join(payload["changed"]))
    if payload.get("version") and event.action == EventAction.CREATE:
        parts.append(f"version {payload['version']}")
    return "; ".join(parts)


def _metric_rows(comparison: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    v1, v2 = comparison.get("v1_metrics"), comparison.get("v2_metrics")

    def cell(stats: Mapping[str, Any] | None, key: str, fmt: Callable[[Any], str]) -> str:
        return NONE if not stats or stats.get(key) is None else fmt(stats[key])

    specs: list[tuple[str, str, Callable[[Any], str]]] = [
        ("requests", "total_requests", str),
        ("success rate", "success_rate", percent),
        ("error rate", "error_rate", percent),
        ("p95 latency", "p95_latency_ms", milliseconds),
        ("p99 latency", "p99_latency_ms", milliseconds),
    ]
    return [(label, cell(v1, key, fmt), cell(v2, key, fmt)) for label, key, fmt in specs]


def _evidence_lines(comparison: Mapping[str, Any]) -> list[str]:
    evidence = comparison.get("evidence") or {}
    lines: list[str] = []
    errors = evidence.get("error_rate")
    if errors:
        verdict = "significant" if errors.get("significant") else "not significant"
        lines.append(
            f"Error rate v2 minus v1: {percent(errors.get('difference'))} "
            f"({errors.get('test')}, p = {errors.get('p_value'):.4f}, {verdict} at 95%; "
            f"n = {errors.get('n_v1')} vs {errors.get('n_v2')})."
        )
    latency = evidence.get("latency")
    if latency:
        verdict = "significant" if latency.get("significant") else "not significant"
        lines.append(
            f"Latency: {latency.get('test')}, p = {latency.get('p_value'):.4f}, {verdict} "
            f"(samples {latency.get('sample_v1')} vs {latency.get('sample_v2')})."
        )
    for check in evidence.get("thresholds") or []:
        mark = "✓ held" if check.get("held") else "✗ breached"
        observed = check.get("observed")
        shown = milliseconds(observed) if check.get("name") == "latency_p95" else percent(observed)
        lines.append(f"{check.get('rule')}: observed {shown} — {mark}.")
    lines.extend(breach.get("message", "") for breach in evidence.get("breaches") or [])
    if "enough_samples" in evidence and not evidence["enough_samples"]:
        lines.append(
            f"Fewer than {evidence.get('min_samples')} requests on v1 or v2: not enough to "
            "recommend promotion yet."
        )
    return lines


def _timestamp(iso: str | None) -> str:
    """An ISO timestamp from the REST dicts, shortened to the second for reading."""
    if not iso:
        return NONE
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def measurement_panel(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Turn the provider's REST-shaped dicts into rows and sentences for the template."""
    if not data:
        return None
    comparison = data.get("comparison") or {}
    health = data.get("health")
    summary = comparison.get("comparison") or {}
    panel: dict[str, Any] = {
        "rows": _metric_rows(comparison),
        "recommendation": summary.get("recommendation"),
        "evidence": _evidence_lines(comparison),
        "health": None,
    }
    if health:
        panel["health"] = {
            "badge": health_badge(health.get("health_status")),
            "breaker": health.get("circuit_breaker_state"),
            "error_rate": percent(health.get("current_error_rate")),
            "success_rate": percent(health.get("current_success_rate")),
            "warnings": health.get("warnings") or [],
            "checked_at": _timestamp(health.get("last_check_at")),
        }
    return panel


# --- the deployment list and page ----------------------------------------------------------


class DeploymentChangeList(ChangeList):
    """Reads v2 health for the page's canary rows only: other rows cost no query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        for row in rows:
            if row.status == DeploymentStatus.CANARY:
                row.canary_health = admin_panels.health_for(row)
        self.result_list = rows


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
    readonly_fields = [
        "ruleset",
        "version_link",
        "status_label",
        "traffic",
        "baseline_link",
        "changelog",
        "canary_config_display",
        "compensation_strategy",
        "target_filter_display",
        "created_by",
        "created_at",
        "started_at",
        "promoted_at",
        "rolled_back_at",
        "deprecated_at",
        "rollback_reason",
        "id",
    ]
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
    change_form_template = "admin/deployments/deployment/change_form.html"

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
        return pretty_json(obj.canary_config)

    @admin.display(description="canary target filter")
    def target_filter_display(self, obj: Deployment) -> SafeString:
        if not obj.canary_target_filter:
            return format_html("{}", "everyone (no filter)")
        return pretty_json(obj.canary_target_filter)

    # the page

    def get_urls(self) -> list[URLPattern]:
        action = path(
            "<path:object_id>/actions/<slug:action>/",
            self.admin_site.admin_view(self.action_view),
            name="deployments_deployment_action",
        )
        return [action, *super().get_urls()]

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
        buttons = [
            {
                "label": action.label_for(deployment),
                "url": reverse(
                    "admin:deployments_deployment_action", args=[deployment.pk, action.name]
                ),
                "style": action.style,
                "name": action.name,
            }
            for action in actions_for(situation, request.user)
        ]
        events = [
            {
                "when": event.created_at,
                "actor": event.actor,
                "action": event.get_action_display(),
                "from_status": status_badge(event.from_status) if event.from_status else NONE,
                "to_status": status_badge(event.to_status) if event.to_status else NONE,
                "details": event_details(event),
            }
            for event in selectors.deployment_event_list(deployment=deployment)
        ]
        query = f"?deployment={deployment.pk}"
        return {
            "canary_actions": buttons,
            "canary_no_action_reason": None if buttons else _why_no_action(situation, request.user),
            "canary_events": events,
            "canary_panel": measurement_panel(admin_panels.measurements_for(deployment)),
            "canary_status": status_badge(deployment.status),
            "canary_assignments_url": _admin_link(
                "admin:assignments_assignment_changelist", query=query
            ),
            "canary_logs_url": _admin_link("admin:monitoring_executionlog_changelist", query=query),
        }

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

        if request.method == "POST":
            form = spec.form_class(request.POST, deployment=deployment)
            if form.is_valid():
                try:
                    done = spec.run(deployment, form.cleaned_data, request.user, form)
                except DomainError as exc:
                    messages.error(request, f"{label} refused: {domain_error_text(exc)}")
                    return HttpResponseRedirect(page)
                messages.success(request, done)
                if spec.leaves_page:
                    return HttpResponseRedirect(reverse("admin:deployments_deployment_changelist"))
                return HttpResponseRedirect(page)
            messages.error(request, f"{label} refused: {form_error_text(form)}")
        elif not spec.available(situation):
            allowed = ", ".join(transitions.allowed_actions(deployment.status)) or "none"
            messages.warning(
                request,
                f"{label} is not possible now: the deployment is {deployment.status} "
                f"(allowed: {allowed}). {_why_no_action(situation, request.user) or ''}".strip(),
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
        context = {
            **self.admin_site.each_context(request),
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


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "action", "actor", "from_status", "to_status", "created_at"]
    list_filter = ["action"]
    search_fields = ["actor"]
    list_select_related = ["deployment__ruleset", "deployment__version"]


class RoleUserAdmin(UserAdmin):
    """Admins manage users, roles and tokens, but never anyone more powerful than themselves.

    Without this, the Admin role's ``change_user`` would let an Admin make
    themselves (or anyone) a superuser, set a superuser's password, or join a
    group holding more than the Admin holds. The rules are ``canary.roles``'s
    (``may_manage_user``, ``grantable_groups``); this class only applies them.
    """

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return readonly
        extra = ["is_superuser", "user_permissions"]
        if not request.user.is_staff:
            extra.append("is_staff")
        return (*readonly, *extra)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj))

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "groups":
            kwargs["queryset"] = grantable_groups(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ManagedTokenAdmin(KnoxAuthTokenAdmin):
    """API tokens: issued here (shown once), listed by prefix, revoked by deleting.

    Only a hash of each token is stored. Tokens only for users the editor may
    manage: a token is the user's whole power.
    """

    list_display = ("token_key", "user", "created", "expiry")
    list_display_links = ("token_key",)
    search_fields = ("token_key", "user__username")
    readonly_fields = ("token_key", "user", "created", "expiry")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request).select_related("user")
        if request.user.is_superuser:
            return queryset
        return queryset.filter(user__in=manageable_users(request.user))

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "user":
            kwargs["queryset"] = manageable_users(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a token is issued or revoked, never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for token in queryset:
            token.delete()  # one by one: each deletion reaches the data plane's cache


admin.site.unregister(User)
admin.site.register(User, RoleUserAdmin)
admin.site.unregister(TokenProxy)  # the plain-text tokens' page: none are stored any more
admin.site.unregister(AuthToken)
admin.site.register(AuthToken, ManagedTokenAdmin)
