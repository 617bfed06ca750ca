"""Every write to rule sets and deployments goes through this package.

Lifecycle changes share one path, ``_transition``: lock the rule set, then the
deployment; check the transition table; stamp timestamps; save with
``update_fields``; write the event; send the in-transaction hook; queue
after-commit work. Locking the rule set first serialises every lifecycle change
of one rule set, so concurrent promote/rollback/start-canary calls see each
other's results and never leave two canaries or two active deployments.

Modules, each importing only those before it: ``actors``, ``testcases``, ``rulesets``,
``transition``, ``drafts``, ``gates``, ``approvals``, ``plans``, ``lifecycle``. Callers
import from the package, which re-exports the public names.
"""

from deployments.services.actors import (
    MAX_CHANGELOG,
    MAX_IDENTIFIER,
    MAX_REASON,
    MAX_TARGET_IDS,
    SYSTEM_BREAKER,
    SYSTEM_MONITOR,
    Actor,
    actor_label,
)
from deployments.services.approvals import PromoteOutcome, deployment_promote_or_approve
from deployments.services.drafts import deployment_create, deployment_update
from deployments.services.lifecycle import (
    deployment_bake_complete,
    deployment_breaker_opened,
    deployment_canary_event,
    deployment_compensation_complete,
    deployment_delete,
    deployment_deprecate,
    deployment_gate_closed,
    deployment_promote,
    deployment_rollback,
    deployment_set_traffic,
    deployment_start_canary,
    deployment_version_event,
)
from deployments.services.plans import (
    PlanConflict,
    deployment_pause,
    deployment_resume,
    plan_finish,
    plan_note_waiting,
    plan_step_complete,
    plan_step_refused,
    plan_wait_for_approval,
)
from deployments.services.rulesets import (
    ruleset_create,
    ruleset_test,
    ruleset_update,
    ruleset_version_create,
)
from deployments.services.testcases import (
    ruleset_case_create,
    ruleset_case_delete,
    ruleset_cases_run,
)

__all__ = [
    "MAX_CHANGELOG",
    "MAX_IDENTIFIER",
    "MAX_REASON",
    "MAX_TARGET_IDS",
    "SYSTEM_BREAKER",
    "SYSTEM_MONITOR",
    "Actor",
    "PlanConflict",
    "PromoteOutcome",
    "actor_label",
    "deployment_bake_complete",
    "deployment_breaker_opened",
    "deployment_canary_event",
    "deployment_compensation_complete",
    "deployment_create",
    "deployment_delete",
    "deployment_deprecate",
    "deployment_gate_closed",
    "deployment_pause",
    "deployment_promote",
    "deployment_promote_or_approve",
    "deployment_resume",
    "deployment_rollback",
    "deployment_set_traffic",
    "deployment_start_canary",
    "deployment_update",
    "deployment_version_event",
    "plan_finish",
    "plan_note_waiting",
    "plan_step_complete",
    "plan_step_refused",
    "plan_wait_for_approval",
    "ruleset_case_create",
    "ruleset_case_delete",
    "ruleset_cases_run",
    "ruleset_create",
    "ruleset_test",
    "ruleset_update",
    "ruleset_version_create",
]
