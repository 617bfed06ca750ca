"""Gates (SPEC 10.4): an outside system says yes before a canary starts, gains traffic or
is promoted.

The question is an HTTP call (``release_hooks.ask_gate``, filled in by monitoring), so it
is asked before the transition takes its row locks: a slow gate never holds a lock. A
closed gate raises ``GateClosed``, which the API answers with a 409 and the monitor (or a
rollout plan) records once per step and waits on.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError

from canary.errors import GateClosed
from deployments.hooks import release_hooks
from deployments.models import Deployment

CONFIRM_START = "confirm-start"
CONFIRM_TRAFFIC = "confirm-traffic"
CONFIRM_PROMOTION = "confirm-promotion"
GATE_TYPES = (CONFIRM_START, CONFIRM_TRAFFIC, CONFIRM_PROMOTION)


def gates_of(deployment: Deployment, gate_type: str) -> list[dict[str, Any]]:
    gates = (deployment.canary_config or {}).get("gates") or []
    return [gate for gate in gates if gate.get("type") == gate_type]


def gate_check(*, deployment: Deployment, gate_type: str, context: dict[str, Any]) -> None:
    """Ask every gate of ``gate_type`` in turn; the first that is not open raises."""
    for gate in gates_of(deployment, gate_type):
        answer = release_hooks.ask_gate(deployment, gate, context)
        if not answer.open:
            reached = (
                f"answered {answer.status_code}"
                if answer.status_code is not None
                else "could not be reached"
            )
            said = f" ({answer.detail})" if answer.detail else ""
            raise GateClosed(
                f"The {gate_type} gate at {gate['url']} {reached}{said}; nothing was done. "
                "The action goes ahead once the gate answers with a 2xx.",
                gate={"type": gate["type"], "url": gate["url"]},
                status_code=answer.status_code,
            )


def unlocked(deployment_id: Any) -> Deployment | None:
    """The deployment as it is now, without locks, to ask its gates before the transition."""
    try:
        return (
            Deployment.objects.select_related("ruleset", "version").filter(pk=deployment_id).first()
        )
    except (ValueError, TypeError, DjangoValidationError):
        return None  # a malformed id: the locked read reports it
