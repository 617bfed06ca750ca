"""The deployment page's panels: event history and the v1-vs-v2 measurement panel.

They turn the REST-shaped dicts of ``deployments.admin_panels`` into rows and
sentences for the template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from deployments.admin.display import (
    NONE,
    duration,
    health_badge,
    key_value_table,
    milliseconds,
    p_value,
    percent,
    plain_value,
    status_badge,
    when,
)
from deployments.choices import EventAction
from deployments.models import DeploymentEvent


def event_rows(events: Iterable[DeploymentEvent]) -> list[dict[str, Any]]:
    """The history newest first, as an on-call reader scans it: what just happened, and why.

    The reason has its own column; the rest of the payload is summed up in words,
    with the whole payload as a key/value table for whoever needs every field.
    """
    ordered = sorted(events, key=lambda event: (event.created_at, event.pk), reverse=True)
    return [
        {
            "when": when(event.created_at),
            "actor": event.actor,
            "action": event.get_action_display(),
            "from_status": status_badge(event.from_status) if event.from_status else NONE,
            "to_status": status_badge(event.to_status) if event.to_status else NONE,
            "reason": (event.payload or {}).get("reason") or "",
            "details": event_details(event),
            "payload": key_value_table(
                {k: v for k, v in (event.payload or {}).items() if k != "reason"}
            )
            if set(event.payload or {}) - {"reason"}
            else None,
        }
        for event in ordered
    ]


def event_details(event: DeploymentEvent) -> str:
    """The payload an approver needs, in words: traffic, the other version, compensation.

    The reason is not repeated here: the history shows it in its own column.
    """
    payload = event.payload or {}
    parts: list[str] = []
    if "from_traffic" in payload and "to_traffic" in payload:
        parts.append(f"traffic {payload['from_traffic']}% → {payload['to_traffic']}%")
    elif "traffic_percentage" in payload:
        parts.append(f"traffic {payload['traffic_percentage']}%")
    if payload.get("baseline_version"):
        parts.append(f"v1 = {payload['baseline_version']}")
    if payload.get("canary_target_filter"):
        targets = payload["canary_target_filter"]
        counts = ", ".join(
            f"{len(ids)} {key.replace('_ids', '')}(s)" for key, ids in targets.items()
        )
        parts.append(f"only {counts}")
    if "apply_compensation" in payload:
        parts.append("compensation applied" if payload["apply_compensation"] else "no compensation")
    if payload.get("initial_release"):
        parts.append("first release")
    if payload.get("superseded_by"):
        parts.append(f"superseded by {payload['superseded_by']}")
    if payload.get("restored_by_rollback_of"):
        parts.append(f"restored by the rollback of {payload['restored_by_rollback_of']}")
    if event.action == EventAction.BREAKER_OPEN:
        parts.append(
            f"after {payload.get('consecutive_failures')} consecutive v2 failures; "
            f"v1 serves everyone for {duration(payload.get('cooldown_seconds'))}"
        )
    if payload.get("changed"):
        parts.append("changed " + ", ".join(payload["changed"]))
    if payload.get("version") and event.action == EventAction.CREATE:
        parts.append(f"version {payload['version']}")
    return "; ".join(parts)


def _metric_rows(comparison: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    v1, v2 = comparison.get("v1_metrics"), comparison.get("v2_metrics")

    def cell(stats: Mapping[str, Any] | None, key: str, fmt: Callable[[Any], str]) -> str:
        return NONE if not stats or stats.get(key) is None else fmt(stats[key])

    specs: list[tuple[str, str, Callable[[Any], str]]] = [
        ("requests", "total_requests", lambda value: f"{value:,}"),
        ("success rate", "success_rate", percent),
        ("error rate", "error_rate", percent),
        ("p95 latency", "p95_latency_ms", milliseconds),
        ("p99 latency", "p99_latency_ms", milliseconds),
    ]
    return [(label, cell(v1, key, fmt), cell(v2, key, fmt)) for label, key, fmt in specs]


def _evidence_lines(comparison: Mapping[str, Any], *, ended: bool = False) -> list[str]:
    evidence = comparison.get("evidence") or {}
    lines: list[str] = []
    errors = evidence.get("error_rate")
    if errors:
        verdict = "significant" if errors.get("significant") else "not significant"
        # Paired tests count inputs evaluated by both versions; unpaired ones each version's.
        size = (
            f"{errors['pairs']:,} paired inputs"
            if errors.get("pairs") is not None
            else f"n = {errors.get('n_v1')} vs {errors.get('n_v2')}"
        )
        lines.append(
            f"Error rate v2 minus v1: {percent(errors.get('difference'))} "
            f"({errors.get('test')}, {p_value(errors.get('p_value'))}, {verdict} at 95%; "
            f"{size})."
        )
    latency = evidence.get("latency")
    if latency:
        verdict = "significant" if latency.get("significant") else "not significant"
        size = (
            f"{latency['pairs']:,} paired inputs"
            if latency.get("pairs") is not None
            else f"samples {latency.get('sample_v1')} vs {latency.get('sample_v2')}"
        )
        lines.append(
            f"Latency: {latency.get('test')}, {p_value(latency.get('p_value'))}, {verdict} "
            f"({size})."
        )
    for check in evidence.get("thresholds") or []:
        mark = "✓ held" if check.get("held") else "✗ breached"
        observed = check.get("observed")
        shown = milliseconds(observed) if check.get("name") == "latency_p95" else percent(observed)
        lines.append(f"{check.get('rule')}: observed {shown} — {mark}.")
    if not ended and "enough_samples" in evidence and not evidence["enough_samples"]:
        lines.append(
            f"Fewer than {evidence.get('min_samples')} requests on v1 or v2: not enough to "
            "recommend promotion yet."
        )
    return lines


def signed_interval(low: float | None, high: float | None) -> str:
    """A percentage interval with as many decimals as it takes for its ends to differ:
    never "[+0.00%, +0.00%]" for a narrow but real interval."""
    if low is None or high is None:
        return NONE
    digits = 2
    while digits < 6 and f"{low * 100:+.{digits}f}" == f"{high * 100:+.{digits}f}":
        digits += 1
    return f"[{low * 100:+.{digits}f}%, {high * 100:+.{digits}f}%]"


def p_in_words(worse: Mapping[str, Any] | None) -> str:
    """The always-valid "does v2 fail more often?" test, said the way an approver reads it."""
    if not worse or worse.get("basis") == "none":
        return "not tested yet: too few requests"
    shown = p_value(worse.get("p_value"))
    if worse.get("rejected"):
        return f"v2 fails more often: {shown}"
    return f"no evidence v2 fails more often ({shown})"


def evidence_table(comparison: Mapping[str, Any]) -> list[dict[str, str]]:
    """The evidence as one row per metric: v1, v2, the difference with its interval, the
    window, the threshold and whether it holds, and the test in words. Shown once."""
    v1 = comparison.get("v1_metrics") or {}
    v2 = comparison.get("v2_metrics") or {}
    evidence = comparison.get("evidence") or {}
    thresholds = {check.get("name"): check for check in evidence.get("thresholds") or []}
    errors = evidence.get("error_rate") or {}
    interval = errors.get("confidence_interval") or [None, None]
    difference = errors.get("difference")
    worse = evidence.get("v2_worse")
    # One number per metric: v1 and v2 are the rates the difference is of (the same
    # inputs when paired), so v2 - v1 is their difference, not a third figure.
    compared = errors.get("v1_error_rate") is not None and errors.get("v2_error_rate") is not None
    v1_errors = errors["v1_error_rate"] if compared else v1.get("error_rate")
    v2_errors = errors["v2_error_rate"] if compared else v2.get("error_rate")
    paired = errors.get("pairs") is not None
    whole = f"whole canary, {errors['pairs']:,} paired inputs" if paired else "whole canary"

    def verdict(name: str) -> str:
        check = thresholds.get(name)
        if check is None:
            return "not judged yet"
        return "pass" if check.get("held") else "fail"

    def rule(name: str) -> str:
        check = thresholds.get(name)
        if check is None:
            return NONE
        observed = check.get("observed")
        shown = milliseconds(observed) if name == "latency_p95" else percent(observed)
        return f"{check.get('rule')}; observed {shown}"

    rows = [
        {
            "metric": "error rate",
            "v1": percent(v1_errors),
            "v2": percent(v2_errors),
            "difference": (
                f"{difference * 100:+.2f} pts {signed_interval(*interval)}"
                if difference is not None
                else NONE
            ),
            "window": f"{whole}; threshold on the last 5 min",
            "threshold": rule("error_rate"),
            "result": verdict("error_rate"),
            "test": p_in_words(worse),
        },
        {
            "metric": "success rate",
            "v1": percent(None if v1_errors is None else 1 - v1_errors),
            "v2": percent(None if v2_errors is None else 1 - v2_errors),
            "difference": (
                f"{-difference * 100:+.2f} pts {signed_interval(-interval[1], -interval[0])}"
                if difference is not None and interval[0] is not None
                else NONE
            ),
            "window": f"{whole}; threshold on the last 10 min",
            "threshold": rule("success_rate"),
            "result": verdict("success_rate"),
            "test": p_in_words(worse),
        },
    ]
    latency = evidence.get("latency") or {}
    v1_p95, v2_p95 = v1.get("p95_latency_ms"), v2.get("p95_latency_ms")
    rows.append(
        {
            "metric": "p95 latency",
            "v1": milliseconds(v1_p95),
            "v2": milliseconds(v2_p95),
            "difference": (
                f"{v2_p95 - v1_p95:+.3g} ms" if v1_p95 is not None and v2_p95 is not None else NONE
            ),
            "window": "whole canary",
            "threshold": rule("latency_p95"),
            "result": verdict("latency_p95"),
            "test": (
                f"{latency.get('test')}: {p_value(latency.get('p_value'))}"
                + (", significant" if latency.get("significant") else ", not significant")
                if latency
                else "not tested yet"
            ),
        }
    )
    rows.append(
        {
            "metric": "requests",
            "v1": f"{v1.get('total_requests', 0):,}" if v1 else NONE,
            "v2": f"{v2.get('total_requests', 0):,}" if v2 else NONE,
            "difference": NONE,
            "window": "whole canary",
            "threshold": f"at least {evidence.get('min_samples', NONE)} to judge",
            "result": "pass" if evidence.get("enough_samples") else "too few",
            "test": NONE,
        }
    )
    return rows


def measurement_panel(
    data: Mapping[str, Any] | None, *, ended: bool = False
) -> dict[str, Any] | None:
    """Turn the provider's REST-shaped dicts into rows and sentences for the template.

    An ``ended`` deployment (no longer a canary) keeps its numbers but shows no
    recommendation: advice about a decision already taken only misleads.
    """
    if not data:
        return None
    comparison = data.get("comparison") or {}
    health = data.get("health")
    summary = comparison.get("comparison") or {}
    panel: dict[str, Any] = {
        "rows": _metric_rows(comparison),
        "recommendation": None if ended else summary.get("recommendation"),
        "show_recommendation": not ended,
        "ended": ended,
        "evidence": _evidence_lines(comparison, ended=ended),
        "table": evidence_table(comparison),
        "health": None,
    }
    if health:
        panel["health"] = {
            # Only what the evidence table does not say: the status and the warnings.
            "badge": health_badge(health.get("health_status")),
            # The breaches are the verdict's sentence already: each is said once.
            "warnings": [
                warning
                for warning in health.get("warnings") or []
                if warning
                not in {
                    breach.get("message")
                    for breach in (comparison.get("evidence") or {}).get("breaches") or []
                }
            ],
            "checked_at": when(health.get("last_check_at")),
        }
    return panel


def shadow_panel(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Paired evaluation with its rates as percentages, McNemar's p as a statistician writes
    it and outputs as JSON text (not Python's repr); the counts as the API gives them."""
    if not data:
        return None
    interval = data.get("disagreement_rate_ci") or None
    return {
        **data,
        "disagreement_percent": percent(data.get("disagreement_rate")),
        "disagreement_interval": f"{percent(interval[0])} to {percent(interval[1])}"
        if interval
        else None,
        "mcnemar_p": p_value((data.get("mcnemar") or {}).get("p_value")),
        "changes": [
            {
                **change,
                "v1_output": plain_value(change.get("v1_output")),
                "v2_output": plain_value(change.get("v2_output")),
            }
            for change in data.get("changes") or []
        ],
    }


