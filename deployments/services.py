"""Every write to rule sets and deployments goes through this module.

Lifecycle changes share one path, ``_transition``: lock the rule set, then the
deployment; check the transition table; stamp timestamps; save with
``update_fields``; write the event; send the in-transaction hook; queue
after-commit work. Locking the rule set first serialises every lifecycle change
of one rule set, so concurrent promote/rollback/start-canary calls see each
other's results and never leave two canaries or two active deployments.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from canary.errors import (
    AlreadyApproved,
    Conflict,
    InvalidTransition,
    NotFound,
    NotReady,
    ValidationFailed,
)
from deployments import transitions
from deployments.canary_config import CanaryConfigError, normalize_canary_config
from deployments.choices import (
    CompensationStatus,
    CompensationStrategy,
    DeploymentStatus,
    EventAction,
)
from deployments.hooks import hooks as promotion_hooks
from deployments.models import (
    SEMVER_PATTERN,
    Deployment,
    DeploymentEvent,
    PromotionApproval,
    RuleSet,
    RuleSetVersion,
)
from deployments.rules import (
    InputBoundsError,
    RuleCompileError,
    check_input_bounds,
    compile_rules,
)
from deployments.rules.redaction import redaction_paths_errors
from deployments.selectors import compiled_rules_for, ruleset_version_latest
from deployments.signals import (
    deployment_transitioned,
    deployment_transitioning,
    promotion_approval_recorded,
    ruleset_routing_changed,
)

SYSTEM_MONITOR = "system:monitor"
SYSTEM_BREAKER = "system:breaker"

Actor = AbstractBaseUser | str | None

MAX_CHANGELOG = 10_000
MAX_REASON = 2_000
MAX_TARGET_IDS = 10_000
MAX_IDENTIFIER = 200


def actor_label(actor: Actor) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def _actor_user(actor: Actor) -> AbstractBaseUser | None:
    return None if actor is None or isinstance(actor, str) else actor


# --- rule sets ---------------------------------------------------------------


def _check_redaction(paths: Any) -> list[str]:
    errors = redaction_paths_errors(paths)
    if errors:
        raise ValidationFailed({"redacted_input_paths": errors})
    return list(paths)


def ruleset_create(
    *,
    name: str,
    description: str = "",
    redacted_input_paths: list[str] | None = None,
    actor: Actor,
) -> RuleSet:
    name = (name or "").strip()
    if not name:
        raise ValidationFailed({"name": ["This field may not be blank."]})
    paths = _check_redaction(redacted_input_paths or [])
    if RuleSet.objects.filter(name=name).exists():
        raise ValidationFailed({"name": [f"A rule set named '{name}' already exists."]})
    try:
        with transaction.atomic():
            return RuleSet.objects.create(
                name=name, description=description or "", redacted_input_paths=paths
            )
    except IntegrityError as exc:
        raise ValidationFailed({"name": [f"A rule set named '{name}' already exists."]}) from exc


def ruleset_update(
    *,
    ruleset_id: Any,
    description: str | None = None,
    redacted_input_paths: list[str] | None = None,
    actor: Actor,
) -> RuleSet:
    """Change a rule set's description or redacted input paths.

    A change of paths bumps the routing generation in the same transaction, so
    every process's routing state (which carries the paths) reloads within
    ``CANARY_ROUTING_RECHECK_SECONDS``; executions recorded after that store
    the new redaction.
    """
    with transaction.atomic(durable=True):
        ruleset = RuleSet.objects.select_for_update().get(pk=ruleset_id)
        fields = []
        if description is not None:
            ruleset.description = description
            fields.append("description")
        if redacted_input_paths is not None:
            ruleset.redacted_input_paths = _check_redaction(redacted_input_paths)
            ruleset.routing_generation = F("routing_generation") + 1
            fields += ["redacted_input_paths", "routing_generation"]
        if fields:
            ruleset.save(update_fields=fields)
            ruleset.refresh_from_db()
        if redacted_input_paths is not None:
            transaction.on_commit(
                lambda: ruleset_routing_changed.send(sender=RuleSet, ruleset_id=ruleset.pk)
            )
    return ruleset


def ruleset_version_create(
    *,
    ruleset: RuleSet,
    version: str,
    rules: Any,
    default: Any = None,
    changelog: str = "",
    actor: Actor,
) -> RuleSetVersion:
    """Compile the rules before storing them, so a stored version always runs."""
    if not isinstance(version, str) or not re.match(SEMVER_PATTERN, version):
        raise ValidationFailed(
            {"version": ['Must be a semantic version such as "v2.1.0" or "2.1.0".']}
        )
    try:
        compile_rules(rules, default)
    except RuleCompileError as exc:
        raise ValidationFailed(exc.as_field_errors(), detail=f"Invalid rules: {exc}") from exc
    duplicate = {"version": [f"Rule set '{ruleset.name}' already has version '{version}'."]}
    if RuleSetVersion.objects.filter(ruleset=ruleset, version=version).exists():
        raise ValidationFailed(duplicate)
    try:
        with transaction.atomic():
            return RuleSetVersion.objects.create(
                ruleset=ruleset,
                version=version,
                rules=rules,
                default=default,
                changelog=changelog or "",
                created_by=_actor_user(actor),
            )
    except IntegrityError as exc:
        raise ValidationFailed(duplicate) from exc


_MISSING = object()


def ruleset_test(
    *,
    ruleset: RuleSet,
    input: Mapping[str, Any],
    expected_output: Any = _MISSING,
    version: str | None = None,
) -> dict[str, Any]:
    """Run one input through a version without routing or logging: a dry run for authors.

    The input has execute's limits (``check_input_bounds``): over them is a 400 on ``input``.
    """
    try:
        check_input_bounds(input)
    except InputBoundsError as exc:
        raise ValidationFailed({"input": [str(exc)]}) from exc
    if version is None:
        target = ruleset_version_latest(ruleset=ruleset)
        if target is None:
            raise ValidationFailed({"version": [f"Rule set '{ruleset.name}' has no versions."]})
    else:
        target = RuleSetVersion.objects.filter(ruleset=ruleset, version=version).first()
        if target is None:
            raise ValidationFailed(
                {"version": [f"Rule set '{ruleset.name}' has no version '{version}'."]}
            )
    compiled = compiled_rules_for(target)
    started = time.perf_counter()
    evaluation = compiled.evaluate(input)
    latency_ms = (time.perf_counter() - started) * 1000
    has_expectation = expected_output is not _MISSING
    passed = evaluation.success and (not has_expectation or evaluation.output == expected_output)
    return {
        "passed": passed,
        "output": evaluation.output,
        "expected_output": expected_output if has_expectation else None,
        "matched_rule": evaluation.matched_rule,
        "error": (
            {"rule": evaluation.error.rule, "message": evaluation.error.message}
            if evaluation.error
            else None
        ),
        "version": target.version,
        "latency_ms": round(latency_ms, 3),
    }


# --- deployments: creation and draft edits -----------------------------------


def _canary_config_or_400(raw: Any, *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    try:
        return normalize_canary_config(raw, base=base)
    except CanaryConfigError as exc:
        raise ValidationFailed({"canary_config": exc.errors}) from exc


def _compensation_or_400(value: Any) -> str:
    if value not in CompensationStrategy.values:
        choices = ", ".join(CompensationStrategy.values)
        raise ValidationFailed({"compensation_strategy": [f"Must be one of: {choices}."]})
    return value


def _text_or_400(field: str, value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed({field: ["Must be a string."]})
    if len(value) > limit:
        raise ValidationFailed({field: [f"Must be at most {limit} characters."]})
    return value


def _version_or_400(ruleset: RuleSet, version: Any) -> RuleSetVersion:
    target = RuleSetVersion.objects.filter(ruleset=ruleset, version=version).first()
    if target is None:
        raise ValidationFailed(
            {
                "version": [
                    f"Rule set '{ruleset.name}' has no version '{version}'; "
                    "create it with POST /api/v1/rulesets/{id}/versions first."
                ]
            }
        )
    return target


def deployment_create(
    *,
    ruleset_id: Any,
    version: str,
    changelog: str = "",
    canary_config: Mapping[str, Any] | None = None,
    compensation_strategy: str = CompensationStrategy.ROLLBACK_ONLY,
    actor: Actor,
) -> Deployment:
    ruleset = RuleSet.objects.filter(pk=ruleset_id).first()
    if ruleset is None:
        raise ValidationFailed({"ruleset_id": [f"No rule set with id '{ruleset_id}'."]})
    target = _version_or_400(ruleset, version)
    config = _canary_config_or_400(canary_config)
    strategy = _compensation_or_400(compensation_strategy)
    changelog = _text_or_400("changelog", changelog, MAX_CHANGELOG)
    with transaction.atomic(durable=True):
        deployment = Deployment.objects.create(
            ruleset=ruleset,
            version=target,
            changelog=changelog,
            canary_config=config,
            compensation_strategy=strategy,
            created_by=_actor_user(actor),
        )
        _record_event(
            deployment,
            action=EventAction.CREATE,
            actor=actor,
            from_status="",
            to_status=DeploymentStatus.DRAFT,
            payload={"version": target.version},
        )
    return deployment


_UPDATABLE = ("version", "changelog", "canary_config", "compensation_strategy")


def deployment_update(
    *, deployment_id: Any, actor: Actor, expected_status: str | None = None, **changes: Any
) -> Deployment:
    """Edit a draft. ``canary_config`` is merged over the current config."""
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise ValidationFailed({name: ["This field cannot be changed."] for name in unknown})

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        fields: set[str] = set()
        if "version" in changes:
            deployment.version = _version_or_400(deployment.ruleset, changes["version"])
            fields.add("version")
        if "changelog" in changes:
            deployment.changelog = _text_or_400("changelog", changes["changelog"], MAX_CHANGELOG)
            fields.add("changelog")
        if "canary_config" in changes:
            deployment.canary_config = _canary_config_or_400(
                changes["canary_config"], base=deployment.canary_config
            )
            fields.add("canary_config")
        if "compensation_strategy" in changes:
            deployment.compensation_strategy = _compensation_or_400(
                changes["compensation_strategy"]
            )
            fields.add("compensation_strategy")
        payload["changed"] = sorted(fields)
        return fields

    return _transition(
        deployment_id=deployment_id,
        action=transitions.UPDATE,
        event=EventAction.UPDATE,
        actor=actor,
        before=apply,
        expected_status=expected_status,
    )


# --- deployments: lifecycle ---------------------------------------------------


def _percentage_or_400(field: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100:
        raise ValidationFailed({field: [f"Must be an integer from {low} to 100."]})
    return value


def _target_filter_or_400(value: Any) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationFailed({"canary_target_filter": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, list[str]] = {}
    for key, ids in value.items():
        if key not in ("user_ids", "workflow_ids"):
            errors[str(key)] = ["Unknown field. Known fields: user_ids, workflow_ids."]
            continue
        if ids is None:
            continue
        if (
            not isinstance(ids, list)
            or len(ids) > MAX_TARGET_IDS
            or not all(isinstance(i, str) and 0 < len(i) <= MAX_IDENTIFIER for i in ids)
        ):
            errors[key] = [
                f"Must be a list of at most {MAX_TARGET_IDS} non-empty strings "
                f"of at most {MAX_IDENTIFIER} characters."
            ]
            continue
        cleaned[key] = list(dict.fromkeys(ids))
    if errors:
        raise ValidationFailed({"canary_target_filter": errors})
    return cleaned or None


def deployment_start_canary(
    *,
    deployment_id: Any,
    actor: Actor,
    canary_pct: int | None = None,
    canary_target_filter: Mapping[str, Any] | None = None,
    expected_status: str | None = None,
) -> Deployment:
    target_filter = _target_filter_or_400(canary_target_filter)

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        pct = canary_pct
        if pct is None:
            pct = deployment.canary_config.get("initial_traffic_percentage", 10)
        pct = _percentage_or_400("canary_pct", pct, low=0)
        siblings = Deployment.objects.filter(ruleset_id=deployment.ruleset_id).exclude(
            pk=deployment.pk
        )
        running = siblings.filter(status=DeploymentStatus.CANARY).select_related("version").first()
        if running is not None:
            raise Conflict(
                f"Deployment {running.pk} (version {running.version.version}) is already "
                "in canary for this rule set; promote or roll it back first.",
                canary_deployment_id=str(running.pk),
            )
        active = siblings.filter(status=DeploymentStatus.ACTIVE).select_related("version").first()
        if active is None:
            raise Conflict(
                "This rule set has no active deployment to serve as v1. The first release "
                f"of a rule set is promoted directly: POST /api/v1/deployments/{deployment.pk}"
                "/promote."
            )
        if active.version_id == deployment.version_id:
            raise Conflict(
                f"Version {active.version.version} is already active (deployment {active.pk})."
            )
        deployment.baseline = active
        deployment.traffic_percentage = pct
        deployment.canary_target_filter = target_filter
        deployment.started_at = now
        payload.update(
            traffic_percentage=pct,
            canary_target_filter=target_filter,
            baseline_id=str(active.pk),
            baseline_version=active.version.version,
        )
        return {"baseline", "traffic_percentage", "canary_target_filter", "started_at"}

    return _transition(
        deployment_id=deployment_id,
        action=transitions.START_CANARY,
        event=EventAction.START_CANARY,
        actor=actor,
        before=apply,
        expected_status=expected_status,
    )


def deployment_set_traffic(
    *,
    deployment_id: Any,
    traffic_percentage: int,
    actor: Actor,
    reason: str = "",
    expected_status: str | None = None,
    expected_traffic_percentage: int | None = None,
    now: datetime | None = None,
) -> Deployment:
    """Change the share of *new* contexts sent to v2; existing assignments keep their version.

    ``expected_traffic_percentage`` is the traffic the caller saw: checked under the
    lock, it makes a double submit or a stale page change nothing.
    """
    pct = _percentage_or_400("traffic_percentage", traffic_percentage, low=0)

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        seen = expected_traffic_percentage
        if seen is not None and deployment.traffic_percentage != seen:
            raise Conflict(
                f"Traffic changed from {seen}% to {deployment.traffic_percentage}% while this "
                "request was in flight; nothing was done. Review it and try again.",
                traffic_percentage=deployment.traffic_percentage,
            )
        payload.update(from_traffic=deployment.traffic_percentage, to_traffic=pct)
        if reason:
            payload["reason"] = reason
        _clear_approvals(deployment, payload)
        deployment.traffic_percentage = pct
        return {"traffic_percentage"}

    return _transition(
        deployment_id=deployment_id,
        action=transitions.TRAFFIC,
        event=EventAction.SET_TRAFFIC,
        actor=actor,
        before=apply,
        expected_status=expected_status,
        now=now,
    )


@dataclass(frozen=True)
class PromoteOutcome:
    """What one promote request did: promoted, or recorded one approval of several."""

    deployment: Deployment
    promoted: bool
    approved_by: tuple[str, ...] = ()
    required_approvals: int = 1

    @property
    def approvals(self) -> int:
        return len(self.approved_by)


def deployment_promote(
    *,
    deployment_id: Any,
    actor: Actor,
    expected_status: str | None = None,
    override_reason: str | None = None,
    now: datetime | None = None,
) -> Deployment:
    """Canary → active (its baseline deprecated), or a draft's initial release.

    Subject to the governance gates of ``deployment_promote_or_approve``; the
    deployment comes back still ``canary`` when this call only recorded an approval.
    """
    return deployment_promote_or_approve(
        deployment_id=deployment_id,
        actor=actor,
        expected_status=expected_status,
        override_reason=override_reason,
        now=now,
    ).deployment


def deployment_promote_or_approve(
    *,
    deployment_id: Any,
    actor: Actor,
    expected_status: str | None = None,
    override_reason: str | None = None,
    now: datetime | None = None,
) -> PromoteOutcome:
    """Promote, behind the release-governance gates of SPEC 9.3 (a canary only).

    - ``enforce_readiness``: an unready canary is refused (``NotReady``, 409 with
      the checks) unless ``override_reason`` is given; the promote event then
      carries the reason and the failed checks.
    - ``required_approvals`` > 1: each approver's call records one approval (an
      ``approve`` event) until the last one promotes; the same approver twice is
      ``AlreadyApproved``. Everything happens under the rule set's row lock, so
      two approvers pressing at once give exactly one promote.
    """
    override = _text_or_400("override_reason", override_reason, MAX_REASON).strip()
    if override_reason is not None and not override:
        raise ValidationFailed({"override_reason": ["May not be blank when given."]})
    _settle_if_readiness_enforced(deployment_id)
    pending: list[PromoteOutcome] = []

    def gate(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> bool:
        if deployment.status != DeploymentStatus.CANARY:
            return True
        _check_readiness(deployment, now, override, payload)
        if override:  # an acknowledged promote against the evidence says why, always
            payload.setdefault("override_reason", override)
        outcome = _record_approval(deployment, actor, now, payload)
        if outcome is None:
            return True
        pending.append(outcome)
        return False

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        if deployment.status == DeploymentStatus.DRAFT:
            others = Deployment.objects.filter(ruleset_id=deployment.ruleset_id).exclude(
                pk=deployment.pk
            )
            blocking = others.filter(
                status__in=[DeploymentStatus.ACTIVE, DeploymentStatus.CANARY]
            ).first()
            if blocking is not None:
                allowed = [
                    a for a in transitions.allowed_actions(deployment.status) if a != "promote"
                ]
                raise InvalidTransition(
                    f"Only a rule set's first release is promoted from draft; deployment "
                    f"{blocking.pk} is {blocking.status}. Start a canary instead.",
                    current_status=deployment.status,
                    allowed_actions=allowed,
                )
            deployment.started_at = now
            payload["initial_release"] = True
        else:
            baseline = _locked_baseline(deployment)
            if baseline is not None and baseline.status == DeploymentStatus.ACTIVE:
                _system_transition(
                    baseline,
                    action=transitions.SUPERSEDE,
                    event=EventAction.SUPERSEDE,
                    actor=actor,
                    now=now,
                    payload={"superseded_by": str(deployment.pk)},
                )
        payload["from_traffic"] = deployment.traffic_percentage
        deployment.traffic_percentage = 100
        deployment.promoted_at = now
        return {"traffic_percentage", "promoted_at", "started_at"}

    deployment = _transition(
        deployment_id=deployment_id,
        action=transitions.PROMOTE,
        event=EventAction.PROMOTE,
        actor=actor,
        gate=gate,
        before=apply,
        expected_status=expected_status,
        now=now,
    )
    if pending:
        return pending[0]
    return PromoteOutcome(deployment=deployment, promoted=True)


def _settle_if_readiness_enforced(deployment_id: Any) -> None:
    """Let readiness see every answered request; only worth the wait when it can refuse."""
    try:
        deployments = Deployment.objects.filter(pk=deployment_id)
        config = deployments.values_list("canary_config", flat=True).first()
    except (ValueError, TypeError, DjangoValidationError):
        return  # a malformed id: the locked read reports it
    if config and config.get("enforce_readiness"):
        promotion_hooks.settle()


def _check_readiness(
    deployment: Deployment, now: datetime, override: str, payload: dict[str, Any]
) -> None:
    if not deployment.canary_config.get("enforce_readiness", False):
        return
    verdict = promotion_hooks.readiness(deployment, now)
    if verdict.ready:
        payload["ready"] = True
        return
    failed = verdict.failed_checks()
    if not override:
        names = ", ".join(check["name"] for check in failed) or "readiness"
        raise NotReady(
            f"The canary is not ready to promote (failed: {names}). Wait for the checks, "
            "or promote with an override_reason, which is recorded.",
            checks=verdict.checks,
        )
    payload.update(ready=False, override_reason=override, failed_checks=failed)


def _record_approval(
    deployment: Deployment, actor: Actor, now: datetime, payload: dict[str, Any]
) -> PromoteOutcome | None:
    """Four eyes: None when this call completes the approvals (promote), else the pending state."""
    required = int(deployment.canary_config.get("required_approvals", 1))
    if required <= 1:
        return None
    label = actor_label(actor)
    if label.startswith("system:") or actor is None:
        raise Conflict(
            f"Promoting this canary needs {required} approvals from people; "
            f"{label} cannot give one.",
            required_approvals=required,
        )
    user = _actor_user(actor)
    approvals = PromotionApproval.objects.filter(deployment=deployment)
    approved_by = list(approvals.values_list("approver", flat=True))
    mine = approvals.filter(approver=label)
    if user is not None:
        mine = approvals.filter(models.Q(approver=label) | models.Q(user_id=user.pk))
    if mine.exists():
        raise AlreadyApproved(
            f"{label} has already approved this promotion; it needs {required} approvals "
            f"from different approvers ({len(approved_by)} so far).",
            approvals=len(approved_by),
            required_approvals=required,
            approved_by=approved_by,
        )
    approved_by.append(label)
    if len(approved_by) >= required:
        approvals.delete()
        payload.update(approved_by=approved_by, required_approvals=required)
        return None
    PromotionApproval.objects.create(
        deployment=deployment, approver=label, user=user, created_at=now
    )
    event_payload = {**payload, "approvals": len(approved_by), "required_approvals": required}
    event_payload["approved_by"] = approved_by
    _record_event(
        deployment,
        action=EventAction.APPROVE,
        actor=actor,
        from_status=deployment.status,
        to_status=deployment.status,
        payload=event_payload,
        at=now,
    )
    transaction.on_commit(
        lambda: promotion_approval_recorded.send(
            sender=Deployment,
            deployment=deployment,
            approver=label,
            approved_by=list(approved_by),
            required_approvals=required,
        )
    )
    return PromoteOutcome(
        deployment=deployment,
        promoted=False,
        approved_by=tuple(approved_by),
        required_approvals=required,
    )


def _clear_approvals(deployment: Deployment, payload: dict[str, Any]) -> None:
    """A traffic change or a rollback voids pending approvals: they approved another state."""
    approvals = PromotionApproval.objects.filter(deployment=deployment)
    cleared = list(approvals.values_list("approver", flat=True))
    if cleared:
        approvals.delete()
        payload["approvals_cleared"] = cleared


def deployment_rollback(
    *,
    deployment_id: Any,
    reason: str,
    actor: Actor,
    apply_compensation: bool = True,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> Deployment:
    """End a canary (v1 serves everyone) or undo a promotion (the baseline is active again)."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed({"reason": ["A reason is required to roll back."]})
    reason = _text_or_400("reason", reason.strip(), MAX_REASON)
    if not isinstance(apply_compensation, bool):
        raise ValidationFailed({"apply_compensation": ["Must be true or false."]})

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        if deployment.status == DeploymentStatus.ACTIVE:
            _refuse_if_canary_builds_on(deployment, "roll it back")
        payload.update(
            reason=reason,
            apply_compensation=apply_compensation,
            compensation_strategy=deployment.compensation_strategy,
            from_traffic=deployment.traffic_percentage,
        )
        _clear_approvals(deployment, payload)
        deployment.traffic_percentage = 0
        deployment.rolled_back_at = now
        deployment.rollback_reason = reason
        fields = {"traffic_percentage", "rolled_back_at", "rollback_reason"}
        if apply_compensation and deployment.compensation_strategy == CompensationStrategy.MANUAL:
            # v2's decisions must be reviewed: monitoring flags them in this transaction.
            deployment.compensation_status = CompensationStatus.PENDING
            fields.add("compensation_status")
        return fields

    def restore_baseline(deployment: Deployment, from_status: str, now: datetime) -> None:
        if from_status != DeploymentStatus.ACTIVE:
            return
        baseline = _locked_baseline(deployment)
        if baseline is not None and baseline.status == DeploymentStatus.DEPRECATED:
            _system_transition(
                baseline,
                action=transitions.RESTORE,
                event=EventAction.RESTORE,
                actor=actor,
                now=now,
                payload={"restored_by_rollback_of": str(deployment.pk), "reason": reason},
            )

    return _transition(
        deployment_id=deployment_id,
        action=transitions.ROLLBACK,
        event=EventAction.ROLLBACK,
        actor=actor,
        before=apply,
        after=restore_baseline,
        expected_status=expected_status,
        now=now,
    )


