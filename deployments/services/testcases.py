"""Test cases of a rule set (SPEC 10.2): the guide's "v2 rules tested with /test", kept.

Each case is an input and the output every version must give for it. A new version
runs them at creation (its ``test_report``), a draft's preflight requires them to
pass, and an approver can run them against any version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from canary.errors import NotFound, ValidationFailed
from deployments.models import RuleSet, RuleSetTestCase, RuleSetVersion
from deployments.rules import InputBoundsError, check_input_bounds
from deployments.selectors import compiled_rules_for
from deployments.services.actors import Actor, _actor_user

MAX_TEST_CASE_NAME = 200


def ruleset_case_create(
    *,
    ruleset: RuleSet,
    name: Any,
    input: Any,
    expected_output: Any = None,
    actor: Actor,
) -> RuleSetTestCase:
    """Add a case; its name is unique in the rule set and its input has execute's limits."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed({"name": ["This field may not be blank."]})
    name = name.strip()
    if len(name) > MAX_TEST_CASE_NAME:
        raise ValidationFailed({"name": [f"Must be at most {MAX_TEST_CASE_NAME} characters."]})
    if not isinstance(input, Mapping):
        raise ValidationFailed({"input": ["Must be a JSON object."]})
    try:
        check_input_bounds(input)
    except InputBoundsError as exc:
        raise ValidationFailed({"input": [str(exc)]}) from exc
    duplicate = {"name": [f"Rule set '{ruleset.name}' already has a test case named '{name}'."]}
    if RuleSetTestCase.objects.filter(ruleset=ruleset, name=name).exists():
        raise ValidationFailed(duplicate)
    try:
        with transaction.atomic():
            return RuleSetTestCase.objects.create(
                ruleset=ruleset,
                name=name,
                input=dict(input),
                expected_output=expected_output,
                created_by=_actor_user(actor),
            )
    except IntegrityError as exc:
        raise ValidationFailed(duplicate) from exc


def ruleset_case_delete(*, ruleset: RuleSet, case_id: Any, actor: Actor) -> None:
    deleted, _ = RuleSetTestCase.objects.filter(ruleset=ruleset, pk=case_id).delete()
    if not deleted:
        raise NotFound(f"Rule set '{ruleset.name}' has no test case {case_id}.")


def ruleset_cases_run(*, ruleset: RuleSet, version: RuleSetVersion | str) -> dict[str, Any]:
    """Every case of the rule set on one version: ``{version, passed, total, failed, results}``.

    A case passes when the evaluation succeeds and its output equals the expected one.
    """
    if isinstance(version, str):
        found = RuleSetVersion.objects.filter(ruleset=ruleset, version=version).first()
        if found is None:
            raise ValidationFailed(
                {"version": [f"Rule set '{ruleset.name}' has no version '{version}'."]}
            )
        version = found
    compiled = compiled_rules_for(version)
    results = []
    for case in RuleSetTestCase.objects.filter(ruleset=ruleset).order_by("name", "pk"):
        evaluation = compiled.evaluate(case.input)
        passed = evaluation.success and evaluation.output == case.expected_output
        results.append(
            {
                "case_id": case.pk,
                "name": case.name,
                "passed": passed,
                "output": evaluation.output,
                "expected_output": case.expected_output,
                "matched_rule": evaluation.matched_rule,
                "error": (
                    {"rule": evaluation.error.rule, "message": evaluation.error.message}
                    if evaluation.error
                    else None
                ),
            }
        )
    failed = sum(1 for result in results if not result["passed"])
    return {
        "version": version.version,
        "passed": failed == 0,
        "total": len(results),
        "failed": failed,
        "results": results,
    }


def ruleset_cases_report(*, version: RuleSetVersion) -> dict[str, Any]:
    """Run the rule set's cases on a new version and keep the report on it."""
    report = ruleset_cases_run(ruleset=version.ruleset, version=version)
    RuleSetVersion.objects.filter(pk=version.pk).update(test_report=report)
    version.test_report = report
    return report
