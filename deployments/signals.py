"""Hooks that let higher apps react to lifecycle changes without deployments importing them.

``deployment_transitioning`` is sent *inside* the transition's transaction, after
the new status is saved: a receiver's writes (clearing a canary's assignments on
rollback) commit or roll back together with the transition, and a receiver that
raises aborts it. ``deployment_transitioned`` is sent after commit, for work that
must see the committed state (cache invalidation, notifications, metrics).

Both send ``deployment``, ``action``, ``from_status``, ``to_status`` and ``actor``.

``ruleset_routing_changed`` is sent after commit when a rule set's own routing
state changed (its redacted input paths), with ``ruleset_id``.
"""

from django.dispatch import Signal

deployment_transitioning = Signal()
deployment_transitioned = Signal()

# Sent after commit when an approver's promote recorded an approval but more are
# required (SPEC 9.3): ``deployment``, ``approver``, ``approved_by`` (usernames so
# far) and ``required_approvals``. Monitoring notifies the other approvers.
promotion_approval_recorded = Signal()

ruleset_routing_changed = Signal()
