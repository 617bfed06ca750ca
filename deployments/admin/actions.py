"""The lifecycle buttons: one ``DeploymentAction`` per transition, its form, its
consequence in words and the one service call it makes.

Every action goes through ``deployments.services`` with ``expected_status`` (the
status the page showed); nothing here changes a deployment by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings

from deployments import admin_panels, services, transitions
from deployments.admin.display import CHANGE_DEPLOYMENT, DELETE_DEPLOYMENT
from deployments.choices import CompensationStatus, CompensationStrategy, DeploymentStatus
from deployments.models import Deployment

LIFECYCLE = "lifecycle"
COMPENSATION = "compensation"
COMPENSATION_REPLAY = "compensation-replay"
COMPENSATION_COMPLETE = "compensation-complete"


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


class PromoteForm(ActionForm):
    """Promoting against a rollback recommendation or an unready canary takes an
    explicit acknowledgement and a reason, recorded on the promote event."""

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        super().__init__(*args, deployment=deployment, **kwargs)
        verdict = admin_panels.panel("verdict", deployment)
        self.verdict = verdict
        if verdict and verdict.get("against_promote"):
            # The verdict itself is shown above the form; the label stays one line.
            self.fields["acknowledge"] = forms.BooleanField(
                label=(
                    "I promote against the evidence: the rollback verdict above"
                    if verdict.get("recommendation") == "rollback"
                    else "I promote against the evidence: the pending checks above"
                ),
                required=True,
            )
            self.fields["override_reason"] = forms.CharField(
                label="Why promote anyway",
                max_length=2000,
                widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
                help_text="Recorded on the promote event.",
            )


class StartCanaryForm(ActionForm):
    canary_pct = forms.IntegerField(
        label="Canary traffic (%)",
        min_value=0,
        max_value=100,
        help_text=(
            "Share of new workflows, sessions and users that v2 serves. 0 is a dark "
            "launch: nobody is served v2, every request evaluates it in shadow."
        ),
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


TRAFFIC_PRESETS = (10, 25, 50, 100)


class TrafficSlider(forms.NumberInput):
    """A 0-100 slider with the canary's steps marked, preset buttons and the current value.

    Still one ``<input name=traffic_percentage>``: without JavaScript the
    browser's own slider posts the same field; ``deployments/admin.js`` only
    shows the value beside it and wires the preset buttons.
    """

    input_type = "range"
    template_name = "admin/deployments/widgets/traffic_slider.html"

    def __init__(self, *, current: int, increment: int) -> None:
        super().__init__(attrs={"min": 0, "max": 100, "step": 1, "data-canary-slider": ""})
        self.current = current
        self.increment = max(1, increment)

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        steps = set(range(0, 101, self.increment)) | {100, self.current}
        presets = sorted(
            {min(100, self.current + self.increment), *TRAFFIC_PRESETS} - {self.current}
        )
        context["widget"].update(
            steps=sorted(steps), presets=presets, current=self.current, increment=self.increment
        )
        return context


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
        self.fields["traffic_percentage"].widget = TrafficSlider(
            current=deployment.traffic_percentage, increment=step
        )


class RollbackForm(ActionForm):
    """The reason starts as the verdict's own words when it says roll back, focused, so a
    rollback from the home page is one click and a confirm."""

    reason = forms.CharField(
        label="Reason",
        max_length=services.MAX_REASON,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "autofocus": True}),
        help_text="Required. Recorded in the event history and sent with notifications.",
        error_messages={"required": "A reason is required to roll back."},
    )
    apply_compensation = forms.BooleanField(
        label="Apply compensation",
        required=False,
        initial=True,
    )

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        if deployment.status == DeploymentStatus.CANARY:
            verdict = admin_panels.panel("verdict", deployment) or {}
            if verdict.get("rollback_reason"):
                kwargs.setdefault("initial", {}).setdefault("reason", verdict["rollback_reason"])
        super().__init__(*args, deployment=deployment, **kwargs)


COMPENSATION_EFFECT = {
    CompensationStrategy.ROLLBACK_ONLY: (
        "restores v1 and changes no data (the same as without compensation)."
    ),
    CompensationStrategy.NOTIFY_AND_ROLLBACK: "restores v1 and {notifies}.",
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

    @property
    def is_baseline(self) -> bool:
        """This deployment is v1 of the running canary."""
        return self.canary is not None and self.canary.baseline_id == self.deployment.pk

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
    group: str = LIFECYCLE  # where the button sits: the actions bar or a panel
    when: Callable[[Situation], bool] | None = None  # availability, for non-transitions

    def label_for(self, deployment: Deployment) -> str:
        if self.name == transitions.PROMOTE and deployment.status == DeploymentStatus.DRAFT:
            return "Promote as first release"
        return self.label

    def available(self, situation: Situation) -> bool:
        """Allowed by the lifecycle table and by the rule set's other deployments."""
        if self.when is not None:
            return self.when(situation)
        deployment = situation.deployment
        if self.name not in transitions.allowed_actions(deployment.status):
            return False
        if situation.is_baseline and self.name in (transitions.ROLLBACK, transitions.DEPRECATE):
            return False  # always refused while a canary runs against it as v1
        if deployment.status == DeploymentStatus.DRAFT:
            if self.name == transitions.START_CANARY:
                return situation.active is not None and situation.canary is None
            if self.name == transitions.PROMOTE:
                return situation.active is None and situation.canary is None
        return True


