"""The one transition path every deployment status change takes: the base of services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from canary.errors import Conflict, InvalidTransition, NotFound
from deployments import transitions
from deployments.choices import DeploymentStatus
from deployments.hooks import release_hooks
from deployments.models import Deployment, DeploymentEvent, RuleSet
from deployments.services.actors import Actor, actor_label
from deployments.signals import deployment_transitioned, deployment_transitioning

# --- the one transition path ---------------------------------------------------

Before = Callable[[Deployment, datetime, dict[str, Any]], set[str]]
After = Callable[[Deployment, str, datetime], None]
# Runs under the locks after the transition is known to be allowed; False means it
# made its own change (an approval) and the transition does not happen.
Gate = Callable[[Deployment, datetime, dict[str, Any]], bool]


@dataclass(frozen=True)
class _Change:
    deployment: Deployment
    action: str
    from_status: str
    to_status: str
    actor: str


def _lock(deployment_id: Any) -> Deployment:
    """Lock the rule set, then the deployment: one order everywhere, so no deadlocks."""
    try:
        ruleset_id = (
            Deployment.objects.filter(pk=deployment_id).values_list("ruleset_id", flat=True).first()
        )
    except (ValueError, TypeError, DjangoValidationError) as exc:  # a malformed id
        raise NotFound(f"No deployment with id '{deployment_id}'.") from exc
    if ruleset_id is None:
        raise NotFound(f"No deployment with id '{deployment_id}'.")
    RuleSet.objects.select_for_update().only("pk").get(pk=ruleset_id)
    return (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("ruleset", "version")
        .get(pk=deployment_id)
    )


def _locked_baseline(deployment: Deployment) -> Deployment | None:
    if deployment.baseline_id is None:
        return None
    return Deployment.objects.select_for_update().get(pk=deployment.baseline_id)


def _refuse_if_canary_builds_on(deployment: Deployment, what: str) -> None:
    canary = Deployment.objects.filter(baseline=deployment, status=DeploymentStatus.CANARY).first()
    if canary is not None:
        raise Conflict(
            f"Deployment {canary.pk} is in canary against this deployment as v1; "
            f"promote or roll back that canary before you {what}.",
            canary_deployment_id=str(canary.pk),
        )


def _check(status: str, action: str) -> str | None:
    try:
        return transitions.next_status(status, action)
    except transitions.TransitionNotAllowed as exc:
        raise InvalidTransition(
            str(exc), current_status=status, allowed_actions=list(exc.allowed_actions)
        ) from exc


def _check_unchanged(deployment: Deployment, expected_status: str | None) -> None:
    """Compare-and-set: refuse to act on a deployment that changed under the caller.

    An approver who pressed rollback on a canary must not roll back the active
    release that a colleague's promote made of it a moment earlier.
    """
    if expected_status is not None and deployment.status != expected_status:
        raise InvalidTransition(
            f"The deployment changed from '{expected_status}' to '{deployment.status}' while "
            "this request was in flight; nothing was done. Review it and try again.",
            current_status=deployment.status,
            allowed_actions=list(transitions.allowed_actions(deployment.status)),
        )


def _transition(
    *,
    deployment_id: Any,
    action: str,
    event: str,
    actor: Actor,
    before: Before | None = None,
    after: After | None = None,
    gate: Gate | None = None,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> Deployment:
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        from_status = deployment.status
        _check_unchanged(deployment, expected_status)
        to_status = _check(from_status, action)
        assert to_status is not None
        now = now or timezone.now()
        payload: dict[str, Any] = {}
        if gate is not None and not gate(deployment, now, payload):
            return deployment
        # The rule set's row is locked: the data plane sees a new generation
        # exactly when this change commits.
        RuleSet.objects.filter(pk=deployment.ruleset_id).update(
            routing_generation=F("routing_generation") + 1
        )
        fields = {"status", "updated_at"}
        if before is not None:
            fields |= before(deployment, now, payload)
        deployment.status = to_status
        deployment.save(update_fields=sorted(fields))
        if after is not None:
            after(deployment, from_status, now)
        _record_event(
            deployment,
            action=event,
            actor=actor,
            from_status=from_status,
            to_status=to_status,
            payload=payload,
            at=now,
        )
        _announce(_Change(deployment, action, from_status, to_status, actor_label(actor)))
    return deployment


def _system_transition(
    deployment: Deployment,
    *,
    action: str,
    event: str,
    actor: Actor,
    now: datetime,
    payload: dict[str, Any],
) -> None:
    """A baseline's status change caused by its successor's promote or rollback."""
    from_status = deployment.status
    to_status = _check(from_status, action)
    assert to_status is not None
    deployment.status = to_status
    fields = ["status", "updated_at"]
    if to_status == DeploymentStatus.DEPRECATED:
        deployment.deprecated_at = now
        fields.append("deprecated_at")
    else:
        deployment.traffic_percentage = 100
        fields.append("traffic_percentage")
    deployment.save(update_fields=fields)
    _record_event(
        deployment,
        action=event,
        actor=actor,
        from_status=from_status,
        to_status=to_status,
        payload=payload,
        at=now,
    )
    _announce(_Change(deployment, action, from_status, to_status, actor_label(actor)))


def _record_event(
    deployment: Deployment,
    *,
    action: str,
    actor: Actor,
    from_status: str,
    to_status: str,
    payload: dict[str, Any],
    at: datetime | None = None,
) -> DeploymentEvent:
    event = DeploymentEvent.objects.create(
        deployment=deployment,
        action=action,
        actor=actor_label(actor),
        from_status=from_status,
        to_status=to_status,
        payload=payload,
        created_at=at or timezone.now(),
    )
    # Webhook deliveries are written in the event's transaction (SPEC 10.4).
    release_hooks.event_recorded(event)
    return event


def _record_unchanged(
    deployment: Deployment,
    *,
    action: str,
    actor: Actor,
    payload: dict[str, Any],
    at: datetime | None = None,
) -> DeploymentEvent:
    """An event that changes no status (a pause, a plan step, a closed gate, an approval)."""
    return _record_event(
        deployment,
        action=action,
        actor=actor,
        from_status=deployment.status,
        to_status=deployment.status,
        payload=payload,
        at=at,
    )


def _announce(change: _Change) -> None:
    kwargs = {
        "deployment": change.deployment,
        "action": change.action,
        "from_status": change.from_status,
        "to_status": change.to_status,
        "actor": change.actor,
    }
    deployment_transitioning.send(sender=Deployment, **kwargs)
    transaction.on_commit(lambda: deployment_transitioned.send(sender=Deployment, **kwargs))
