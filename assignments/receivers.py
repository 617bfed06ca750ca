"""How the data plane follows the lifecycle (connected in ``AssignmentsConfig.ready``)."""

from __future__ import annotations

import logging
from typing import Any

from assignments import buffer, services, sticky
from assignments.routing import routing_state_forget
from canary.redis import redis_available, redis_client
from deployments import transitions
from deployments.models import Deployment, RuleSet

logger = logging.getLogger(__name__)

# Raise the rule set's generation in Redis, never lower it (commits may announce
# out of order).
_RAISE_GENERATION = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def follow_transition(
    sender: Any, deployment: Deployment, action: str, from_status: str, **kwargs: Any
) -> None:
    # Inside the transition's transaction: this process forgets the old state now.
    routing_state_forget(ruleset_id=deployment.ruleset_id)
    # The canary ends and its decisions go with it.
    if action == transitions.ROLLBACK and from_status == transitions.CANARY:
        services.assignments_clear(deployment_id=deployment.pk)


def announce_generation(sender: Any, deployment: Deployment, **kwargs: Any) -> None:
    """After commit: every process's next request sees the change (one Redis read).

    If Redis is unreachable now, processes still see it within
    ``CANARY_ROUTING_RECHECK_SECONDS`` from PostgreSQL.
    """
    announce_ruleset_generation(sender, ruleset_id=deployment.ruleset_id)
    if kwargs.get("action") == transitions.TRAFFIC:
        # Redis now refuses decisions at the old share (the routing script sees the new
        # generation); what it took before is written to PostgreSQL before the change
        # returns, so a Redis that restarts empty later cannot lose a decision that the
        # new share would decide otherwise (docs/durability.md).
        buffer.drain_now()


def announce_ruleset_generation(sender: Any, ruleset_id: Any, **kwargs: Any) -> None:
    """The same for a change of the rule set itself (its redacted input paths)."""
    routing_state_forget(ruleset_id=ruleset_id)
    if not redis_available():
        return
    generation = (
        RuleSet.objects.filter(pk=ruleset_id).values_list("routing_generation", flat=True).first()
    )
    if generation is None:
        return
    try:
        redis_client().eval(
            _RAISE_GENERATION, 1, sticky.generation_key(str(ruleset_id)), generation
        )
    except Exception as exc:
        logger.warning("routing generation not announced in Redis (%s); PostgreSQL will", exc)