def deployment_deprecate(
    *, deployment_id: Any, actor: Actor, expected_status: str | None = None
) -> Deployment:
    """Retire an active deployment; afterwards nothing serves the rule set."""

    def apply(deployment: Deployment, now: datetime, payload: dict[str, Any]) -> set[str]:
        _refuse_if_canary_builds_on(deployment, "deprecate it")
        deployment.deprecated_at = now
        return {"deprecated_at"}

    return _transition(
        deployment_id=deployment_id,
        action=transitions.DEPRECATE,
        event=EventAction.DEPRECATE,
        actor=actor,
        before=apply,
        expected_status=expected_status,
    )


def deployment_delete(
    *, deployment_id: Any, actor: Actor, expected_status: str | None = None
) -> None:
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        _check_unchanged(deployment, expected_status)
        _check(deployment.status, transitions.DELETE)
        deployment.delete()


def deployment_compensation_complete(*, deployment_id: Any, actor: Actor) -> Deployment:
    """An operator has dealt with v2's decisions after a manual-compensation rollback."""
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        if deployment.compensation_status != CompensationStatus.PENDING:
            raise Conflict(
                "No compensation is pending for this deployment "
                f"(compensation status: {deployment.compensation_status}).",
                compensation_status=deployment.compensation_status,
            )
        deployment.compensation_status = CompensationStatus.COMPLETED
        deployment.save(update_fields=["compensation_status", "updated_at"])
        _record_event(
            deployment,
            action=EventAction.COMPENSATION_COMPLETE,
            actor=actor,
            from_status=deployment.status,
            to_status=deployment.status,
            payload={},
        )
    return deployment


