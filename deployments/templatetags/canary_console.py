"""Template tags of the console's index page: the monitor banner and the running canaries.

An inclusion tag rather than a custom ``AdminSite``: the stock site keeps every
registration, and the index template only asks for what it shows.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from deployments import admin_panels
from deployments.admin.display import duration, status_badge
from deployments.admin.panels import breaker_line, monitor_banner

register = template.Library()


@register.inclusion_tag("admin/deployments/index_block.html", takes_context=True)
def canary_index_block(context: template.Context) -> dict[str, Any]:
    """The monitor's heartbeat and one row per running canary, for whoever may see deployments."""
    request = context.get("request")
    if request is None or not request.user.has_perm("deployments.view_deployment"):
        return {"visible": False}
    rows = []
    for item in admin_panels.panel("running") or []:
        deployment = item["deployment"]
        progress = item.get("progress") or {}
        rows.append(
            {
                "url": reverse("admin:deployments_deployment_change", args=[deployment.pk]),
                "ruleset": deployment.ruleset.name,
                "version": deployment.version.version,
                "baseline": deployment.baseline.version.version if deployment.baseline else "—",
                "status": status_badge(deployment.status),
                "traffic": deployment.traffic_percentage,
                "elapsed": duration(progress.get("elapsed_seconds")),
                "remaining": duration(progress.get("remaining_seconds")),
                "auto_progress": progress.get("auto_progress"),
                "breaker": breaker_line(item.get("breaker")),
            }
        )
    return {
        "visible": True,
        "monitor": monitor_banner(admin_panels.panel("monitor")),
        "canaries": rows,
    }
