"""Triggers (SPEC 10.4): a secret URL an alerting tool POSTs to, to roll back or pause the
rule set's running canary, without an API token.

The secret is 32 random bytes, shown once in the URL; only its SHA-512 digest is kept
(knox's ``hash_token``, as for API tokens) and compared in constant time. Each trigger
is rate limited (``CANARY_TRIGGER_RATE_PER_MINUTE``), so a flapping alert cannot flood
the lifecycle. The actor of what a trigger does is ``system:trigger:<name>``.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from knox.crypto import hash_token

from canary.errors import DomainError, NotFound, ValidationFailed
from deployments import services as lifecycle
from deployments.choices import DeploymentStatus
from deployments.models import Deployment, RuleSet
from deployments.selectors import deployment_bake_window
from monitoring.models import Trigger, TriggerAction

MAX_NAME = 100
# Compared against when the trigger does not exist, so a wrong id takes as long as a
# wrong secret.
_NO_DIGEST = hash_token("no-such-trigger")


class TriggerRateLimited(DomainError):
    status_code = 429
    code = "throttled"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


def trigger_path(trigger: Trigger, secret: str) -> str:
    return f"/api/v1/triggers/{trigger.pk}/{secret}"


def trigger_url(trigger: Trigger, secret: str) -> str:
    return settings.CANARY_BASE_URL.rstrip("/") + trigger_path(trigger, secret)


def trigger_create(
    *,
    name: Any,
    ruleset_id: Any,
    action: Any,
    created_by: AbstractBaseUser | None = None,
) -> tuple[Trigger, str]:
    """A new trigger and its secret URL (shown once: only the secret's digest is kept)."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        raise ValidationFailed({"name": [f"A non-empty name of at most {MAX_NAME} characters."]})
    if action not in TriggerAction.values:
        raise ValidationFailed({"action": [f"Must be one of {', '.join(TriggerAction.values)}."]})
    try:
        ruleset = RuleSet.objects.filter(pk=ruleset_id).first()
    except (ValueError, TypeError, DjangoValidationError):
        ruleset = None
    if ruleset is None:
        raise ValidationFailed({"ruleset_id": [f"No rule set with id '{ruleset_id}'."]})
    secret = secrets.token_urlsafe(32)
    trigger = Trigger.objects.create(
        name=name.strip(),
        ruleset=ruleset,
        action=action,
        secret_digest=hash_token(secret),
        created_by=created_by if created_by is not None and created_by.pk else None,
    )
    return trigger, trigger_url(trigger, secret)


def trigger_delete(*, trigger_id: Any) -> None:
    """Revoke: its URL is a 404 from now on."""
    try:
        deleted, _ = Trigger.objects.filter(pk=trigger_id).delete()
    except (ValueError, TypeError, DjangoValidationError):
        deleted = 0
    if not deleted:
        raise NotFound(f"No trigger with id '{trigger_id}'.")


def _verified(trigger_id: Any, secret: str) -> Trigger:
    try:
        trigger = Trigger.objects.select_related("ruleset").filter(pk=trigger_id).first()
    except (ValueError, TypeError, DjangoValidationError):
        trigger = None
    digest = trigger.secret_digest if trigger is not None else _NO_DIGEST
    if not hmac.compare_digest(digest, hash_token(secret)) or trigger is None:
        raise NotFound("No such trigger.")
    return trigger


def _within_rate(trigger: Trigger) -> None:
    limit = int(settings.CANARY_TRIGGER_RATE_PER_MINUTE)
    if limit <= 0:
        return
    window = int(time.time() // 60)
    key = f"trigger-rate:{trigger.pk}:{window}"
    cache.add(key, 0, 61)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        return
    if count > limit:
        raise TriggerRateLimited(
            f"This trigger was called more than {limit} times this minute; try again later.",
            retry_after=60 - int(time.time() % 60),
        )


def _reason_of(body: Any, trigger: Trigger) -> str:
    reason = body.get("reason") if isinstance(body, dict) else None
    if isinstance(reason, str) and reason.strip():
        return reason.strip()[: lifecycle.MAX_REASON]
    return trigger.name


def trigger_fire(*, trigger_id: Any, secret: str, body: Any) -> dict[str, Any]:
    """Act on the rule set's running canary; ``acted`` False when there is nothing to do.

    ``body`` is whatever the caller sent, parsed as JSON when it was: Alertmanager's and
    Grafana's webhook bodies are accepted as they are, and a notification that their
    alert resolved acts on nothing.
    """
    trigger = _verified(trigger_id, secret)
    _within_rate(trigger)
    Trigger.objects.filter(pk=trigger.pk).update(last_fired_at=timezone.now())
    if isinstance(body, dict) and body.get("status") == "resolved":
        return {"acted": False, "detail": "The alert resolved; nothing to act on."}
    target = _target(trigger)
    if target is None:
        return {
            "acted": False,
            "detail": f"No canary is running for rule set {trigger.ruleset.name}"
            + (" and no promotion is baking." if trigger.action == TriggerAction.ROLLBACK else "."),
        }
    actor = f"system:trigger:{trigger.name}"
    reason = _reason_of(body, trigger)
    try:
        if trigger.action == TriggerAction.ROLLBACK:
            lifecycle.deployment_rollback(
                deployment_id=target.pk,
                reason=reason,
                actor=actor,
                expected_status=target.status,
            )
        else:
            lifecycle.deployment_pause(
                deployment_id=target.pk,
                actor=actor,
                reason=reason,
                expected_status=DeploymentStatus.CANARY,
            )
    except DomainError as exc:
        return {"acted": False, "detail": exc.detail}
    return {"acted": True, "deployment_id": str(target.pk), "action": trigger.action}


def _target(trigger: Trigger) -> Deployment | None:
    """The rule set's running canary; for a rollback, else its active deployment while its
    promotion still bakes (SPEC 10.4: an alert during the bake undoes the promotion)."""
    canary = Deployment.objects.filter(
        ruleset_id=trigger.ruleset_id, status=DeploymentStatus.CANARY
    ).first()
    if canary is not None or trigger.action != TriggerAction.ROLLBACK:
        return canary
    active = Deployment.objects.filter(
        ruleset_id=trigger.ruleset_id, status=DeploymentStatus.ACTIVE
    ).first()
    if active is None:
        return None
    window = deployment_bake_window(deployment=active)
    if window is None or timezone.now() >= window.ends_at:
        return None
    return active