def deployment_breaker_opened(
    *, deployment_id: Any, consecutive_failures: int, cooldown_seconds: float, actor: Actor
) -> DeploymentEvent | None:
    """Record that a running canary's circuit breaker opened and the canary keeps running.

    Not a transition: v1 serves everyone until the cooldown ends. The breaker's
    store keeps only its current state, so this event is the lasting trace of
    the opening for the audit trail and the console's chart. None when the
    deployment is no longer a canary (a rollback already records why).
    """
    deployment = Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.CANARY).first()
    if deployment is None:
        return None
    return _record_event(
        deployment,
        action=EventAction.BREAKER_OPEN,
        actor=actor,
        from_status=deployment.status,
        to_status=deployment.status,
        payload={
            "consecutive_failures": consecutive_failures,
            "cooldown_seconds": cooldown_seconds,
        },
    )


# --- the one transition path ---------------------------------------------------

Before = Callable[[Deployment, datetime, dict[str, Any]], set[str]]
After = Callable[[Deployment, str, datetime], None]
# Runs under the locks after the transition is known to be allowed; False means it
# made its own change (an approval) and the transition does not happen.
Gate = Callable[[Deployment, datetime, dict[str, Any]], bool]


@dataclass(frozen=True)
class _Change:
    deployment: Deployment
    action: str
    from_status: str
    to_status: str
    actor: str


