"""The console's verdict on a canary: the recommended action and why, in one sentence.

Built from the same answers the API gives (comparison, readiness, the monitor's
state), so the page never says something the API does not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.formats import date_format

from deployments.choices import DeploymentStatus, EventAction
from deployments.models import Deployment, DeploymentEvent
from monitoring import console
from monitoring.decision import health
from monitoring.decision import readiness as promotion_readiness
from monitoring.decision.decisions import decision_read, held_regression
from monitoring.decision.selectors import step_started_at
from monitoring.statistics.analysis import p_text

ACTIONS = {
    "rollback": "Roll back",
    "promote": "Promote",
    "collect_more_data": "Keep collecting data",
}


def canary_verdict(*, deployment: Deployment, now: datetime | None = None) -> dict[str, Any] | None:
    """None unless the deployment is a running canary."""
    if deployment.status != DeploymentStatus.CANARY:
        return None
    now = now or timezone.now()
    comparison = health.deployment_comparison(
        deployment=deployment,
        window_minutes=None,
        judged=decision_read(deployment=deployment, now=now),
    )
    readiness = promotion_readiness.deployment_readiness(deployment=deployment, now=now)
    return _verdict(deployment, comparison, readiness, now)


def canary_overview(
    *, deployment: Deployment, now: datetime | None = None
) -> dict[str, Any] | None:
    """A running canary in one row for the console's home: the verdict, readiness, approvals
    and both versions' error rates over the whole canary.

    The same comparison and readiness as the canary's page and the API, read once.
    None unless the deployment is a running canary.
    """
    if deployment.status != DeploymentStatus.CANARY:
        return None
    now = now or timezone.now()
    comparison = health.deployment_comparison(
        deployment=deployment,
        window_minutes=None,
        with_latency=False,
        judged=decision_read(deployment=deployment, now=now),
    )
    readiness = promotion_readiness.deployment_readiness(deployment=deployment, now=now)

    def error_rate(version: str) -> float | None:
        # The canary page's numbers: the rates the difference is of (the paired inputs').
        compared = (comparison["evidence"].get("error_rate") or {}).get(f"{version}_error_rate")
        if compared is not None:
            return float(compared)
        metrics = comparison.get(f"{version}_metrics")
        return metrics["error_rate"] if metrics else None

    return {
        "verdict": _verdict(deployment, comparison, readiness, now),
        "approvals": len(readiness["approved_by"]),
        "approved_by": readiness["approved_by"],
        "required_approvals": readiness["required_approvals"],
        "v1_error_rate": error_rate("v1"),
        "v2_error_rate": error_rate("v2"),
    }


# Home's order (SPEC 9.6): what needs someone now first, what runs on its own last.
SEVERITY = {"rollback": 0, "person": 1, "collect": 2, "ready": 3}
STATES = {
    "rollback": "roll back",
    "person": "waiting for a person",
    "collect": "collecting",
    "wait": "collecting",
    "ready": "ready",
}


def _verdict(
    deployment: Deployment, comparison: dict[str, Any], readiness: dict[str, Any], now: datetime
) -> dict[str, Any]:
    recommendation = comparison["comparison"]["recommendation"]
    evidence = comparison["evidence"]
    decision = comparison.get("decision") or {}
    required = [c for c in readiness["checks"] if c["required"]]
    failing = [c["name"] for c in required if not c["passed"]]
    approved_by = list(readiness.get("approved_by") or [])
    required_approvals = int(readiness.get("required_approvals") or 1)
    progress = console.canary_progress(deployment=deployment, now=now) or {}
    held = held_regression(deployment_id=deployment.pk)
    held_reasons = list(held.reasons) if held else []
    # Never green while a required readiness check fails: "wait" with the checks instead.
    if recommendation == "rollback":
        tone, label, severity = "error", "Roll back", "rollback"
        short = "a detected regression holds" if held else "v2 breaks a rollback rule"
        detail = _rollback_why(comparison, held_reasons)
    elif recommendation == "promote" and not readiness["ready"]:
        tone, label, severity = "warning", "Wait", "collect"
        short = f"{len(failing)} of {len(required)} readiness checks pending"
        detail = (
            f"({', '.join(_check_name(name) for name in failing)}); the evidence alone says "
            f"promote: {_why(recommendation, comparison)}"
        )
    elif recommendation == "promote":
        tone, label = "ok", "Promote"
        # Someone has to act unless the monitor promotes on its own; an approval already
        # given waits for the next approver.
        automatic = progress.get("auto_progress") and deployment.traffic_percentage >= 100
        severity = "person" if approved_by or not automatic else "ready"
        short = "every readiness check passes"
        detail = _why(recommendation, comparison)
    else:
        tone, label, severity = "warning", "Keep collecting data", "collect"
        short = ""
        detail = _why(recommendation, comparison)
    headline = f"{label}: {short}" if short else label
    separator = ": " if not short else " " if detail.startswith("(") else ". "
    return {
        "recommendation": recommendation,
        "tone": tone,
        "label": label,
        "headline": headline,
        "detail": detail,
        "separator": separator,
        "sentence": f"{headline}{separator}{detail}",
        "severity": SEVERITY[severity],
        "state": STATES[severity],
        "evidence_age": _evidence_age(decision),
        "decided_by": _decided_by(decision, now),
        # Home's narrow column: whose decision, in two words.
        "decided_by_short": "by the monitor" if decision.get("source") == "monitor" else "computed",
        "held": held is not None,
        "monitor_next": _monitor_next(deployment, recommendation, evidence, now),
        "ready": readiness["ready"],
        "failing_checks": failing,
        "checks": [_check_row(check) for check in readiness["checks"]],
        "checks_passed": len(required) - len(failing),
        "checks_required": len(required),
        "approved_by": approved_by,
        "required_approvals": required_approvals,
        "rollback_reason": _rollback_reason(deployment, comparison, held_reasons)
        if tone == "error"
        else "",
        # Promoting now goes against the evidence: the console asks for a reason.
        "against_promote": recommendation == "rollback" or not readiness["ready"],
        "closed_gate": closed_gate(deployment),
    }


def closed_gate(deployment: Deployment) -> dict[str, Any] | None:
    """The gate (SPEC 10.4) the monitor waits at in the current step, or None."""
    started = step_started_at(deployment)
    if started is None:
        return None
    event = (
        DeploymentEvent.objects.filter(
            deployment=deployment,
            action=EventAction.GATE_CLOSED,
            payload__step=started.isoformat(),
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if event is None:
        return None
    return {**event.payload, "since": event.created_at}


def _check_name(name: str) -> str:
    return name.replace("_", " ")


# Each check's observed value in the unit its detail speaks of.
OBSERVED_UNITS = {
    "time_at_traffic": lambda value: f"{value:,.1f} min",
    "success_rate": lambda value: f"{value * 100:+.2f} pts (v2 - v1)",
    "p95_latency": lambda value: f"{value:,.3g} ms",
    "min_samples": lambda value: f"{value:,.0f} requests",
    "sample_ratio": p_text,
    "shadow_agreement": lambda value: f"{value * 100:.2f}% agreed",
}


def _check_row(check: dict[str, Any]) -> dict[str, Any]:
    """One readiness check as the checklist shows it: observed value and what it needs."""
    observed = check.get("observed")
    unit = OBSERVED_UNITS.get(check["name"])
    if observed is None:
        shown = "—"
    elif unit is not None and isinstance(observed, int | float):
        shown = unit(float(observed))
    else:
        shown = str(observed)
    return {
        "name": _check_name(check["name"]),
        "passed": bool(check["passed"]),
        "required": bool(check["required"]),
        "observed": shown,
        "detail": check.get("detail", ""),
    }


def _rollback_reasons(comparison: dict[str, Any], held_reasons: list[str]) -> list[str]:
    """Why roll back, each reason once: the held regression's first (it outlives traffic)."""
    reasons = [*held_reasons]
    reasons += [breach["message"] for breach in comparison["evidence"].get("breaches") or []]
    if comparison["evidence"].get("breaker_state") == "OPEN":
        reasons.append("The circuit breaker is OPEN (v2 failed repeatedly).")
    return list(dict.fromkeys(reasons))


