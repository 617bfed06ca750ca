"""The console's home (admin index): the monitor's heartbeat, the running canaries and the
compensations still owed, as one block that re-fetches itself (``…/deployment/running/``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from deployments import admin_panels
from deployments.admin.display import (
    CHANGE_DEPLOYMENT,
    NONE,
    duration,
    percent,
    status_badge,
    when,
)
from deployments.admin.panels import breaker_line, monitor_banner
from deployments.admin.plan import plan_summary

RECOMMENDATIONS = {
    "rollback": "roll back",
    "promote": "promote",
    "collect_more_data": "keep collecting",
}


def index_block_context(request: HttpRequest) -> dict[str, Any]:
    """What the index shows; nothing for a user who may not see deployments."""
    if not request.user.has_perm("deployments.view_deployment"):
        return {"visible": False}
    return {
        "visible": True,
        "monitor": monitor_banner(admin_panels.panel("monitor")),
        "canaries": [
            canary_row(item, user=request.user) for item in admin_panels.panel("running") or []
        ],
        "compensations": [
            compensation_row(item) for item in admin_panels.panel("compensation_pending") or []
        ],
        "refresh_url": reverse("admin:deployments_deployment_running"),
        "refresh_seconds": settings.CANARY_CONSOLE_REFRESH_SECONDS,
        "rendered_at": when(timezone.now()),
    }


def canary_row(item: Mapping[str, Any], user: Any = None) -> dict[str, Any]:
    """One running canary: where it stands, what the evidence says, who has approved, and
    the one action the verdict asks of this user."""
    deployment = item["deployment"]
    progress = item.get("progress") or {}
    overview = item.get("overview") or {}
    verdict = overview.get("verdict") or {}
    recommendation = verdict.get("recommendation")
    return {
        "url": reverse("admin:deployments_deployment_change", args=[deployment.pk]),
        "ruleset": deployment.ruleset.name,
        "version": deployment.version.version,
        "baseline": deployment.baseline.version.version if deployment.baseline else NONE,
        "status": status_badge(deployment.status),
        "traffic": deployment.traffic_percentage,
        "elapsed": duration(progress.get("elapsed_seconds")),
        "remaining": duration(progress.get("remaining_seconds")),
        "auto_progress": progress.get("auto_progress"),
        "breaker": breaker_line(item.get("breaker")),
        "recommendation": recommendation,
        "recommendation_label": RECOMMENDATIONS.get(recommendation or "", NONE),
        "verdict": verdict.get("sentence", ""),
        "ready": verdict.get("ready"),
        "failing_checks": ", ".join(c.replace("_", " ") for c in verdict.get("failing_checks", [])),
        "approvals": overview.get("approvals"),
        "required_approvals": overview.get("required_approvals"),
        "approved_by": ", ".join(overview.get("approved_by") or []),
        "v1_error_rate": percent(overview.get("v1_error_rate")),
        "v2_error_rate": percent(overview.get("v2_error_rate")),
        "plan": plan_summary(deployment),
        "tone": verdict.get("tone", "warning"),
        "state": verdict.get("state", NONE),
        "headline": verdict.get("label", NONE),
        "checks_line": _checks_line(verdict),
        "evidence_age": verdict.get("evidence_age", ""),
        "decided_by": verdict.get("decided_by_short", ""),
        "approvals_line": approvals_line(
            overview.get("approved_by") or [], overview.get("required_approvals")
        ),
        "action": row_action(deployment, verdict, overview, user),
    }


def _checks_line(verdict: Mapping[str, Any]) -> str:
    if not verdict.get("checks_required"):
        return NONE
    return f"{verdict.get('checks_passed')} of {verdict.get('checks_required')} checks pass"


def approvals_line(approved_by: list[str], required: int | None) -> str:
    """ "1 of 2: alice": how far four eyes have got, and whose eyes."""
    if not required:
        return NONE
    names = f": {', '.join(approved_by)}" if approved_by else ""
    return f"{len(approved_by)} of {required}{names}"


def row_action(
    deployment: Any, verdict: Mapping[str, Any], overview: Mapping[str, Any], user: Any
) -> dict[str, Any] | None:
    """The verdict's action for this user: roll back (reason pre-filled on the next page),
    approve or promote, or the note that they already approved."""
    if user is None or not user.has_perm(CHANGE_DEPLOYMENT):
        return None

    def url(action: str) -> str:
        return reverse("admin:deployments_deployment_action", args=[deployment.pk, action])

    if verdict.get("tone") == "error":
        return {"label": "Roll back", "url": url("rollback"), "style": "danger"}
    approved_by = list(overview.get("approved_by") or [])
    if user.get_username() in approved_by:
        return {"note": "you approved; another approver completes it"}
    if verdict.get("tone") != "ok":
        return None
    required = int(overview.get("required_approvals") or 1)
    last = len(approved_by) + 1 >= required
    return {
        "label": "Promote" if last else f"Approve ({len(approved_by) + 1} of {required})",
        "url": url("promote"),
        "style": "primary",
    }


def compensation_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """A rolled-back release whose v2 decisions still wait for an operator."""
    deployment = item["deployment"]
    return {
        "url": reverse("admin:deployments_deployment_change", args=[deployment.pk]),
        "ruleset": deployment.ruleset.name,
        "version": deployment.version.version,
        "rolled_back_at": when(deployment.rolled_back_at),
        "flagged": f"{item.get('flagged', 0):,}",
        "processed": f"{item.get('processed', 0):,}",
        "differing": f"{item.get('differing', 0):,}",
    }
