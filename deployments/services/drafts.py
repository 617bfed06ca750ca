"""Creating deployments and editing drafts: the writes before a deployment's lifecycle starts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from canary.errors import ValidationFailed
from deployments import transitions
from deployments.canary_config import CanaryConfigError, normalize_canary_config
from deployments.choices import CompensationStrategy, DeploymentStatus, EventAction
from deployments.models import Deployment, RuleSet, RuleSetVersion
from deployments.services.actors import MAX_CHANGELOG, Actor, _actor_user, _text_or_400
from deployments.services.transition import _record_event, _transition

# --- deployments: creation and draft edits -----------------------------------


def _canary_config_or_400(raw: Any, *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    try:
        config = normalize_canary_config(raw, base=base)
    except CanaryConfigError as exc:
        raise ValidationFailed({"canary_config": exc.errors}) from exc
    _metric_checks_need_prometheus(config)
    return config


def _metric_checks_need_prometheus(config: Mapping[str, Any]) -> None:
    """Checks nobody can evaluate would hold a plan forever: refuse them up front."""
    if config.get("metric_checks") and not settings.CANARY_PROMETHEUS_URL:
        raise ValidationFailed(
            {
                "canary_config": {
                    "metric_checks": [
                        "Metric checks need CANARY_PROMETHEUS_URL, the Prometheus to query."
                    ]
                }
            }
        )


def _compensation_or_400(value: Any) -> str:
    if value not in CompensationStrategy.values:
        choices = ", ".join(CompensationStrategy.values)
        raise ValidationFailed({"compensation_strategy": [f"Must be one of: {choices}."]})
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
