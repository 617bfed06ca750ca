"""How measurement follows the lifecycle (connected in ``MonitoringConfig.ready``)."""

from __future__ import annotations

from typing import Any

from deployments import transitions
from deployments.models import Deployment
from monitoring import services


def open_breaker_on_rollback(
    sender: Any, deployment: Deployment, action: str, from_status: str, **kwargs: Any
) -> None:
    # After commit: a rolled-back canary keeps v2 out for one cooldown.
    if action == transitions.ROLLBACK and from_status == transitions.CANARY:
        services.breaker_force_open(deployment_id=deployment.pk)