def _lock(deployment_id: Any) -> Deployment:
    """Lock the rule set, then the deployment: one order everywhere, so no deadlocks."""
    try:
        ruleset_id = (
            Deployment.objects.filter(pk=deployment_id).values_list("ruleset_id", flat=True).first()
        )
    except (ValueError, TypeError, DjangoValidationError) as exc:  # a malformed id
        raise NotFound(f"No deployment with id '{deployment_id}'.") from exc
    if ruleset_id is None:
        raise NotFound(f"No deployment with id '{deployment_id}'.")
    RuleSet.objects.select_for_update().only("pk").get(pk=ruleset_id)
    return (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("ruleset", "version")
        .get(pk=deployment_id)
    )


def _locked_baseline(deployment: Deployment) -> Deployment | None:
    if deployment.baseline_id is None:
        return None
    return Deployment.objects.select_for_update().get(pk=deployment.baseline_id)


def _refuse_if_canary_builds_on(deployment: Deployment, what: str) -> None:
    canary = Deployment.objects.filter(baseline=deployment, status=DeploymentStatus.CANARY).first()
    if canary is not None:
        raise Conflict(
            f"Deployment {canary.pk} is in canary against this deployment as v1; "
            f"promote or roll back that canary before you {what}.",
            canary_deployment_id=str(canary.pk),
        )


