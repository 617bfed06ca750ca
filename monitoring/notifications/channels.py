"""The channels a notification goes out on: Slack's incoming webhook and e-mail.

Called by the Celery tasks (``monitoring.tasks``), which own retries and time limits.
"""

from __future__ import annotations

import requests
from django.conf import settings
from django.core.mail import send_mail


def slack_send(text: str) -> None:
    url = settings.SLACK_WEBHOOK_URL
    if not url:
        return
    response = requests.post(url, json={"text": text}, timeout=10)
    response.raise_for_status()


def email_send(subject: str, text: str, recipients: list[str]) -> None:
    send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, recipients)
