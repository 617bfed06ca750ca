"""The preflight checklist (SPEC 10.2): the guide's "before the start", asked of a draft.

- ``test_cases``: every test case of the rule set passes on the draft's version
  (required once the rule set has any);
- ``backtest``: a done backtest of this version against the current active version,
  finished in the last 24 hours, with no unexpected change when it declared
  ``expect_changes`` (required when ``canary_config.require_backtest``);
- ``notifications``: a Slack, e-mail or webhook channel reaches this rule set
  (informational);
- ``rule_cost``: the version's worst-case evaluation cost against the budget
  (informational).

``GET /deployments/{id}/preflight`` shows it; start-canary asks ``preflight_gate``
(through ``deployments.hooks``) when ``canary_config.enforce_preflight`` is on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from deployments import services as deployment_services
from deployments.choices import DeploymentStatus
from deployments.hooks import ReadinessVerdict
from deployments.models import Deployment, RuleSetTestCase
from deployments.rules import RuleCompileError, estimate_condition_cost, eval_limits
from monitoring.models import Backtest, BacktestStatus
from monitoring.notifications.dispatch import _email_recipients
from monitoring.notifications.webhooks import webhooks_reaching

BACKTEST_FRESH = timedelta(hours=24)


def _check(name: str, passed: bool, required: bool, observed: Any, detail: str) -> dict[str, Any]:
    return {
        "name": name,
        "passed": passed,
        "required": required,
        "observed": observed,
        "detail": detail,
    }


def _test_cases(deployment: Deployment) -> dict[str, Any]:
    if not RuleSetTestCase.objects.filter(ruleset_id=deployment.ruleset_id).exists():
        return _check(
            "test_cases", True, False, {"total": 0}, "The rule set has no test cases yet."
        )
    report = deployment_services.ruleset_cases_run(
        ruleset=deployment.ruleset, version=deployment.version
    )
    failing = [result["name"] for result in report["results"] if not result["passed"]]
    detail = (
        f"All {report['total']} test cases pass."
        if not failing
        else f"{len(failing)} of {report['total']} fail: {', '.join(failing[:10])}."
    )
    observed = {"total": report["total"], "failed": report["failed"], "failing": failing[:10]}
    return _check("test_cases", not failing, True, observed, detail)


def _backtest(deployment: Deployment, now: datetime) -> dict[str, Any]:
    required = bool(deployment.canary_config.get("require_backtest", False))
    active = (
        Deployment.objects.filter(ruleset_id=deployment.ruleset_id, status=DeploymentStatus.ACTIVE)
        .values_list("version_id", flat=True)
        .first()
    )
    candidates = Backtest.objects.filter(
        version_id=deployment.version_id,
        status=BacktestStatus.DONE,
        finished_at__gte=now - BACKTEST_FRESH,
    )
    if active is not None:
        candidates = candidates.filter(against_id=active)
    latest = candidates.order_by("-finished_at").first()
    if active is None or latest is None:
        detail = (
            "No active version to compare with."
            if active is None
            else "No done backtest of this version against the active version in the last 24 h."
        )
        return _check("backtest", False, required, None, detail)
    unexpected = int(latest.state.get("unexpected", 0))
    passed = not latest.expect_changes or unexpected == 0
    observed = {
        "backtest_id": str(latest.pk),
        "finished_at": latest.finished_at.isoformat() if latest.finished_at else None,
        "evaluated": latest.evaluated,
        "disagreed": latest.evaluated - int(latest.state.get("agreed", 0)),
        "unexpected": unexpected,
    }
    detail = f"Backtest {latest.pk} evaluated {latest.evaluated} recorded inputs" + (
        f"; {unexpected} unexpected differences." if not passed else "."
    )
    return _check("backtest", passed, required, observed, detail)


def _notifications(deployment: Deployment) -> dict[str, Any]:
    slack = bool(settings.SLACK_WEBHOOK_URL)
    email = len(_email_recipients()) if settings.CANARY_NOTIFY_EMAIL else 0
    webhooks = webhooks_reaching(str(deployment.ruleset_id))
    channels = [
        name for name, on in (("slack", slack), ("email", email), ("webhooks", webhooks)) if on
    ]
    detail = (
        f"Notifications reach {', '.join(channels)}."
        if channels
        else "No Slack, e-mail or webhook channel is configured: nobody hears of a rollback."
    )
    return _check(
        "notifications",
        bool(channels),
        False,
        {"slack": slack, "email_recipients": email, "webhooks": webhooks},
        detail,
    )


def _rule_cost(deployment: Deployment) -> dict[str, Any]:
    limits = eval_limits()
    costs = []
    for rule in deployment.version.rules or []:
        try:
            costs.append(estimate_condition_cost(rule["condition"], limits).total)
        except (RuleCompileError, KeyError, TypeError):
            costs.append(None)
    known = [cost for cost in costs if cost is not None]
    worst = sum(known)
    limit = limits.rule_cost_limit
    passed = len(known) == len(costs) and max(known, default=0) <= limit
    observed = {
        "worst_case_units": worst,
        "heaviest_rule_units": max(known, default=0),
        "rule_limit_units": limit,
        "budget_ms": limits.budget_ms,
        "share_of_budget": round(worst / limit, 4) if limit else None,
    }
    detail = (
        f"Worst case of all rules: {worst:,} units, {observed['share_of_budget']:.1%} of the "
        f"{limits.budget_ms} ms budget."
    )
    return _check("rule_cost", passed, False, observed, detail)


def deployment_preflight(*, deployment: Deployment, now: datetime | None = None) -> dict[str, Any]:
    """``{ready, checks}``: ready when every required check passed."""
    now = now or timezone.now()
    checks = [
        _test_cases(deployment),
        _backtest(deployment, now),
        _notifications(deployment),
        _rule_cost(deployment),
    ]
    ready = all(check["passed"] for check in checks if check["required"])
    return {"ready": ready, "checks": checks}


def preflight_gate(deployment: Deployment, now: datetime) -> ReadinessVerdict:
    """What start-canary asks under its locks (reads only)."""
    answer = deployment_preflight(deployment=deployment, now=now)
    return ReadinessVerdict(ready=answer["ready"], checks=answer["checks"])
