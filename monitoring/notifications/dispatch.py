"""Slack and e-mail notifications, sent by Celery tasks after the change commits.

A channel with no configuration (no ``SLACK_WEBHOOK_URL``; e-mail disabled or no
recipients) is skipped silently: nothing is queued and nothing fails.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse

from canary.dispatch import enqueue
from deployments.models import Deployment

logger = logging.getLogger(__name__)

SLACK_TASK = "monitoring.tasks.send_slack_notification"
EMAIL_TASK = "monitoring.tasks.send_email_notification"


def admin_link(deployment: Deployment) -> str:
    path = reverse("admin:deployments_deployment_change", args=[deployment.pk])
    return f"{settings.CANARY_BASE_URL.rstrip('/')}{path}"


def compose(*, deployment: Deployment, headline: str, reason: str) -> tuple[str, str]:
    """Subject and text: what happened, to which rule set and version, why, and where to look."""
    deployment = Deployment.objects.select_related("ruleset", "version", "baseline__version").get(
        pk=deployment.pk
    )
    v1 = deployment.baseline.version.version if deployment.baseline_id else "none"
    subject = f"[Canary] {deployment.ruleset.name} {deployment.version.version}: {headline}"
    text = (
        f"{headline}\n"
        f"Rule set: {deployment.ruleset.name}\n"
        f"Version: {deployment.version.version} (v1: {v1}), status {deployment.status}\n"
        f"Why: {reason}\n"
        f"Deployment: {admin_link(deployment)}"
    )
    return subject, text


def _email_recipients() -> list[str]:
    if settings.CANARY_NOTIFY_EMAILS:
        return list(settings.CANARY_NOTIFY_EMAILS)
    users = (
        get_user_model().objects.filter(groups__name="Approver", is_active=True).exclude(email="")
    )
    return sorted(set(users.values_list("email", flat=True)))


def notify(*, deployment: Deployment, headline: str, reason: str) -> dict[str, Any]:
    """Queue the notification on every configured channel once the transaction commits.

    ``robust``: a broker that is down is logged, never turned into a failed request.
    """
    subject, text = compose(deployment=deployment, headline=headline, reason=reason)
    queued: dict[str, Any] = {"slack": False, "email": []}
    if settings.SLACK_WEBHOOK_URL:
        transaction.on_commit(lambda: enqueue(SLACK_TASK, text), robust=True)
        queued["slack"] = True
    if settings.CANARY_NOTIFY_EMAIL:
        recipients = _email_recipients()
        if recipients:
            transaction.on_commit(
                lambda: enqueue(EMAIL_TASK, subject, text, recipients),
                robust=True,
            )
            queued["email"] = recipients
    logger.info("notification %r queued: %s", subject, queued)
    return queued
