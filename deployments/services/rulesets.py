"""Rule sets and their versions: writes that never touch a deployment's lifecycle."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from canary.errors import ValidationFailed
from deployments.models import SEMVER_PATTERN, RuleSet, RuleSetVersion
from deployments.rules import InputBoundsError, RuleCompileError, check_input_bounds, compile_rules
from deployments.rules.redaction import redaction_paths_errors
from deployments.selectors import compiled_rules_for, ruleset_version_latest
from deployments.services.actors import Actor, _actor_user, _percentage_or_400
from deployments.services.testcases import ruleset_cases_report
from deployments.signals import ruleset_routing_changed

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
    capture_percentage: int | None = None,
    actor: Actor,
) -> RuleSet:
    """Change a rule set's description, redacted input paths or capture percentage.

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
        if capture_percentage is not None:
            # Part of the routing state too: every process samples the new share at once.
            ruleset.capture_percentage = _percentage_or_400(
                "capture_percentage", capture_percentage, low=0
            )
            if "routing_generation" not in fields:
                ruleset.routing_generation = F("routing_generation") + 1
                fields.append("routing_generation")
            fields.append("capture_percentage")
        if fields:
            ruleset.save(update_fields=fields)
            ruleset.refresh_from_db()
        if redacted_input_paths is not None or capture_percentage is not None:
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
            created = RuleSetVersion.objects.create(
                ruleset=ruleset,
                version=version,
                rules=rules,
                default=default,
                changelog=changelog or "",
                created_by=_actor_user(actor),
            )
    except IntegrityError as exc:
        raise ValidationFailed(duplicate) from exc
    # SPEC 10.2: every new version runs the rule set's test cases; the report stays on it.
    ruleset_cases_report(version=created)
    return created


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
