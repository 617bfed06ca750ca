"""A deployment's life after its draft: canary, traffic, promote, rollback, deprecate, delete."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from canary.errors import Conflict, GateClosed, TrafficJump, ValidationFailed
from deployments import transitions
from deployments.choices import (
    CompensationStatus,
    CompensationStrategy,
    DeploymentStatus,
    EventAction,
)
from deployments.hooks import hooks as promotion_hooks
from deployments.models import Deployment, DeploymentEvent, RuleSet
from deployments.selectors import deployment_bake_window
from deployments.services import gates
from deployments.services.actors import (
    MAX_IDENTIFIER,
    MAX_REASON,
    MAX_TARGET_IDS,
    Actor,
    _percentage_or_400,
    _text_or_400,
    actor_label,
)
from deployments.services.approvals import (
    _clear_approvals,
    checklist_enforce,
    deployment_promote_or_approve,
)
from deployments.services.plans import _plan_begin, plan_start_traffic
from deployments.services.transition import (
    _check,
    _check_unchanged,
    _lock,
    _locked_baseline,
    _record_unchanged,
    _refuse_if_canary_builds_on,
    _system_transition,
    _transition,
)
from deployments.signals import ruleset_routing_changed

# --- deployments: lifecycle ---------------------------------------------------


def _target_filter_or_400(value: Any) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationFailed({"canary_target_filter": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, list[str]] = {}
    for key, ids in value.items():
        if key not in ("user_ids", "workflow_ids"):
            errors[str(key)] = ["Unknown field. Known fields: user_ids, workflow_ids."]
            continue
        if ids is None:
            continue
        if (
            not isinstance(ids, list)
            or len(ids) > MAX_TARGET_IDS
            or not all(isinstance(i, str) and 0 < len(i) <= MAX_IDENTIFIER for i in ids)
        ):
            errors[key] = [
                f"Must be a list of at most {MAX_TARGET_IDS} non-empty strings "
                f"of at most {MAX_IDENTIFIER} characters."
            ]
            continue
        cleaned[key] = list(dict.fromkeys(ids))
    if errors:
        raise ValidationFailed({"canary_target_filter": errors})
    return cleaned or None


def deployment_start_canary(
    *,
    deployment_id: Any,
    actor: Actor,
    canary_pct: int | None = None,
    canary_target_filter: Mapping[str, Any] | None = None,
    expected_status: str | None = None,
    override_reason: str | None = None,
) -> Deployment:
    """Start the canary. With ``canary_config.enforce_preflight`` a draft whose preflight
    checklist fails (SPEC 10.2) is refused (``NotReady``, 409 with the checks) unless
    ``override_reason`` is given, which the ``start_canary`` event then carries."""
    target_filter = _target_filter_or_400(canary_target_filter)
    override = _text_or_400("override_reason", override_reason, MAX_REASON).strip()
    if override_reason is not None and not override:
        raise ValidationFailed({"override_reason": ["May not be blank when given."]})

    seen = gates.unlocked(deployment_id)
    if seen is not None and seen.status == DeploymentStatus.DRAFT:
        gates.gate_check(
            deployment=seen,
            gate_type=gates.CONFIRM_START,
            context={"action": "start_canary", "canary_pct": canary_pct},
        )

    def gate(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> bool:
        if deployment.status == DeploymentStatus.DRAFT:
            _check_preflight(deployment, now, override, payload)
        return True

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        pct = canary_pct
        if pct is None:
            pct = deployment.canary_config.get("initial_traffic_percentage", 10)
        pct = _percentage_or_400("canary_pct", pct, low=0)
        steps = deployment.canary_config.get("steps")
        if steps:  # a rollout plan (SPEC 10.1) says where the canary starts
            pct = plan_start_traffic(steps, canary_pct, pct)
        siblings = Deployment.objects.filter(ruleset_id=deployment.ruleset_id).exclude(
            pk=deployment.pk
        )
        running = siblings.filter(status=DeploymentStatus.CANARY).select_related("version").first()
        if running is not None:
            raise Conflict(
                f"Deployment {running.pk} (version {running.version.version}) is already "
                "in canary for this rule set; promote or roll it back first.",
                canary_deployment_id=str(running.pk),
            )
        active = siblings.filter(status=DeploymentStatus.ACTIVE).select_related("version").first()
        if active is None:
            raise Conflict(
                "This rule set has no active deployment to serve as v1. The first release "
                f"of a rule set is promoted directly: POST /api/v1/deployments/{deployment.pk}"
                "/promote."
            )
        if active.version_id == deployment.version_id:
            raise Conflict(
                f"Version {active.version.version} is already active (deployment {active.pk})."
            )
        deployment.baseline = active
        deployment.traffic_percentage = pct
        deployment.canary_target_filter = target_filter
        deployment.started_at = now
        payload.update(
            traffic_percentage=pct,
            canary_target_filter=target_filter,
            baseline_id=str(active.pk),
            baseline_version=active.version.version,
        )
        _plan_begin(deployment, now, payload)
        return {"baseline", "traffic_percentage", "canary_target_filter", "started_at"}

    return _transition(
        deployment_id=deployment_id,
        action=transitions.START_CANARY,
        event=EventAction.START_CANARY,
        actor=actor,
        before=apply,
        gate=gate,
        expected_status=expected_status,
    )


def _check_preflight(
    deployment: Deployment, now: datetime, override: str, payload: dict[str, Any]
) -> None:
    if not deployment.canary_config.get("enforce_preflight", False):
        if override:
            payload["override_reason"] = override
        return
    checklist_enforce(
        promotion_hooks.preflight(deployment, now),
        override=override,
        payload=payload,
        ready_key="preflight_ready",
        refusal="The draft is not ready to start",
        remedy="Fix the checks, or start",
        fallback_name="preflight",
    )


def deployment_set_traffic(
    *,
    deployment_id: Any,
    traffic_percentage: int,
    actor: Actor,
    reason: str = "",
    expected_status: str | None = None,
    expected_traffic_percentage: int | None = None,
    now: datetime | None = None,
) -> Deployment:
    """Change the share of *new* contexts sent to v2; existing assignments keep their version.

    ``expected_traffic_percentage`` is the traffic the caller saw: checked under the
    lock, it makes a double submit or a stale page change nothing.
    """
    pct = _percentage_or_400("traffic_percentage", traffic_percentage, low=0)
    asked = _ask_traffic_gate(deployment_id, pct)

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        if pct > deployment.traffic_percentage and not asked:
            # Traffic fell under this request between the question and the lock: ask now.
            gates.gate_check(
                deployment=deployment,
                gate_type=gates.CONFIRM_TRAFFIC,
                context={"action": "set_traffic", "traffic_percentage": pct},
            )
        seen = expected_traffic_percentage
        if seen is not None and deployment.traffic_percentage != seen:
            raise Conflict(
                f"Traffic changed from {seen}% to {deployment.traffic_percentage}% while this "
                "request was in flight; nothing was done. Review it and try again.",
                traffic_percentage=deployment.traffic_percentage,
            )
        _check_traffic_jump(deployment, pct, actor, reason)
        payload.update(from_traffic=deployment.traffic_percentage, to_traffic=pct)
        if reason:
            payload["reason"] = reason
        _clear_approvals(deployment, payload)
        deployment.traffic_percentage = pct
        return {"traffic_percentage"}

    return _transition(
        deployment_id=deployment_id,
        action=transitions.TRAFFIC,
        event=EventAction.SET_TRAFFIC,
        actor=actor,
        before=apply,
        expected_status=expected_status,
        now=now,
    )


def _ask_traffic_gate(deployment_id: Any, pct: int) -> bool:
    """Ask the confirm-traffic gates before the locks when this raises traffic."""
    seen = gates.unlocked(deployment_id)
    if seen is None or seen.status != DeploymentStatus.CANARY or pct <= seen.traffic_percentage:
        return False
    gates.gate_check(
        deployment=seen,
        gate_type=gates.CONFIRM_TRAFFIC,
        context={"action": "set_traffic", "traffic_percentage": pct},
    )
    return True


def _check_traffic_jump(deployment: Deployment, pct: int, actor: Actor, reason: str) -> None:
    """The guide's "don't jump 10% to 100%" (SPEC 10.1): a person raising traffic by more
    than ``max_traffic_jump`` says why, or is refused. A plan's steps were chosen in advance."""
    if actor_label(actor).startswith("system:"):
        return
    limit = int(deployment.canary_config.get("max_traffic_jump", 50))
    jump = pct - deployment.traffic_percentage
    if jump > limit and not (isinstance(reason, str) and reason.strip()):
        raise TrafficJump(
            f"Raising traffic from {deployment.traffic_percentage}% to {pct}% jumps "
            f"{jump} points, more than canary_config.max_traffic_jump ({limit}). Raise it "
            "in smaller steps, or give a reason, which is recorded.",
            from_traffic=deployment.traffic_percentage,
            to_traffic=pct,
            max_traffic_jump=limit,
        )