def _check(status: str, action: str) -> str | None:
    try:
        return transitions.next_status(status, action)
    except transitions.TransitionNotAllowed as exc:
        raise InvalidTransition(
            str(exc), current_status=status, allowed_actions=list(exc.allowed_actions)
        ) from exc


def _check_unchanged(deployment: Deployment, expected_status: str | None) -> None:
    """Compare-and-set: refuse to act on a deployment that changed under the caller.

    An approver who pressed rollback on a canary must not roll back the active
    release that a colleague's promote made of it a moment earlier.
    """
    if expected_status is not None and deployment.status != expected_status:
        raise InvalidTransition(
            f"The deployment changed from '{expected_status}' to '{deployment.status}' while "
            "this request was in flight; nothing was done. Review it and try again.",
            current_status=deployment.status,
            allowed_actions=list(transitions.allowed_actions(deployment.status)),
        )


def _transition(
    *,
    deployment_id: Any,
    action: str,
    event: str,
    actor: Actor,
    before: Before | None = None,
    after: After | None = None,
    gate: Gate | None = None,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> Deployment:
    with transaction.atomic(durable=True):
        deployment = _lock(deployment_id)
        from_status = deployment.status
        _check_unchanged(deployment, expected_status)
        to_status = _check(from_status, action)
        assert to_status is not None
        now = now or timezone.now()
        payload: dict[str, Any] = {}
        if gate is not None and not gate(deployment, now, payload):
            return deployment
        # The rule set's row is locked: the data plane sees a new generation
        # exactly when this change commits.
        RuleSet.objects.filter(pk=deployment.ruleset_id).update(
            routing_generation=F("routing_generation") + 1
        )
        fields = {"status", "updated_at"}
        if before is not None:
            fields |= before(deployment, now, payload)
        deployment.status = to_status
        deployment.save(update_fields=sorted(fields))
        if after is not None:
            after(deployment, from_status, now)
        _record_event(
            deployment,
            action=event,
            actor=actor,
            from_status=from_status,
            to_status=to_status,
            payload=payload,
            at=now,
        )
        _announce(_Change(deployment, action, from_status, to_status, actor_label(actor)))
    return deployment


def _system_transition(
    deployment: Deployment,
    *,
    action: str,
    event: str,
    actor: Actor,
    now: datetime,
    payload: dict[str, Any],
) -> None:
    """A baseline's status change caused by its successor's promote or rollback."""
    from_status = deployment.status
    to_status = _check(from_status, action)
    assert to_status is not None
    deployment.status = to_status
    fields = ["status", "updated_at"]
    if to_status == DeploymentStatus.DEPRECATED:
        deployment.deprecated_at = now
        fields.append("deprecated_at")
    else:
        deployment.traffic_percentage = 100
        fields.append("traffic_percentage")
    deployment.save(update_fields=fields)
    _record_event(
        deployment,
        action=event,
        actor=actor,
        from_status=from_status,
        to_status=to_status,
        payload=payload,
        at=now,
    )
    _announce(_Change(deployment, action, from_status, to_status, actor_label(actor)))


def _record_event(
    deployment: Deployment,
    *,
    action: str,
    actor: Actor,
    from_status: str,
    to_status: str,
    payload: dict[str, Any],
    at: datetime | None = None,
) -> DeploymentEvent:
    return DeploymentEvent.objects.create(
        deployment=deployment,
        action=action,
        actor=actor_label(actor),
        from_status=from_status,
        to_status=to_status,
        payload=payload,
        created_at=at or timezone.now(),
    )


def _announce(change: _Change) -> None:
    kwargs = {
        "deployment": change.deployment,
        "action": change.action,
        "from_status": change.from_status,
        "to_status": change.to_status,
        "actor": change.actor,
    }
    deployment_transitioning.send(sender=Deployment, **kwargs)
    transaction.on_commit(lambda: deployment_transitioned.send(sender=Deployment, **kwargs))