def _compensation_pending(s: Situation) -> bool:
    return s.deployment.compensation_status == CompensationStatus.PENDING


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
    skipped = skipped_steps(deployment)
    jump = (
        f" This skips the steps {', '.join(f'{step}%' for step in skipped)}: traffic goes "
        f"from {deployment.traffic_percentage}% straight to 100%."
        if skipped
        else ""
    )
    return f"{_v(deployment)} will serve 100% of traffic{tail}.{jump}"


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
        f"{COMPENSATION_EFFECT[strategy].format(notifies=notified_channels())} Without it, "
        "only v1 is restored."
    )


def notified_channels() -> str:
    """What a notification reaches here, so a confirmation promises no channel that is off."""
    channels = []
    if settings.SLACK_WEBHOOK_URL:
        channels.append("Slack")
    if getattr(settings, "CANARY_NOTIFY_EMAIL", False) and getattr(
        settings, "CANARY_NOTIFY_EMAILS", None
    ):
        channels.append("e-mail")
    if not channels:
        return "notifies nobody: no Slack webhook or e-mail recipients are configured"
    return "notifies " + " and ".join(channels) + " at once"


def skipped_steps(deployment: Deployment) -> list[int]:
    """The traffic steps a promote to 100% jumps over, from the canary's current one."""
    if deployment.status != DeploymentStatus.CANARY:
        return []
    increment = max(1, int(deployment.canary_config.get("increment", 10)))
    return list(range(deployment.traffic_percentage + increment, 100, increment))


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
    if done.traffic_percentage == 0:
        return f"Dark launch started: {_v(done)} serves nobody and runs in shadow beside v1."
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
        deployment_id=deployment.pk,
        actor=user,
        expected_status=data["expected_status"],
        override_reason=(data.get("override_reason") or "").strip() or None,
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


def _replay_consequence(s: Situation) -> str:
    return (
        f"Every execution of {_v(s.deployment)} flagged for reprocessing is evaluated again "
        f"with {_v(s.deployment.baseline)}'s rules, in the background, once each. Nothing is "
        "changed or sent anywhere: the page then lists the decisions v1 would have made "
        "differently."
    )


def _complete_consequence(s: Situation) -> str:
    summary = admin_panels.panel("compensation", s.deployment) or {}
    if summary.get("flagged") and not summary.get("processed"):
        return (
            f"Nothing has been replayed yet: 0 of {summary['flagged']:,} flagged executions "
            "were evaluated on v1, so nobody knows which decisions differ. Replay on v1 "
            "first unless they were dealt with another way. "
        ) + _complete_done(s)
    return _complete_done(s)


def _complete_done(s: Situation) -> str:
    return (
        f"Compensation of {_v(s.deployment)} is recorded as done (an event names you); "
        "the deployment stops showing compensation pending. Do this once the decisions "
        "listed as differing have been dealt with."
    )