def deployment_promote(
    *,
    deployment_id: Any,
    actor: Actor,
    expected_status: str | None = None,
    override_reason: str | None = None,
    now: datetime | None = None,
) -> Deployment:
    """Canary → active (its baseline deprecated), or a draft's initial release.

    Subject to the governance gates of ``deployment_promote_or_approve``; the
    deployment comes back still ``canary`` when this call only recorded an approval.
    """
    return deployment_promote_or_approve(
        deployment_id=deployment_id,
        actor=actor,
        expected_status=expected_status,
        override_reason=override_reason,
        now=now,
    ).deployment


def deployment_rollback(
    *,
    deployment_id: Any,
    reason: str,
    actor: Actor,
    apply_compensation: bool = True,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> Deployment:
    """End a canary (v1 serves everyone) or undo a promotion (the baseline is active again)."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed({"reason": ["A reason is required to roll back."]})
    reason = _text_or_400("reason", reason.strip(), MAX_REASON)
    if not isinstance(apply_compensation, bool):
        raise ValidationFailed({"apply_compensation": ["Must be true or false."]})

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        if deployment.status == DeploymentStatus.ACTIVE:
            _refuse_if_canary_builds_on(deployment, "roll it back")
        payload.update(
            reason=reason,
            apply_compensation=apply_compensation,
            compensation_strategy=deployment.compensation_strategy,
            from_traffic=deployment.traffic_percentage,
        )
        _clear_approvals(deployment, payload)
        deployment.traffic_percentage = 0
        deployment.rolled_back_at = now
        deployment.rollback_reason = reason
        fields = {"traffic_percentage", "rolled_back_at", "rollback_reason"}
        if apply_compensation and deployment.compensation_strategy == CompensationStrategy.MANUAL:
            # v2's decisions must be reviewed: monitoring flags them in this transaction.
            deployment.compensation_status = CompensationStatus.PENDING
            fields.add("compensation_status")
        return fields

    def restore_baseline(deployment: Deployment, from_status: str, now: datetime) -> None:
        if from_status != DeploymentStatus.ACTIVE:
            return
        baseline = _locked_baseline(deployment)
        if baseline is not None and baseline.status == DeploymentStatus.DEPRECATED:
            _system_transition(
                baseline,
                action=transitions.RESTORE,
                event=EventAction.RESTORE,
                actor=actor,
                now=now,
                payload={"restored_by_rollback_of": str(deployment.pk), "reason": reason},
            )

    return _transition(
        deployment_id=deployment_id,
        action=transitions.ROLLBACK,
        event=EventAction.ROLLBACK,
        actor=actor,
        before=apply,
        after=restore_baseline,
        expected_status=expected_status,
        now=now,
    )


def deployment_deprecate(
    *, deployment_id: Any, actor: Actor, expected_status: str | None = None
) -> Deployment:
    """Retire an active deployment; afterwards nothing serves the rule set."""

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        _refuse_if_canary_builds_on(deployment, "deprecate it")
        deployment.deprecated_at = now
        return {"deprecated_at"}

    return _transition(
        deployment_id=deployment_id,
        action=transitions.DEPRECATE,
        event=EventAction.DEPRECATE,
        actor=actor,
        before=apply,
        expected_status=expected_status,
    )


def deployment_delete(
    *, deployment_id: Any, actor: Actor, expected_status: str | None = None
) -> None:
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        _check_unchanged(deployment, expected_status)
        _check(deployment.status, transitions.DELETE)
        deployment.delete()


def deployment_compensation_complete(*, deployment_id: Any, actor: Actor) -> Deployment:
    """An operator has dealt with v2's decisions after a manual-compensation rollback."""
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        if deployment.compensation_status != CompensationStatus.PENDING:
            raise Conflict(
                "No compensation is pending for this deployment "
                f"(compensation status: {deployment.compensation_status}).",
                compensation_status=deployment.compensation_status,
            )
        deployment.compensation_status = CompensationStatus.COMPLETED
        deployment.save(update_fields=["compensation_status", "updated_at"])
        _record_unchanged(
            deployment,
            action=EventAction.COMPENSATION_COMPLETE,
            actor=actor,
            payload={},
        )
    return deployment


def deployment_breaker_opened(
    *, deployment_id: Any, consecutive_failures: int, cooldown_seconds: float, actor: Actor
) -> DeploymentEvent | None:
    """Record that a running canary's circuit breaker opened and the canary keeps running.

    Not a transition: v1 serves everyone until the cooldown ends. The breaker's
    store keeps only its current state, so this event is the lasting trace of
    the opening for the audit trail and the console's chart. None when the
    deployment is no longer a canary (a rollback already records why).
    """
    deployment = Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.CANARY).first()
    if deployment is None:
        return None
    return _record_unchanged(
        deployment,
        action=EventAction.BREAKER_OPEN,
        actor=actor,
        payload={
            "consecutive_failures": consecutive_failures,
            "cooldown_seconds": cooldown_seconds,
        },
    )


