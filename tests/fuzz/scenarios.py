"""Data for the API fuzz test, built through the services the way the product builds it.

Every deployment lifecycle state gets its own rule set, so acting on one state
never changes another: ``build(state)`` returns the deployment the fuzzer
should aim at, and ``World`` holds one of each for the read-only operations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from assignments import router
from assignments.services import dataplane_execute
from deployments import services
from deployments.models import Deployment, RuleSet
from monitoring.automation.compensation import compensation_replay
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES

ACTOR = "fuzz-seed"
VERSIONS = ("v1.0.0", "v2.0.0", "v3.0.0")
# A canary the fuzzer's executions cannot roll back on their own (the breaker
# path has its own tests): reads must keep finding a running canary.
CANARY_CONFIG = {"auto_rollback": False, "failure_threshold": 10_000, "min_samples": 1}

# The states the fuzzer aims at, each a deployment in a rule set of its own:
# initial      a draft with nothing deployed yet (promote = the first release)
# draft        a draft beside an active v1 (start-canary succeeds)
# canary       v2 in canary over an active v1, with v1 and v2 executions
# baseline     the active v1 that a running canary measures against
# active       v2 promoted (its v1 deprecated): rollback restores v1
# rolled_back  a canary rolled back with manual compensation: pending, replayed
# deprecated   the v1 that a promotion superseded
STATES = ("initial", "draft", "canary", "baseline", "active", "rolled_back", "deprecated")

_names = itertools.count()


def _ruleset(label: str) -> RuleSet:
    ruleset = services.ruleset_create(
        name=f"fuzz-{label}-{next(_names)}", description="seeded for the API fuzz test", actor=ACTOR
    )
    for version, rules in zip(VERSIONS, (V1_RULES, V2_RULES, V2_RULES), strict=True):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor=ACTOR
        )
    return ruleset


def _active_v1(ruleset: RuleSet) -> Deployment:
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor=ACTOR)
    return services.deployment_promote(deployment_id=draft.pk, actor=ACTOR)


def _canary(ruleset: RuleSet, *, strategy: str = "manual") -> Deployment:
    draft = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        changelog="threshold 25 -> 27",
        canary_config=CANARY_CONFIG,
        compensation_strategy=strategy,
        actor=ACTOR,
    )
    return services.deployment_start_canary(
        deployment_id=draft.pk,
        canary_pct=50,
        canary_target_filter={"user_ids": ["u-0", "u-1", "u-2", "u-3"]},
        actor=ACTOR,
    )


def _executions(ruleset: RuleSet) -> None:
    """v1 and v2 traffic, successes and rule errors, on every routing tier."""
    inputs = ({"temperature": 30}, {"temperature": 10}, {"zone": "A"}, {"temperature": 26})
    for n, data in enumerate(inputs * 3):
        context = router.RoutingContext(
            user_id=f"u-{n % 4}",
            session_id=f"s-{n}" if n % 3 == 1 else None,
            workflow_id=f"wf-{n}" if n % 3 == 2 else None,
        )
        dataplane_execute(ruleset_id=ruleset.pk, input=data, context=context)


def build(state: str, *, traffic: bool = False) -> Deployment:
    """A new deployment in ``state``, in a rule set nothing else touches.

    ``traffic`` runs executions through the canary first (metrics, comparison and
    assignments then have data); a rolled-back deployment always has some, so
    that it has flagged executions to replay.
    """
    ruleset = _ruleset(state)
    if state == "initial":
        return services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor=ACTOR)
    v1 = _active_v1(ruleset)
    if state == "draft":
        return services.deployment_create(
            ruleset_id=ruleset.pk, version="v2.0.0", canary_config=CANARY_CONFIG, actor=ACTOR
        )
    canary = _canary(ruleset)
    if traffic or state == "rolled_back":
        _executions(ruleset)
    if state == "canary":
        return canary
    if state == "baseline":
        return v1
    if state == "rolled_back":
        services.deployment_rollback(
            deployment_id=canary.pk, reason="seeded rollback", apply_compensation=True, actor=ACTOR
        )
        compensation_replay(deployment_id=canary.pk)
        return canary
    active = services.deployment_promote(deployment_id=canary.pk, actor=ACTOR)
    if state == "active":
        return active
    if state == "deprecated":
        return v1
    raise ValueError(f"unknown state {state!r}")


class Stock:
    """Deployments for the fuzzer's writes, one per state, each used until it may have changed.

    A write the API refused (any 4xx) changed nothing, so the next write aimed at
    that state gets the same deployment; after anything else (a success, or a
    server error that may have half-happened) the next one gets a new deployment.
    Building one is the slow part of a case, and most writes are refused.
    """

    def __init__(self) -> None:
        self._ready: dict[str, Deployment] = {}

    def take(self, state: str) -> Deployment:
        if state not in self._ready:
            self._ready[state] = build(state)
        return self._ready[state]

    def spoil(self, state: str) -> None:
        self._ready.pop(state, None)


@dataclass
class World:
    """One deployment per state, built once, for operations that only read."""

    deployments: dict[str, Deployment] = field(default_factory=dict)

    @classmethod
    def build(cls) -> World:
        return cls({state: build(state, traffic=True) for state in STATES})

    def deployment_id(self, state: str) -> str:
        return str(self.deployments[state].pk)

    def ruleset_id(self, state: str) -> str:
        return str(self.deployments[state].ruleset_id)

    def describe(self) -> dict[str, Any]:
        return {
            state: {"deployment": str(d.pk), "ruleset": str(d.ruleset_id)}
            for state, d in self.deployments.items()
        }
