"""The routing state of each rule set, held in process memory and never stale.

Every data-plane request needs the same few facts about its rule set: which
deployment is active, which is in canary, its traffic, filter and config, and
the compiled rules of both versions. They change only at a lifecycle change, so
each process keeps them in memory, stamped with the rule set's
``routing_generation``, which every lifecycle change bumps in its own
transaction (``deployments.services._transition``). An entry is trusted:

- for at most ``CANARY_ROUTING_RECHECK_SECONDS`` (default 0.5 s; 0 without
  Redis), after which one indexed query compares its generation with
  PostgreSQL's: the database is the authority, so no cache outage can
  resurrect a rolled-back canary;
- until a newer generation is seen in Redis (``canary:gen:<rule set>``, written
  after commit and read by the data plane's script on every request), which
  makes a change visible at once where Redis is up.

So a lifecycle change reaches every process within that recheck period
even when Redis was unreachable at the time, and at the next request otherwise.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from assignments import router
from canary.redis import redis_enabled
from deployments.choices import DeploymentStatus, EventAction
from deployments.models import Deployment, RuleSet
from deployments.rules import CompiledRuleSet
from deployments.selectors import compiled_rules_for, deployment_bake_window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingVersion:
    deployment_id: str
    version_id: str
    version: str
    rules: CompiledRuleSet = field(compare=False, repr=False)


@dataclass(frozen=True)
class RoutingState:
    ruleset_id: str
    generation: int
    active: ServingVersion | None
    canary: ServingVersion | None
    traffic_percentage: int = 0
    target_user_ids: frozenset[str] | None = None
    target_workflow_ids: frozenset[str] | None = None
    canary_config: dict[str, Any] | None = None
    policy: router.CanaryPolicy | None = None
    # Input paths never stored; part of the state, so a change bumps the generation.
    redacted_paths: tuple[str, ...] = ()
    # The bake after a promotion (SPEC 10.3): the previous version, evaluated in shadow
    # beside the active one until ``bake_ends_at`` (epoch seconds), sampled by the
    # promoted deployment's ``shadow_percentage``. The end is a time, not a lifecycle
    # change, so each request compares it with its own clock.
    bake: ServingVersion | None = None
    bake_ends_at: float = 0.0
    bake_shadow_percentage: int = 0

    def baking(self, now: float) -> bool:
        """The bake runs and no canary does (a canary's own pairs take precedence)."""
        return self.bake is not None and self.canary is None and now < self.bake_ends_at

    # The share of executes whose input is captured while no canary runs (SPEC 10.2).
    capture_percentage: int = 0


@dataclass
class _Entry:
    state: RoutingState
    checked_at: float


_entries: dict[str, _Entry] = {}
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_lock = threading.Lock()


def canonical_ruleset_id(value: Any) -> str | None:
    """The id if it is spelled canonically (lower-case, hyphenated UUID), else None.

    Only one spelling is accepted, so every cache is keyed by exactly one string
    per rule set (SPEC §9.4).
    """
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    return None


def _recheck_seconds() -> float:
    # Without Redis nothing announces a change: check the generation every time
    # (one indexed query), which is what a development setup can afford.
    if not redis_enabled():
        return 0.0
    return float(settings.CANARY_ROUTING_RECHECK_SECONDS)


def _ruleset_row(ruleset_id: str) -> tuple[int, list[str], int] | None:
    row = RuleSet.objects.filter(pk=ruleset_id).values_list(
        "routing_generation", "redacted_input_paths", "capture_percentage"
    )
    return next(iter(row), None)


def _generation_in_db(ruleset_id: str) -> int | None:
    row = RuleSet.objects.filter(pk=ruleset_id).values_list("routing_generation", flat=True)
    return next(iter(row), None)


def _serving(deployment: Deployment) -> ServingVersion:
    return ServingVersion(
        str(deployment.pk),
        str(deployment.version.pk),
        deployment.version.version,
        compiled_rules_for(deployment.version),
    )


def _load(ruleset_id: str) -> RoutingState | None:
    row = _ruleset_row(ruleset_id)
    if row is None:
        return None
    generation, redacted, capture = row
    serving = (
        Deployment.objects.filter(
            ruleset_id=ruleset_id,
            status__in=[DeploymentStatus.ACTIVE, DeploymentStatus.CANARY],
        )
        .select_related("version")
        .only(
            "id",
            "status",
            "traffic_percentage",
            "canary_target_filter",
            "canary_config",
            "promoted_at",
            "baseline",
            "version__id",
            "version__version",
            "version__rules",
            "version__default",
        )
    )
    active = canary = bake = None
    traffic, users, workflows, config = 0, None, None, None
    bake_ends_at, bake_shadow = 0.0, 0
    for deployment in serving:
        if deployment.status == DeploymentStatus.ACTIVE:
            active = _serving(deployment)
            bake, bake_ends_at, bake_shadow = _bake(deployment)
        else:
            canary = _serving(deployment)
            traffic = deployment.traffic_percentage
            config = deployment.canary_config or {}
            target = deployment.canary_target_filter or {}
            if target.get("user_ids") is not None:
                users = frozenset(target["user_ids"])
            if target.get("workflow_ids") is not None:
                workflows = frozenset(target["workflow_ids"])
    policy = None
    if canary is not None:
        policy = router.CanaryPolicy(
            deployment_id=canary.deployment_id,
            traffic_percentage=traffic,
            target_user_ids=users,
            target_workflow_ids=workflows,
        )
    return RoutingState(
        ruleset_id,
        generation,
        active,
        canary,
        traffic,
        users,
        workflows,
        config,
        policy,
        redacted_paths=tuple(redacted or ()),
        bake=bake,
        bake_ends_at=bake_ends_at,
        bake_shadow_percentage=bake_shadow,
        capture_percentage=int(capture or 0),
    )


def _bake(active: Deployment) -> tuple[ServingVersion | None, float, int]:
    """The previous version while the active deployment's bake runs (one query then)."""
    window = deployment_bake_window(deployment=active)
    if window is None or window.ends_at <= timezone.now():
        return None, 0.0, 0
    # Its end recorded (``bake_complete``, which bumps the generation): over, whatever the
    # clock of this process says.
    if active.events.filter(action=EventAction.BAKE_COMPLETE).exists():
        return None, 0.0, 0
    previous = (
        Deployment.objects.filter(pk=window.previous_id, status=DeploymentStatus.DEPRECATED)
        .select_related("version")
        .only("id", "version__id", "version__version", "version__rules", "version__default")
        .first()
    )
    if previous is None:
        return None, 0.0, 0
    share = int((active.canary_config or {}).get("shadow_percentage", 100))
    return _serving(previous), window.ends_at.timestamp(), share


def routing_state_for(*, ruleset_id: str, at_least: int | None = None) -> RoutingState | None:
    """The rule set's routing state, or None when it does not exist.

    ``at_least``: a generation known to be committed (seen in Redis); an entry
    older than it is reloaded at once.
    """
    entry = _entries.get(ruleset_id)
    now = time.monotonic()
    if entry is not None and (at_least is None or entry.state.generation >= at_least):
        if now - entry.checked_at < _recheck_seconds():
            return entry.state
        try:
            generation = _generation_in_db(ruleset_id)
        except DatabaseError:
            # Nothing can change while the database is down: keep serving.
            close_old_connections()
            logger.warning("routing generation of %s unreadable; serving as known", ruleset_id)
            entry.checked_at = now
            return entry.state
        if generation == entry.state.generation:
            entry.checked_at = now
            return entry.state
    state = _load(ruleset_id)
    with _lock:
        if state is None:
            _entries.pop(ruleset_id, None)
        else:
            _entries[ruleset_id] = _Entry(state, now)
    return state


def routing_state_forget(*, ruleset_id: Any) -> None:
    """Drop this process's entry (a lifecycle change of the rule set is under way)."""
    with _lock:
        _entries.pop(str(ruleset_id), None)


def routing_state_forget_all() -> None:
    with _lock:
        _entries.clear()