def _rollback_why(comparison: dict[str, Any], held_reasons: list[str]) -> str:
    reasons = _rollback_reasons(comparison, held_reasons)
    if held_reasons:
        reasons.append("The regression holds until someone rolls back or dismisses it.")
    return " ".join(reasons) or "a rollback rule holds."


def _rollback_reason(
    deployment: Deployment, comparison: dict[str, Any], held_reasons: list[str]
) -> str:
    """The reason a one-click rollback starts with: the verdict's own words, editable."""
    reasons = _rollback_reasons(comparison, held_reasons) or ["a rollback rule holds."]
    return f"Rollback verdict for {deployment.version.version}: " + " ".join(reasons)


def _why(recommendation: str, comparison: dict[str, Any]) -> str:
    evidence = comparison["evidence"]
    if recommendation == "rollback":
        reasons = [breach["message"] for breach in evidence["breaches"]]
        if evidence.get("breaker_state") == "OPEN":
            reasons.append("the circuit breaker is OPEN (v2 failed repeatedly).")
        return " ".join(reasons) or "a rollback rule holds."
    numbers = _error_numbers(comparison)
    if recommendation == "promote":
        return f"v2 is not worse than v1 ({numbers}) and every threshold holds."
    ratio = evidence.get("sample_ratio") or {}
    if ratio.get("mismatch"):
        return (
            f"the traffic split is off (v2 got {ratio['observed_share']:.1%} of new contexts, "
            f"{ratio['expected_share']:.0%} planned), so the numbers may not describe the "
            "planned population."
        )
    worse = evidence.get("v2_worse") or {}
    if worse.get("rejected"):
        return (
            f"v2 fails more often than v1 ({worse['detail']}), though under the rollback "
            "thresholds: traffic is not raised and it is not promoted automatically."
        )
    shown = evidence.get("non_inferiority") or {}
    return f"v2 is not yet shown as good as v1 ({numbers}; {shown.get('detail', 'no bound yet')})."


