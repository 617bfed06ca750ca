"""The draft page's preflight panel (SPEC 10.2), filled by the app that owns backtests.

``deployments`` cannot import ``monitoring``; the panel's data comes through
``admin_panels.panel("preflight", deployment, user)`` and is None (no panel) when
nobody provides it or the deployment is no longer a draft.
"""

from __future__ import annotations

from typing import Any

from django import template

from deployments import admin_panels

register = template.Library()


@register.inclusion_tag("admin/deployments/deployment/preflight.html", takes_context=True)
def canary_preflight_panel(context: template.Context, deployment: Any) -> dict[str, Any]:
    request = context.get("request")
    panel = admin_panels.panel("preflight", deployment, getattr(request, "user", None))
    return {"panel": panel, "csrf_token": context.get("csrf_token"), "deployment": deployment}