def deployment_canary_event(
    *, deployment_id: Any, action: str, actor: Actor, payload: dict[str, Any]
) -> tuple[Deployment, DeploymentEvent]:
    """Record an event about a running canary that is not a transition (a regression held or
    dismissed), under the same locks as a transition; 409 when it is no longer a canary.
    A promotion with a bake (SPEC 10.3) is judged like a canary, so it takes them too.

    Run it inside the caller's transaction when the event must commit with other writes.
    """
    with transaction.atomic():
        deployment = _lock(deployment_id)
        judged = deployment.status == DeploymentStatus.CANARY or (
            deployment_bake_window(deployment=deployment) is not None
        )
        if not judged:
            raise Conflict(
                f"The deployment is {deployment.status}, not a running canary.",
                status=deployment.status,
            )
        event = _record_unchanged(
            deployment,
            action=action,
            actor=actor,
            payload=payload,
        )
    return deployment, event


def deployment_bake_complete(
    *, deployment_id: Any, actor: Actor, now: datetime | None = None
) -> DeploymentEvent | None:
    """Record that an active deployment's bake after its promotion ended (SPEC 10.3).

    Event ``bake_complete``, once: None when the deployment is no longer active, its bake
    has not ended at ``now``, or the event exists. The data plane stops shadowing at the
    end on its own (its routing state holds the end); the generation bump lets every
    process drop the previous version's rules.
    """
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        window = deployment_bake_window(deployment=deployment)
        if window is None or now < window.ends_at:
            return None
        if deployment.events.filter(action=EventAction.BAKE_COMPLETE).exists():
            return None
        RuleSet.objects.filter(pk=deployment.ruleset_id).update(
            routing_generation=F("routing_generation") + 1
        )
        event = _record_unchanged(
            deployment,
            action=EventAction.BAKE_COMPLETE,
            actor=actor,
            payload={
                "previous_deployment_id": str(window.previous_id),
                "bake_started_at": window.started_at.isoformat(),
                "bake_ended_at": window.ends_at.isoformat(),
            },
            at=now,
        )
        ruleset_id = deployment.ruleset_id
        transaction.on_commit(
            lambda: ruleset_routing_changed.send(sender=RuleSet, ruleset_id=ruleset_id)
        )
    return event