def _evidence_age(decision: dict[str, Any]) -> str:
    """ "last request 12 min ago": how old the newest evidence behind the verdict is."""
    age = decision.get("evidence_age_seconds")
    if age is None:
        return "no request yet"
    return f"last request {_ago(age)}"


def _decided_by(decision: dict[str, Any], now: datetime) -> str:
    """Whose decision this is: "decided 40 s ago by the monitor", or computed for this page
    because the monitor's is missing or stale (older than two of its runs, or made before
    the deployment last changed)."""
    decided_at = decision.get("decided_at")
    if decision.get("source") == "monitor" and decided_at:
        seconds = max(0.0, (now - datetime.fromisoformat(decided_at)).total_seconds())
        return f"decided {_ago(seconds)} by the monitor"
    stale = decision.get("stale_decided_at")
    if stale is not None:
        seconds = max(0.0, (now - stale).total_seconds())
        return (
            f"computed for this page: the monitor's last decision ({_ago(seconds)}) is older "
            "than two of its runs or than the canary's last change"
        )
    return "computed for this page: the monitor has no fresh decision on it"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _error_numbers(comparison: dict[str, Any]) -> str:
    errors = comparison["evidence"].get("error_rate")
    diff = comparison["comparison"].get("error_rate_diff")
    if not errors or diff is None:
        return "no requests to compare yet"
    basis = comparison["analysis"]["basis"]
    size = errors.get("pairs") if basis == "paired" else errors.get("n_v2")
    low, high = errors.get("confidence_interval") or [0.0, 0.0]
    # The evidence table's format: points, then the interval with as many decimals as it
    # takes for its ends to differ.
    digits = 2
    while digits < 6 and f"{low * 100:+.{digits}f}" == f"{high * 100:+.{digits}f}":
        digits += 1
    return (
        f"error rate v2 - v1 = {diff * 100:+.2f} pts, 95% interval [{low * 100:+.{digits}f}%, "
        f"{high * 100:+.{digits}f}%], {p_text(errors['p_value'])}, {basis} on {size:,} "
        f"{'inputs' if basis == 'paired' else 'v2 requests'}"
    )


def _monitor_next(
    deployment: Deployment, recommendation: str, evidence: dict[str, Any], now: datetime
) -> str:
    monitor = console.monitor_status(now=now)
    when = monitor.get("next_expected_at")
    # The console's one date-time format (canary/formats), in the site's time zone.
    shown = date_format(timezone.localtime(when), "DATETIME_FORMAT") if when else ""
    at = f" at its next run (about {shown})" if when else " at its next run"
    if monitor.get("never_ran"):
        return "The monitor has never run: nothing will happen automatically until beat runs."
    config = deployment.canary_config
    if recommendation == "rollback":
        if config.get("auto_rollback", True):
            return f"The monitor rolls it back{at}."
        return "Automatic rollback is off: roll it back by hand."
    progress = console.canary_progress(deployment=deployment, now=now) or {}
    if not progress.get("auto_progress"):
        return "Automatic progression is off: traffic changes only by hand."
    if (evidence.get("sample_ratio") or {}).get("mismatch"):
        return "Automatic progression is paused by the sample-ratio mismatch."
    if not progress.get("step_done"):
        minutes = int(progress.get("remaining_seconds", 0) // 60)
        return f"The current step has {minutes} minutes to run before the monitor may advance it."
    if deployment.traffic_percentage >= 100:
        return f"The monitor promotes it{at} if the step stays healthy."
    return f"The monitor raises traffic to {progress.get('next_traffic')}%{at} if healthy."