def monitor_banner(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The monitor's heartbeat in one line and a level (ok / warning / error) for its colour."""
    if not data:
        return None
    every = duration(data.get("interval_seconds"))
    if data.get("never_ran"):
        return {
            "level": "error",
            "headline": "The monitor has never run",
            "text": (
                f"Nothing rolls back or advances canaries automatically (it should run every "
                f"{every}). Start Celery beat and a worker."
            ),
            "never_ran": True,
        }
    last = when(data.get("last_started_at"))
    ago = duration(data.get("since_last_seconds"))
    outcome = data.get("last_outcome") or ""
    if data.get("running"):
        tail = "running now"
    elif data.get("overdue_seconds"):
        tail = f"next run overdue by {duration(data['overdue_seconds'])}"
    else:
        tail = f"next run expected {when(data.get('next_expected_at'))}"
    text = f"Last run {last} ({ago} ago){': ' + outcome if outcome else ''}; {tail}."
    if data.get("schedule_enabled") is False:
        return {
            "level": "error",
            "headline": "The monitor's periodic task is disabled",
            "text": text,
        }
    if not data.get("alive"):
        return {
            "level": "error",
            "headline": "Monitor stale: beat looks down",
            "text": f"{text} It should run every {every}.",
        }
    return {"level": "ok", "headline": f"Monitor alive (every {every})", "text": text}


def step_lines(progress: Mapping[str, Any] | None, traffic: int) -> list[str]:
    """The current traffic step and what the monitor will do with it, in sentences."""
    if not progress:
        return []
    elapsed = duration(progress["elapsed_seconds"])
    total = duration(progress["duration_seconds"])
    if progress["step_done"]:
        step = f"Step at {traffic}%: {elapsed} elapsed, past its {total}."
    else:
        left = duration(progress["remaining_seconds"])
        step = f"Step at {traffic}%: {elapsed} of {total} elapsed, {left} left."
    if not progress["auto_progress"]:
        then = "Auto-progress is off: traffic changes only by hand."
    elif progress["next_traffic"] is None:
        then = "Auto-progress is on: after a healthy step at 100% the monitor promotes."
    else:
        then = (
            f"Auto-progress is on: after a healthy step the monitor raises traffic to "
            f"{progress['next_traffic']}%."
        )
    rollback = "Auto-rollback is on." if progress["auto_rollback"] else "Auto-rollback is off."
    return [step, then, rollback]


def breaker_line(detail: Mapping[str, Any] | None) -> dict[str, str]:
    """The breaker's state with how close it is to opening, or how long it stays open."""
    if not detail:
        return {"state": "UNKNOWN", "text": "state unknown (breaker store unreachable)"}
    state = detail["state"]
    failures = f"{detail['consecutive_failures']} of {detail['failure_threshold']}"
    if state == "OPEN":
        left = detail.get("cooldown_left_seconds")
        text = f"open: v1 serves everyone; HALF_OPEN in {duration(left)}"
    elif state == "HALF_OPEN":
        text = "half open: one trial request at a time reaches v2"
    else:
        text = f"{failures} consecutive v2 failures open it"
    return {"state": state, "text": text}


def compensation_panel(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Manual compensation in numbers, and the decisions v1 would have made differently."""
    if not data:
        return None
    rows = [
        {
            "id": log.id,
            "when": when(log.created_at),
            "ids": ", ".join(
                f"{label} {value}"
                for label, value in (
                    ("wf", log.workflow_id),
                    ("session", log.session_id),
                    ("user", log.user_id),
                )
                if value
            )
            or NONE,
            "v2": _decision(log.success, log.output),
            "v1": _decision(log.replay_success, log.replay_output),
        }
        for log in data.get("differences") or []
    ]
    return {
        "status": data.get("compensation_status"),
        "pending": bool(data.get("pending")),
        "flagged": data.get("flagged", 0),
        "processed": data.get("processed", 0),
        "differing": data.get("differing", 0),
        "rows": rows,
        "more": max(0, int(data.get("total_differences") or 0) - len(rows)),
    }


def _decision(success: bool | None, output: Any) -> str:
    if success is None:
        return NONE
    return plain_value(output) if success else "error"


def outcome_banner(
    deployment: Any, *, rollback_actor: str | None, baseline_of: Any
) -> dict[str, str] | None:
    """What an approver must read first on a page that is not a running canary.

    A rolled-back deployment leads with why; a deprecated one with when; an
    active deployment that is v1 of a running canary says so, since "active at
    100%" would be wrong while the canary takes its share.
    """
    if deployment.status == "rolled_back":
        by = f" by {rollback_actor}" if rollback_actor else ""
        return {
            "level": "error",
            "headline": f"Rolled back {when(deployment.rolled_back_at)}{by}",
            "text": f"Reason: {deployment.rollback_reason or NONE}",
        }
    if deployment.status == "deprecated":
        return {
            "level": "muted",
            "headline": f"Deprecated {when(deployment.deprecated_at)}",
            "text": "It no longer serves traffic; the numbers below are final.",
        }
    if baseline_of is not None:
        share = 100 - baseline_of.traffic_percentage
        return {
            "level": "warning",
            "headline": (
                f"Baseline of canary {baseline_of.version.version} at "
                f"{baseline_of.traffic_percentage}%"
            ),
            "text": (
                f"This deployment is v1: it serves the other {share}% of new contexts and "
                "everyone the canary does not. Act on the canary's page."
            ),
        }
    return None