def deployment_gate_closed(
    *, deployment_id: Any, closed: GateClosed, step: str, actor: Actor
) -> DeploymentEvent | None:
    """Record that an automatic action (the monitor, a rollout plan) waits at a closed gate.

    Once per ``step`` and gate type, not once per run: the audit trail says the canary
    waits, the next run that finds the gate still closed adds nothing. None when it
    was already recorded for this step, or the deployment is no longer a canary.
    """
    with transaction.atomic():
        deployment = _lock(deployment_id)
        if deployment.status != DeploymentStatus.CANARY:
            return None
        recorded = DeploymentEvent.objects.filter(
            deployment=deployment,
            action=EventAction.GATE_CLOSED,
            payload__step=step,
            payload__gate__type=closed.gate["type"],
        )
        if recorded.exists():
            return None
        return _record_unchanged(
            deployment,
            action=EventAction.GATE_CLOSED,
            actor=actor,
            payload={
                "step": step,
                "gate": closed.gate,
                "status_code": closed.status_code_answered,
                "detail": closed.detail,
            },
        )


def deployment_version_event(
    *, version_id: Any, action: str, actor: Actor, payload: dict[str, Any], at: datetime
) -> list[DeploymentEvent]:
    """Record an event about a version (a backtest completed) on each of its deployments not
    yet released (drafts and canaries): their audit trail is where a reviewer looks."""
    deployments = Deployment.objects.filter(
        version_id=version_id, status__in=[DeploymentStatus.DRAFT, DeploymentStatus.CANARY]
    )
    return [
        _record_unchanged(
            deployment,
            action=action,
            actor=actor,
            payload=payload,
            at=at,
        )
        for deployment in deployments
    ]
