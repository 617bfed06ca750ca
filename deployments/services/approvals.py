"""Promotion behind its governance gates (readiness, approvals): own state, below lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction

from canary.errors import AlreadyApproved, Conflict, InvalidTransition, NotReady, ValidationFailed
from deployments import transitions
from deployments.choices import DeploymentStatus, EventAction
from deployments.hooks import ReadinessVerdict
from deployments.hooks import hooks as promotion_hooks
from deployments.models import Deployment, PromotionApproval
from deployments.services import gates
from deployments.services.actors import MAX_REASON, Actor, _actor_user, _text_or_400, actor_label
from deployments.services.transition import (
    _locked_baseline,
    _record_unchanged,
    _system_transition,
    _transition,
)
from deployments.signals import promotion_approval_recorded


@dataclass(frozen=True)
class PromoteOutcome:
    """What one promote request did: promoted, or recorded one approval of several."""

    deployment: Deployment
    promoted: bool
    approved_by: tuple[str, ...] = ()
    required_approvals: int = 1

    @property
    def approvals(self) -> int:
        return len(self.approved_by)


def deployment_promote_or_approve(
    *,
    deployment_id: Any,
    actor: Actor,
    expected_status: str | None = None,
    override_reason: str | None = None,
    now: datetime | None = None,
) -> PromoteOutcome:
    """Promote, behind the release-governance gates of SPEC 9.3 (a canary only).

    - ``enforce_readiness``: an unready canary is refused (``NotReady``, 409 with
      the checks) unless ``override_reason`` is given; the promote event then
      carries the reason and the failed checks.
    - ``required_approvals`` > 1: each approver's call records one approval (an
      ``approve`` event) until the last one promotes; the same approver twice is
      ``AlreadyApproved``. Everything happens under the rule set's row lock, so
      two approvers pressing at once give exactly one promote.
    """
    override = _text_or_400("override_reason", override_reason, MAX_REASON).strip()
    if override_reason is not None and not override:
        raise ValidationFailed({"override_reason": ["May not be blank when given."]})
    _settle_if_readiness_enforced(deployment_id)
    asked = _ask_promotion_gate(deployment_id)
    pending: list[PromoteOutcome] = []

    def gate(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> bool:
        if deployment.status != DeploymentStatus.CANARY:
            return True
        _check_readiness(deployment, now, override, payload)
        if override:  # an acknowledged promote against the evidence says why, always
            payload.setdefault("override_reason", override)
        outcome = _record_approval(deployment, actor, now, payload)
        if outcome is None:
            if not asked:  # the approvals were completed by this call after all: ask now
                gates.gate_check(
                    deployment=deployment,
                    gate_type=gates.CONFIRM_PROMOTION,
                    context={"action": "promote"},
                )
            return True
        pending.append(outcome)
        return False

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        if deployment.status == DeploymentStatus.DRAFT:
            others = Deployment.objects.filter(ruleset_id=deployment.ruleset_id).exclude(
                pk=deployment.pk
            )
            blocking = others.filter(
                status__in=[DeploymentStatus.ACTIVE, DeploymentStatus.CANARY]
            ).first()
            if blocking is not None:
                allowed = [
                    a for a in transitions.allowed_actions(deployment.status) if a != "promote"
                ]
                raise InvalidTransition(
                    f"Only a rule set's first release is promoted from draft; deployment "
                    f"{blocking.pk} is {blocking.status}. Start a canary instead.",
                    current_status=deployment.status,
                    allowed_actions=allowed,
                )
            deployment.started_at = now
            payload["initial_release"] = True
        else:
            baseline = _locked_baseline(deployment)
            if baseline is not None and baseline.status == DeploymentStatus.ACTIVE:
                _system_transition(
                    baseline,
                    action=transitions.SUPERSEDE,
                    event=EventAction.SUPERSEDE,
                    actor=actor,
                    now=now,
                    payload={"superseded_by": str(deployment.pk)},
                )
        payload["from_traffic"] = deployment.traffic_percentage
        deployment.traffic_percentage = 100
        deployment.promoted_at = now
        return {"traffic_percentage", "promoted_at", "started_at"}

    deployment = _transition(
        deployment_id=deployment_id,
        action=transitions.PROMOTE,
        event=EventAction.PROMOTE,
        actor=actor,
        gate=gate,
        before=apply,
        expected_status=expected_status,
        now=now,
    )
    if pending:
        return pending[0]
    return PromoteOutcome(deployment=deployment, promoted=True)


def _ask_promotion_gate(deployment_id: Any) -> bool:
    """Ask the confirm-promotion gates before the locks when this call would promote
    (with four eyes: only the approval that completes them promotes)."""
    seen = gates.unlocked(deployment_id)
    if seen is None or seen.status not in (DeploymentStatus.CANARY, DeploymentStatus.DRAFT):
        return False
    if not gates.gates_of(seen, gates.CONFIRM_PROMOTION):
        return True
    required = int(seen.canary_config.get("required_approvals", 1))
    if seen.status == DeploymentStatus.CANARY and required > 1:
        given = PromotionApproval.objects.filter(deployment=seen).count()
        if given + 1 < required:
            return False
    gates.gate_check(
        deployment=seen, gate_type=gates.CONFIRM_PROMOTION, context={"action": "promote"}
    )
    return True


def _settle_if_readiness_enforced(deployment_id: Any) -> None:
    """Let readiness see every answered request; only worth the wait when it can refuse."""
    try:
        deployments = Deployment.objects.filter(pk=deployment_id)
        config = deployments.values_list("canary_config", flat=True).first()
    except (ValueError, TypeError, DjangoValidationError):
        return  # a malformed id: the locked read reports it
    if config and config.get("enforce_readiness"):
        promotion_hooks.settle()


def _check_readiness(
    deployment: Deployment, now: datetime, override: str, payload: dict[str, Any]
) -> None:
    if not deployment.canary_config.get("enforce_readiness", False):
        return
    checklist_enforce(
        promotion_hooks.readiness(deployment, now),
        override=override,
        payload=payload,
        ready_key="ready",
        refusal="The canary is not ready to promote",
        remedy="Wait for the checks, or promote",
        fallback_name="readiness",
    )


def checklist_enforce(
    verdict: ReadinessVerdict,
    *,
    override: str,
    payload: dict[str, Any],
    ready_key: str,
    refusal: str,
    remedy: str,
    fallback_name: str,
) -> None:
    """An enforced checklist (readiness before a promote, preflight before a start): a
    failing one refuses the action (``NotReady``, 409 with the checks) unless an override
    reason is given, which the event's payload records with the failed checks."""
    if verdict.ready:
        payload[ready_key] = True
        return
    failed = verdict.failed_checks()
    if not override:
        names = ", ".join(check["name"] for check in failed) or fallback_name
        raise NotReady(
            f"{refusal} (failed: {names}). {remedy} with an override_reason, which is recorded.",
            checks=verdict.checks,
        )
    payload.update({ready_key: False, "override_reason": override, "failed_checks": failed})


