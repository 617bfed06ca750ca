"""How the data plane follows the lifecycle (connected in ``AssignmentsConfig.ready``)."""

from __future__ import annotations

from typing import Any

from assignments import services
from assignments.selectors import routing_state_forget, routing_state_refresh
from deployments import transitions
from deployments.models import Deployment


def follow_transition(
    sender: Any, deployment: Deployment, action: str, from_status: str, **kwargs: Any
) -> None:
    # Inside the transition's transaction. Dropping the cached routing state here
    # (and rewriting it after commit) means no reader keeps serving the old state
    # even if the after-commit refresh never runs.
    routing_state_forget(ruleset_id=deployment.ruleset_id)
    # The canary ends and its decisions go with it.
    if action == transitions.ROLLBACK and from_status == transitions.CANARY:
        services.assignments_clear(deployment_id=deployment.pk)


def refresh_routing_state(sender: Any, deployment: Deployment, **kwargs: Any) -> None:
    # After commit: the next request anywhere routes by the new state.
    routing_state_refresh(ruleset_id=deployment.ruleset_id)
