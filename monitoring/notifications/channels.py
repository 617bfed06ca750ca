"""The channels a notification goes out on: Slack's incoming webhook and e-mail.

Called by the Celery tasks (``monitoring.tasks``), which own retries and time limits.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.mail import send_mail

from monitoring.notifications.sender import post_or_raise


def slack_send(text: str) -> None:
    url = settings.SLACK_WEBHOOK_URL
    if not url:
        return
    # The same SSRF-safe sender as webhooks; a non-2xx raises SendFailed (retried).
    body = json.dumps({"text": text}).encode()
    post_or_raise(url, body, {"Content-Type": "application/json"})


def email_send(subject: str, text: str, recipients: list[str]) -> None:
    send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, recipients)
