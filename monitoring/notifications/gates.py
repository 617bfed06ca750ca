"""Asking a gate (SPEC 10.4): a signed CloudEvent ``io.canary.gate.<type>``; open on a 2xx.

Filled into ``deployments.hooks.release_hooks.ask_gate`` by ``MonitoringConfig.ready``;
the lifecycle services call it before they take their row locks. Anything but a 2xx
(an error answer, a timeout, a refused address) keeps the gate closed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from deployments.hooks import GateAnswer
from deployments.models import Deployment
from monitoring.notifications import sender
from monitoring.notifications.webhooks import (
    deployment_data,
    event_source,
    json_safe,
    signed_message,
)

MAX_DETAIL = 300


def gate_secret() -> str:
    """The key gate requests are signed with: ``CANARY_GATE_SECRET``, else one derived
    from ``SECRET_KEY`` (stable across restarts and processes)."""
    if settings.CANARY_GATE_SECRET:
        return str(settings.CANARY_GATE_SECRET)
    key = hmac.new(settings.SECRET_KEY.encode(), b"canary-gates", hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(key).decode()


def gate_ask(
    deployment: Deployment,
    gate: dict[str, Any],
    context: dict[str, Any],
    *,
    resolve: sender.Resolver | None = None,
) -> GateAnswer:
    now = timezone.now()
    event = {
        "attributes": {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": event_source(f"deployments/{deployment.pk}"),
            "type": f"io.canary.gate.{gate['type']}",
            "time": now.isoformat().replace("+00:00", "Z"),
            "subject": str(deployment.pk),
            "datacontenttype": "application/json",
        },
        "data": json_safe(
            {"deployment": deployment_data(deployment), "gate": gate, "request": context}
        ),
    }
    headers, body = signed_message(gate_secret(), event, now)
    answer = sender.post(gate["url"], body, headers, resolve=resolve)
    if answer.ok:
        return GateAnswer(open=True, status_code=answer.status_code)
    detail = answer.error or answer.body.strip()
    return GateAnswer(open=False, status_code=answer.status_code, detail=detail[:MAX_DETAIL])