def _run_replay(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    summary = admin_panels.operation("compensation_replay")(deployment=deployment)
    return (
        f"Replay queued for {summary['flagged']} flagged executions of {_v(deployment)}; "
        "the differing decisions appear here as it runs."
    )


def _run_complete(deployment: Deployment, data: dict[str, Any], user: Any, form: forms.Form) -> str:
    done = services.deployment_compensation_complete(deployment_id=deployment.pk, actor=user)
    return f"Compensation of {_v(done)} marked complete."


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
            PromoteForm,
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
        DeploymentAction(
            COMPENSATION_REPLAY,
            "Replay on v1",
            CHANGE_DEPLOYMENT,
            ActionForm,
            _replay_consequence,
            _run_replay,
            group=COMPENSATION,
            when=_compensation_pending,
        ),
        DeploymentAction(
            COMPENSATION_COMPLETE,
            "Mark compensation complete",
            CHANGE_DEPLOYMENT,
            ActionForm,
            _complete_consequence,
            _run_complete,
            style="primary",
            group=COMPENSATION,
            when=_compensation_pending,
        ),
    )
}


def actions_for(situation: Situation, user: Any, group: str = LIFECYCLE) -> list[DeploymentAction]:
    """The buttons to show: allowed now by the lifecycle and by the user's role."""
    return [
        action
        for action in ACTIONS.values()
        if action.group == group
        and action.available(situation)
        and user.has_perm(action.permission)
    ]


def why_no_action(situation: Situation, user: Any) -> str | None:
    deployment = situation.deployment
    if not user.has_perm(CHANGE_DEPLOYMENT):
        return "Your role (Viewer) can look but not act; approvers and admins act."
    if deployment.status in (DeploymentStatus.ROLLED_BACK, DeploymentStatus.DEPRECATED):
        return f"A {deployment.get_status_display().lower()} deployment is read only."
    if situation.is_baseline and situation.canary is not None:
        return (
            f"{_v(deployment)} is v1 of the canary {_v(situation.canary)}: it can be rolled "
            "back or deprecated only after that canary is promoted or rolled back."
        )
    if deployment.status == DeploymentStatus.DRAFT and situation.canary is not None:
        return (
            f"{_v(situation.canary)} is in canary for this rule set: promote or roll it back "
            "before starting another."
        )
    return None


def arrange_buttons(
    deployment: Deployment,
    verdict: dict[str, Any] | None,
    buttons: list[dict[str, str]],
    user: Any,
) -> tuple[list[dict[str, str]], str | None]:
    """A canary's buttons in the verdict's order and colours, and a note on four eyes.

    The verdict's action comes first and is the only prominent one: red "Roll back" on a
    rollback verdict; otherwise the primary button raises traffic to the next step, and
    "Promote to 100%" is secondary (green only when the verdict says promote and every
    readiness check passes, at the last step). An approver who already approved is not
    offered promote again.
    """
    if deployment.status != DeploymentStatus.CANARY or not verdict:
        return buttons, None
    by_name = {button["name"]: button for button in buttons}
    note = None
    approved_by = list(verdict.get("approved_by") or [])
    required = int(verdict.get("required_approvals") or 1)
    promote = by_name.get(transitions.PROMOTE)
    traffic = by_name.get(transitions.TRAFFIC)
    rollback = by_name.get(transitions.ROLLBACK)
    if promote is not None and user.get_username() in approved_by:
        del by_name[transitions.PROMOTE]
        promote = None
        note = (
            f"You approved the promotion ({len(approved_by)} of {required}: "
            f"{', '.join(approved_by)}); another approver completes it."
        )
    at_last_step = not skipped_steps(deployment) and deployment.traffic_percentage >= 100
    if promote is not None:
        promote["label"] = "Promote" if at_last_step else "Promote to 100%"
        if required > 1:
            promote["label"] = (
                f"Approve: {promote['label'].lower()} ({len(approved_by) + 1} of {required})"
            )
        promote["style"] = "secondary"
    if traffic is not None:
        increment = max(1, int(deployment.canary_config.get("increment", 10)))
        step = min(100, deployment.traffic_percentage + increment)
        traffic["label"] = (
            f"Raise to {step}%" if deployment.traffic_percentage < 100 else "Set traffic"
        )
        traffic["style"] = "secondary"
    tone = verdict.get("tone")
    if tone == "error":
        order = [rollback, traffic, promote]
        if promote is not None:
            promote["label"] = "Promote against the verdict"
    elif tone == "ok" and (at_last_step or traffic is None) and promote is not None:
        promote["style"] = "primary"
        order = [promote, traffic, rollback]
    else:
        if traffic is not None and deployment.traffic_percentage < 100:
            traffic["style"] = "primary" if tone == "ok" else "default"
        order = [traffic, promote, rollback]
    first = [button for button in order if button is not None]
    rest = [button for name, button in by_name.items() if button not in first]
    return first + rest, note