def _record_approval(
    deployment: Deployment, actor: Actor, now: datetime, payload: dict[str, Any]
) -> PromoteOutcome | None:
    """Four eyes: None when this call completes the approvals (promote), else the pending state."""
    required = int(deployment.canary_config.get("required_approvals", 1))
    if required <= 1:
        return None
    label = actor_label(actor)
    if label.startswith("system:") or actor is None:
        raise Conflict(
            f"Promoting this canary needs {required} approvals from people; "
            f"{label} cannot give one.",
            required_approvals=required,
        )
    user = _actor_user(actor)
    approvals = PromotionApproval.objects.filter(deployment=deployment)
    approved_by = list(approvals.values_list("approver", flat=True))
    mine = approvals.filter(approver=label)
    if user is not None:
        mine = approvals.filter(models.Q(approver=label) | models.Q(user_id=user.pk))
    if mine.exists():
        raise AlreadyApproved(
            f"{label} has already approved this promotion; it needs {required} approvals "
            f"from different approvers ({len(approved_by)} so far).",
            approvals=len(approved_by),
            required_approvals=required,
            approved_by=approved_by,
        )
    approved_by.append(label)
    if len(approved_by) >= required:
        approvals.delete()
        payload.update(approved_by=approved_by, required_approvals=required)
        return None
    PromotionApproval.objects.create(
        deployment=deployment, approver=label, user=user, created_at=now
    )
    event_payload = {**payload, "approvals": len(approved_by), "required_approvals": required}
    event_payload["approved_by"] = approved_by
    _record_unchanged(
        deployment,
        action=EventAction.APPROVE,
        actor=actor,
        payload=event_payload,
        at=now,
    )
    transaction.on_commit(
        lambda: promotion_approval_recorded.send(
            sender=Deployment,
            deployment=deployment,
            approver=label,
            approved_by=list(approved_by),
            required_approvals=required,
        )
    )
    return PromoteOutcome(
        deployment=deployment,
        promoted=False,
        approved_by=tuple(approved_by),
        required_approvals=required,
    )


def _clear_approvals(deployment: Deployment, payload: dict[str, Any]) -> None:
    """A traffic change or a rollback voids pending approvals: they approved another state."""
    approvals = PromotionApproval.objects.filter(deployment=deployment)
    cleared = list(approvals.values_list("approver", flat=True))
    if cleared:
        approvals.delete()
        payload["approvals_cleared"] = cleared
